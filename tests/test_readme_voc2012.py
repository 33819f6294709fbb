"""The README's VOC2012 recipe runs verbatim on a read-only devkit of that layout, without then
with its Action subset."""

from __future__ import annotations

import json

import pytest

from pipeline.data.synthetic_devkit import MARKER
from tests.readme_blocks import (
    check_evaluation,
    devkit_and_checkout,
    readme_block,
    run_block,
    writable,
)
from tests.test_demo import tree_digest

NO_ACTION_SUBSET = "no Action subset in this dataset; the action task is skipped"


@pytest.mark.long
def test_the_readme_voc2012_recipe_runs_verbatim_without_then_with_the_action_subset(tmp_path):
    devkits, voc2012, project = devkit_and_checkout(
        tmp_path, "VOC2012", n_trainval=4, n_test=0, n_action=10
    )  # no test split
    before = tree_digest(voc2012)

    # a VOC2012 copy without the Action files: the object task runs alone, the action stages
    # say so; with the subset put back, the same block runs the action task too
    action_set = voc2012 / "ImageSets/Action"
    writable(action_set.parent, True)
    action_set.rename(tmp_path / "Action")
    run_block(readme_block("VOC2012"), devkits, project, expected_warning=NO_ACTION_SUBSET)
    metrics = check_evaluation(project, voc2012, "voc2012", "val", "train")
    assert metrics["method"] == "VOC2012 area"
    for variant in ("frozen", "update", "scratch"):
        path = project / f"metrics/voc2012/effnet-lite0/action-{variant}.json"
        assert json.loads(path.read_text())["action_subset"] is False

    (tmp_path / "Action").rename(action_set)
    writable(action_set.parent, False)
    run_block(readme_block("VOC2012"), devkits, project)
    listed = (voc2012 / "ImageSets/Action/val.txt").read_text().splitlines()
    for variant in ("frozen", "update", "scratch"):
        path = project / f"metrics/voc2012/effnet-lite0/action-{variant}.json"
        action = json.loads(path.read_text())
        assert action["eval_persons"] == len(listed) and len(action["AP"]) == 10

    assert tree_digest(voc2012) == before
    # the demo stage ran too, and wrote its own dataset only
    assert (project / "data/demo/VOCdevkit/VOC2007" / MARKER).is_file()
