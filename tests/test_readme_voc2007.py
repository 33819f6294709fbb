"""The README's VOC2007 recipe runs verbatim on a read-only devkit of that layout."""

from __future__ import annotations

import pytest

from tests.readme_blocks import (
    check_evaluation,
    devkit_and_checkout,
    readme_block,
    run_block,
)
from tests.test_demo import tree_digest


@pytest.mark.long
def test_the_readme_voc2007_recipe_runs_verbatim_on_a_read_only_devkit(tmp_path):
    devkits, voc2007, project = devkit_and_checkout(tmp_path, "VOC2007", n_trainval=4, n_test=1)
    before = tree_digest(voc2007)

    run_block(readme_block("VOC2007"), devkits, project)
    metrics = check_evaluation(project, voc2007, "voc2007", "test", "trainval")
    assert metrics["method"] == "VOC2007 11-point"
    assert tree_digest(voc2007) == before
