"""The one contract of every kind of trained layers (the patch head, windows, weak, CAM and the
three action variants): one sealed checkpoint read back equal, refused in one line naming the
file and the command that rewrites it when damaged, truncated or of another kind, and one
schema of training metrics. The dense window rule is sealed the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout
from pipeline.core.torch_files import sealed
from pipeline.features.cache_identity import descriptor_origin
from pipeline.trained.trained_layers import KINDS, METHODS, load_layers, read_trained, writer_of
from tests.cli import run_cli
from tests.conftest import ACTIONS, CLASSES, flip_a_byte_in_the_middle

LAYOUT = Layout("test-voc")
TRAINING_KEYS = {
    "epochs", "best_epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
    "examples", "train_examples", "val_examples",
}  # fmt: skip


def test_every_kind_is_covered_and_named_as_its_file():
    assert set(KINDS) == {*METHODS, "action-frozen", "action-update", "action-scratch"}
    for kind in KINDS:
        assert LAYOUT.head("tiny", kind).stem == kind


@pytest.fixture(scope="module")
def projects(layers_template: Path, action_layers_template: Path) -> dict[str, Path]:
    """The read-only project that holds each kind, trained by its own stage on the tiny net."""
    return {kind: layers_template if kind in METHODS else action_layers_template for kind in KINDS}


@pytest.fixture(params=sorted(KINDS))
def kind(request) -> str:
    return request.param


def copied(projects: dict[str, Path], kind: str, directory: Path, name: str | None = None) -> Path:
    """A copy of the checkpoint of `kind` in `directory`, under the file name of `name`."""
    target = directory / f"{name or kind}.pt"
    shutil.copy(projects[kind] / LAYOUT.head("tiny", kind), target)
    return target


def refusal(path: Path) -> str:
    with pytest.raises(PipelineError) as refused:
        read_trained(path, "tiny")
    return str(refused.value)


def test_a_checkpoint_is_read_back_equal_to_what_its_stage_trained(projects, kind, tmp_path):
    path = copied(projects, kind, tmp_path)
    record = read_trained(path, "tiny")
    raw = torch.load(path, weights_only=True)
    assert record["state_dict"].keys() == raw["state_dict"].keys() and record["state_dict"]
    assert all(torch.equal(record["state_dict"][k], v) for k, v in raw["state_dict"].items())
    classes = list(CLASSES) if kind in METHODS else ACTIONS
    assert record["net"] == "tiny" and record["classes"] == classes
    assert record["train_split"] == "trainval" and record["train_images"]
    # what it learnt from is recorded: the backbone's weights and arithmetic, except for
    # pixels from scratch
    assert (record["weights_digest"] is None) == (kind == "action-scratch")
    assert (record["arithmetic"] is None) == (kind == "action-scratch")
    if kind != "action-scratch":
        assert record["arithmetic"].startswith(("openvino ", "torch "))
    if kind in (*METHODS, "action-frozen"):  # adaptation layers, rebuilt from their shape
        origin = descriptor_origin(record)
        layers = load_layers(record, net="tiny", classes=classes, source=path, origin=origin)
        assert all(torch.equal(layers.state_dict()[k], v) for k, v in raw["state_dict"].items())


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "changed weight"])
def test_a_damaged_checkpoint_is_one_line_naming_the_command_that_rewrites_it(
    projects, kind, tmp_path, damage
):
    path = copied(projects, kind, tmp_path)
    if damage == "flipped byte":
        flip_a_byte_in_the_middle(path)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        record = torch.load(path, weights_only=True)
        first = next(iter(record["state_dict"].values()))
        first.view(-1)[0] *= 2  # one exponent bit
        torch.save(record, path)
    line = refusal(path)
    assert "\n" not in line and line.startswith(f"{path}: ")
    assert line.endswith(f"re-run `pipeline {writer_of(kind)} --net tiny`")
    if damage == "truncated":
        assert "not a readable checkpoint of trained layers" in line
    if damage == "changed weight":
        assert f"digest recorded when `pipeline {writer_of(kind)}` wrote it" in line


def test_a_checkpoint_of_another_kind_in_its_place_is_refused(projects, kind, tmp_path):
    other = "windows" if kind == "head" else "head"
    path = copied(projects, kind, tmp_path, name=other)
    line = refusal(path)
    assert line.startswith(f"{path}: holds the trained layers of {kind}.pt, not of {other}.pt")
    assert line.endswith(f"re-run `pipeline {writer_of(other)} --net tiny`")


def test_a_checkpoint_that_records_every_fact_but_its_kind_is_refused_as_of_an_earlier_version(
    projects, kind, tmp_path
):
    # the patch heads of earlier versions recorded no kind; sealed anew, such a file is intact
    path = copied(projects, kind, tmp_path)
    record = torch.load(path, weights_only=True)
    del record["kind"]
    torch.save(sealed({k: v for k, v in record.items() if k != "digest"}), path)
    line = refusal(path)
    assert line == (
        f"{path}: written by an earlier version of voc-transfer (it records no kind of trained "
        f"layers); re-run `pipeline {writer_of(kind)} --net tiny`"
    )


def test_every_kind_writes_the_same_training_metrics_and_its_per_epoch_log(projects, kind):
    project = projects[kind]
    summary = json.loads((project / LAYOUT.training_metrics("tiny", kind)).read_text())
    log = json.loads((project / LAYOUT.training_plot("tiny", kind)).read_text())
    timing = json.loads((project / LAYOUT.training_timing("tiny", kind)).read_text())
    assert set(summary) >= TRAINING_KEYS and not any("seconds" in key for key in summary)
    # the projection to VOC size (benchmarks/projection.py) scales the epochs' part alone
    assert 0 < timing["epoch_seconds"] <= timing["train_seconds"]
    assert summary["epochs"] == len(log) and summary["train_examples"] > 0
    assert summary["examples"] == KINDS[kind].examples
    best = min(log, key=lambda e: e["val_loss"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)


def test_a_changed_window_rule_is_refused_by_its_readers_and_verify(all_layers, edit_params):
    rule = Path("data/dense/test-voc/tiny/test.rule.pt")
    state = torch.load(rule, weights_only=True)
    weight = state["rule"]["layers"][0][0]
    weight.view(-1)[0] *= 2  # one flipped exponent bit: every dense score would change
    torch.save(state, rule)
    named = f"{rule}: contents do not match the digest recorded when `pipeline dense` wrote it"
    edit_params({"scoring.cache": "dense"})
    for stage in ("evaluate", "heatmaps", "compare"):
        done = run_cli(stage, "--net", "tiny", check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, stage
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {named}"), stage
        assert line.endswith("re-run `pipeline dense --net tiny`"), stage
    assert named in run_cli("verify", check=False).stderr
