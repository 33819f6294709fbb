"""`dvc repro` re-runs exactly what a change touches (tiny net, small demo)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import CLASSES, REPO_PARAMS, set_params

REPO = REPO_PARAMS.parent
pytestmark = pytest.mark.long  # one DVC project, run once, then changed test by test in order


def dvc(project: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A DVC project with this repository's dvc.yaml and code, run once end to end."""
    root = tmp_path_factory.mktemp("dvc-project")
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    params = yaml.safe_load(REPO_PARAMS.read_text())
    params["jobs"] = 1
    params["dataset"].update(name="dvc-test", classes=list(CLASSES))
    params["demo"].update(
        n_trainval=6, n_test=3, classes=list(CLASSES), n_action_trainval=4, n_action_test=2
    )
    params["action"]["scratch"]["max_epochs"] = 2  # what re-runs is checked, not what it learns
    params["tiling"]["patch_size"] = 32
    params["features"].update(nets=["tiny"], device="cpu")
    params["heatmaps"]["images"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    dvc(root, "init", "--no-scm", "-q")
    first = dvc(root, "repro")
    assert {"demo", "sample", "fit-head@tiny", "evaluate@tiny", "heatmaps@tiny"} <= ran(first)
    dense_half = {"dense@tiny-trainval", "fit-windows@tiny", "fit-weak@tiny", "fit-cam@tiny"}
    assert dense_half | {"compare@tiny"} <= ran(first)
    return root


def test_nothing_changed_runs_nothing(project):
    assert ran(dvc(project, "repro")) == set()


def test_changing_k_reruns_only_what_scores_images(project):
    set_params({"scoring.k": 3}, project / "params.yaml")
    assert ran(dvc(project, "repro")) == {"evaluate@tiny", "compare@tiny"}


def test_changing_the_head_reruns_fit_head_and_what_follows(project):
    set_params({"head.lr": 0.02}, project / "params.yaml")
    rerun = {"fit-head@tiny", "evaluate@tiny", "heatmaps@tiny", "compare@tiny"}
    rerun.add("fit-windows@tiny")  # the same layers, trained on windows with the same params
    # the frozen action head trains with the head's schedule, and its maps follow it; the
    # update and scratch variants run the same stage code, so DVC re-runs them too (safe: never
    # stale); not fit-weak, fit-cam: they have their own lr
    actions = {f"fit-action-{v}@tiny" for v in ("frozen", "update", "scratch")}
    assert ran(dvc(project, "repro")) == rerun | actions | {"action-maps@tiny"}


def test_changing_the_shared_schedule_reruns_every_trained_layer(project):
    set_params({"head.patience": 3}, project / "params.yaml")
    assert {"fit-head@tiny", "fit-weak@tiny", "fit-cam@tiny", "compare@tiny"} <= ran(
        dvc(project, "repro")
    )


def test_the_2014_pipeline_alone_never_touches_the_dense_stages(project):
    plan = dvc(project, "repro", "--dry", "evaluate", "heatmaps")  # as docs/benchmarks.md shows it
    assert "evaluate@tiny" in plan and "heatmaps@tiny" in plan and "fit-head@tiny" in plan
    assert not re.search(r"dense@|fit-windows|fit-weak|fit-cam|compare", plan)


def test_metrics_and_plots_are_declared(project):
    metrics = dvc(project, "metrics", "show")
    assert "metrics/dvc-test/tiny/test.json" in metrics and "mAP" in metrics
    assert "pointing" in metrics
    assert "metrics/dvc-test/tiny/compare.json" in metrics and "methods.weak.corloc" in metrics
    chosen = dvc(
        project, "metrics", "show", "metrics/dvc-test/tiny/test.json",
        "metrics/dvc-test/tiny/heatmaps.json",
    )  # fmt: skip
    assert "mAP" in chosen and "corloc" in chosen and "train.json" not in chosen
    dvc(project, "plots", "show", "-o", "plots-html")
    page = (project / "plots-html" / "index.html").read_text()
    assert "plots/dvc-test/tiny/train.json" in page
    assert "plots/dvc-test/tiny/pr/aeroplane.csv" in page
