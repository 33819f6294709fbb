"""`dvc repro` re-runs exactly what a change touches (tiny net, small demo)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import CLASSES, KILLED_AT_THE_THIRD_SHARD, REPO_PARAMS, set_params
from tests.readme_blocks import GIT_ENV, bash_block

REPO = REPO_PARAMS.parent
pytestmark = pytest.mark.long  # one DVC project, run once, then changed test by test in order


def dvc(project: Path, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=env or GIT_ENV,
        capture_output=True, text=True,
    )  # fmt: skip
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
    shutil.copy(REPO / ".gitignore", root)
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    first = dvc(root, "repro")
    assert {"demo", "sample", "fit-head@tiny", "evaluate@tiny", "heatmaps@tiny"} <= ran(first)
    dense_half = {"dense@tiny-trainval", "fit-windows@tiny", "fit-weak@tiny", "fit-cam@tiny"}
    assert dense_half | {"compare@tiny"} <= ran(first)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "the first run")
    return root


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=project, env=GIT_ENV, capture_output=True, text=True, check=True
    ).stdout


def disk_bytes(*roots: Path) -> int:
    """Bytes of the files under `roots`, each inode once (as `du` counts them)."""
    inodes = {
        (info.st_dev, info.st_ino): info.st_size
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
        for info in [path.stat()]
    }
    return sum(inodes.values())


def test_nothing_changed_runs_nothing(project):
    assert ran(dvc(project, "repro")) == set()


def test_dvc_keeps_no_second_copy_of_the_outputs(project):
    outputs = disk_bytes(project / "data", project / "manifests")
    with_cache = disk_bytes(project / "data", project / "manifests", project / ".dvc" / "cache")
    assert with_cache <= 1.1 * outputs


def test_a_fresh_run_of_the_same_code_changes_no_tracked_file_and_no_metric(project, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    assert not (clone / "data").exists()  # outputs and timings are not in git
    dvc(clone, "repro")
    assert git(clone, "status", "--porcelain") == ""
    assert json.loads(dvc(clone, "metrics", "diff", "--json")) == {}
    assert (clone / "timings/dvc-test/tiny/compare.json").is_file()  # the times, out of git


def test_an_experiment_is_quiet_and_switching_back_restores_the_results(project):
    done = dvc(project, "exp", "run", "-S", "scoring.k=3")
    assert ran(done) == {"evaluate@tiny", "compare@tiny", "table"}
    assert not [line for line in done.splitlines() if "WARNING" in line], done
    git(project, "checkout", "--", "params.yaml", "dvc.lock", "metrics", "plots", "tables")
    dvc(project, "checkout")
    # the scores differ from the lock's; outputs equal to it (a picture the k does not change,
    # metrics and tables git restored) are not re-made
    rerun = ran(dvc(project, "repro"))
    assert "evaluate@tiny" in rerun and rerun <= {"evaluate@tiny", "compare@tiny", "table"}
    assert git(project, "status", "--porcelain") == ""


def test_changing_k_reruns_only_what_scores_images(project):
    set_params({"scoring.k": 3}, project / "params.yaml")
    assert ran(dvc(project, "repro")) == {"evaluate@tiny", "compare@tiny", "table"}


def test_changing_the_head_reruns_fit_head_and_what_follows(project):
    set_params({"head.lr": 0.02}, project / "params.yaml")
    rerun = {"fit-head@tiny", "evaluate@tiny", "heatmaps@tiny", "compare@tiny"}
    rerun.add("fit-windows@tiny")  # the same layers, trained on windows with the same params
    # the frozen action head trains with the head's schedule, and its maps follow it; the
    # update and scratch variants run the same stage code, so DVC re-runs them too (safe: never
    # stale); not fit-weak, fit-cam: they have their own lr
    actions = {f"fit-action-{v}@tiny" for v in ("frozen", "update", "scratch")}
    assert ran(dvc(project, "repro")) == rerun | actions | {"action-maps@tiny", "table"}


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


def experiments(project: Path) -> dict[str, dict]:
    """The experiments `dvc exp show` lists, by revision: their params and metrics."""
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    return {
        rev["rev"]: rev["data"]
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for rev in experiment["revs"]
    }


def test_the_documented_sweep_runs_as_written_and_gives_a_row_per_setting(project):
    before = experiments(project)
    sweep = bash_block((REPO / "docs/dvc.md").read_text(), "--queue")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", sweep], cwd=project, env=GIT_ENV,
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WARNING" not in done.stdout + done.stderr
    swept = [e for rev, e in experiments(project).items() if rev not in before]
    k = sorted(e["params"]["params.yaml"]["data"]["scoring"]["k"] for e in swept)
    assert k == [1, 5, 10]
    for experiment in swept:
        compared = experiment["metrics"]["metrics/dvc-test/tiny/compare.json"]["data"]
        assert set(compared["methods"]) == {"patches", "dense", "windows", "weak", "cam"}
    table = re.findall(r"^\|.*\|$", done.stdout, flags=re.M)  # the Markdown of `dvc exp show`
    assert len(table) >= 2 + 3 and "scoring.k" in table[0] and "mAP" in table[0]


def test_a_stage_killed_mid_way_resumes_under_dvc_to_the_outputs_of_a_clean_run(project, tmp_path):
    set_params({"shards.patches_per_shard": 8}, project / "params.yaml")
    (tmp_path / "sitecustomize.py").write_text(KILLED_AT_THE_THIRD_SHARD)
    killed = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "sample"], cwd=project,
        env=dict(GIT_ENV, PYTHONPATH=str(tmp_path)), capture_output=True, text=True,
    )  # fmt: skip
    assert killed.returncode != 0
    patches = project / "data/patches/dvc-test/trainval"
    assert len(list(patches.glob("shard-*.h5"))) == 2  # what the killed run finished
    resumed = dvc(project, "repro", "sample")
    assert "Running stage 'sample'" in resumed and "shards to write" in resumed
    after_resume = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["sample"]
    shutil.rmtree(patches)
    dvc(project, "repro", "sample")
    clean = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["sample"]
    assert after_resume["outs"] == clean["outs"]
