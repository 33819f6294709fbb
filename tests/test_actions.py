"""The action task: reading ImageSets/Action, mirror-padded person patches, the three variants
and what never reaches a training batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.cutting import RESAMPLE, cut_mirrored
from pipeline.features.below_fc6 import split_below_fc6
from pipeline.features.nets.backbone import Backbone
from pipeline.features.nets.registry import build_backbone, build_untrained
from pipeline.features.trunks import WindowAverage, WindowedTrunk
from tests.cli import run_cli
from tests.conftest import (
    ACTIONS,
    action_params,
    flip_a_byte_in_the_middle,
    net_options,
    private_copy,
    set_params,
)


def test_a_person_at_an_image_corner_is_cut_from_the_mirrored_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    # a square of side 24 whose corner lies 10 px left of and 6 px above the image
    patch = cut_mirrored(image, np.array([[-10.0, -6.0, 24.0]]), 16)[0]
    by_hand = np.pad(image, ((6, 0), (10, 0), (0, 0)), mode="symmetric")[:24, :24]
    expected = np.asarray(Image.fromarray(by_hand).resize((16, 16), RESAMPLE))
    assert np.array_equal(patch, expected)
    # mirroring repeats the edge pixel: the pixel just outside the corner is the corner itself
    assert np.array_equal(by_hand[5, 9], image[0, 0])


def test_a_square_larger_than_the_image_folds_back_periodically():
    image = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    patch = cut_mirrored(image, np.array([[-5.0, -5.0, 13.0]]), 13)[0]
    by_hand = np.pad(image, ((5, 4), (5, 5), (0, 0)), mode="symmetric")[:13, :13]
    assert np.array_equal(patch, by_hand)


@pytest.fixture
def action_project(tmp_path, action_root, monkeypatch) -> Path:
    """A project directory (cwd) with its own copy of the action devkit."""
    root = tmp_path / "VOCdevkit" / "VOC2007"
    shutil.copytree(action_root, root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(action_params(root)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def described_persons(described_template, tmp_path, monkeypatch) -> Path:
    """A private copy of `described_template`, as the current directory."""
    return private_copy(described_template, tmp_path / "project", monkeypatch)


def first_person_xml(root: Path) -> Path:
    image_id = (root / "ImageSets/Action/trainval.txt").read_text().split()[0]
    return root / "Annotations" / f"{image_id}.xml"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            ("<jumping>0</jumping>", "<jumping>yes</jumping>"),
            "malformed <actions>: <jumping> is 'yes'",
        ),
        (("<jumping>0</jumping>", "<dancing>0</dancing>"), "unknown action <dancing>"),
        (("<phoning>", "<phoning_>"), "unknown action <phoning_>"),
    ],
)
def test_a_bad_actions_block_is_one_line_naming_the_file_and_the_image_is_skipped(
    action_project, change, needle
):
    root = action_project / "VOCdevkit/VOC2007"
    xml = first_person_xml(root)
    text = xml.read_text()
    old, new = change
    if old not in text:  # the first person does the action: break its other flag
        old, new = old.replace(">0<", ">1<"), new.replace(">0<", ">1<")
    xml.write_text(
        text.replace(old, new, 1).replace(old.replace("<", "</", 1), new.replace("<", "</", 1), 1)
    )
    done = run_cli("action-samples", "--split", "trainval", check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(Path("manifests/test-voc/action/trainval/problems.json").read_text())
    (problem,) = report["problems"]
    assert report["skipped"] == 1 and str(xml) in problem and needle in problem
    persons = pq.read_table("manifests/test-voc/action/trainval/persons.parquet")
    assert xml.stem not in persons["image_id"].to_pylist() and persons.num_rows > 0
    strict = run_cli("action-samples", "--split", "trainval", "--strict", check=False)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert needle in strict.stderr.strip().splitlines()[-1]


def test_several_action_persons_never_reach_a_batch_and_are_scored(described_persons, monkeypatch):
    persons = pq.read_table("manifests/test-voc/action/trainval/persons.parquet").to_pandas()
    several = persons[persons.actions.map(len) > 1]
    assert len(several) > 0, "the demo draws some persons doing two actions"

    import pipeline.action.models as action_models
    import stages.fit_action_frozen as fit_action
    from pipeline.core.params import load_params

    seen = {}
    real_train = action_models.train_head

    def spy(module, train, val, *args, **kwargs):
        seen["labels"] = torch.cat([train[1], val[1]])
        seen["rows"] = len(train[0]) + len(val[0])
        return real_train(module, train, val, *args, **kwargs)

    monkeypatch.setattr(action_models, "train_head", spy)
    fit_action.run(load_params(Path("params.yaml")), "tiny", device="cpu")
    assert seen["rows"] == len(persons) - len(several)
    assert (seen["labels"] >= 0).all()
    metrics = json.loads(Path("metrics/test-voc/tiny/action-frozen.json").read_text())
    evaluated = pq.read_table("manifests/test-voc/action/test/persons.parquet")
    assert metrics["eval_persons"] == evaluated.num_rows
    assert metrics["excluded_persons"] == len(several)
    results = Path("data/action-results/test-voc/tiny/frozen/VOC2007/Action")
    lines = (results / "comp9_action_test_jumping.txt").read_text().splitlines()
    assert len(lines) == evaluated.num_rows  # persons with two actions are scored too


def test_the_three_variants_train_verify_checks_them_and_a_net_without_fc6_says_so(
    described_persons,
):
    for variant in ("frozen", "update", "scratch"):
        run_cli("fit-action", "--net", "tiny", "--variant", variant)
        metrics = json.loads(Path(f"metrics/test-voc/tiny/action-{variant}.json").read_text())
        assert 0 <= metrics["mAP"] <= 1 and set(metrics["AP"]) == set(ACTIONS)
    run_cli("action-maps", "--net", "tiny")
    assert len(list(Path("data/action-maps/test-voc/tiny").glob("*.png"))) == 2
    without = Backbone(
        "torchvision:resnet18:flatten",
        WindowedTrunk(torch.nn.Conv2d(3, 8, 3), WindowAverage()),
        8,
        "flatten",
        (0.5,) * 3,
        (0.5,) * 3,
        "random",
        "0" * 64,
    )
    with pytest.raises(PipelineError, match="torchvision:resnet18:flatten: no FC6 to re-train"):
        split_below_fc6(without)

    clean = run_cli("verify", check=False).stderr
    problems = [line for line in clean.splitlines() if " WARNING " in line]
    assert problems and not [p for p in problems if "action" in p]  # only the object task's
    shard = next(Path("data/action-patches/test-voc/test").glob("*.h5"))
    flip_a_byte_in_the_middle(shard)
    Path("data/heads/test-voc/tiny/action-update.pt").unlink()
    damaged = run_cli("verify", check=False).stderr
    assert (
        f"{shard}: bytes do not match the SHA-256 in index.parquet (damaged or partly copied); "
        "re-run `pipeline action-samples`, which rewrites it" in damaged
    )
    assert "run `pipeline fit-action --variant update --net tiny`" in damaged
    # a resumed run reads only the person shards of the descriptors it computes: drop those
    # made from the damaged shard, and it is named before it is read
    for cache in ("action-features", "action-below-fc6"):
        Path(f"data/{cache}/test-voc/tiny/test/{shard.name}").unlink()
    done = run_cli("action-features", "--net", "tiny", "--split", "test", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {shard}: bytes do not match")
    # a damaged descriptor shard names the stage that rewrites it: action-features
    described = next(Path("data/action-features/test-voc/tiny/trainval").glob("*.h5"))
    flip_a_byte_in_the_middle(described)
    done = run_cli("fit-action", "--net", "tiny", "--variant", "frozen", check=False)
    assert done.returncode == 1
    assert "re-run `pipeline action-features`, which rewrites it" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize("net", ["tiny", "effnet-lite0"])
def test_the_layers_above_the_cache_rebuild_the_descriptor_and_only_fc6_trains(net):
    backbone = build_backbone(net, net_options(net))
    below = split_below_fc6(backbone)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole, rebuilt = backbone.module(pixels), below.upper.eval()(below.lower(pixels))
    torch.testing.assert_close(rebuilt, whole, atol=1e-4, rtol=1e-4)
    trained = [name for name, p in below.upper.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith(("layers.0.", "conv_head.")) for n in trained)


def test_no_pretrain_is_the_same_architecture_with_other_random_weights():
    pretrained = build_backbone("effnet-lite0").module.state_dict()
    untrained, mean, std = build_untrained("effnet-lite0", {}, seed=0)
    state = untrained.state_dict()
    assert state.keys() == pretrained.keys() and mean == (0.5, 0.5, 0.5)
    assert not torch.equal(
        state["trunk.model.conv_stem.weight"], pretrained["trunk.model.conv_stem.weight"]
    )
    assert all(p.requires_grad for p in untrained.parameters())


def test_a_dataset_without_an_action_subset_skips_the_task_in_one_line_and_then_runs_it(
    action_project,
):
    # most VOC-format datasets have no ImageSets/Action: every action stage exits 0 and says
    # so, writing the reason where its output would be; adding the subset runs the task
    subset = Path("VOCdevkit/VOC2007/ImageSets/Action")
    aside = subset.rename("Action-aside")
    reason = f"{subset.resolve()}: no Action subset in this dataset; the action task is skipped"
    for split in ("trainval", "test"):
        done = run_cli("action-samples", "--split", split)
        assert reason in done.stderr and "Traceback" not in done.stderr
        assert pq.read_table(f"manifests/test-voc/action/{split}/persons.parquet").num_rows == 0
        assert not Path(f"data/action-patches/test-voc/{split}/index.parquet").exists()
        run_cli("action-features", "--net", "tiny", "--split", split)
    for variant in ("frozen", "update", "scratch"):
        done = run_cli("fit-action", "--net", "tiny", "--variant", variant)
        assert reason in done.stderr
        metrics = json.loads(Path(f"metrics/test-voc/tiny/action-{variant}.json").read_text())
        assert metrics == {"action_subset": False, "reason": reason, "mAP": None, "eval_persons": 0}
        results = Path(f"data/action-results/test-voc/tiny/{variant}")
        assert [p.name for p in results.rglob("*.txt")] == ["no-action-subset.txt"]
    run_cli("action-maps", "--net", "tiny")
    # the reason, not an empty directory (which DVC warns about when it saves the output)
    maps = Path("data/action-maps/test-voc/tiny")
    assert [p.name for p in maps.iterdir()] == ["no-action-subset.txt"]
    assert (maps / "no-action-subset.txt").read_text() == reason + "\n"
    assert "action" not in run_cli("verify", check=False).stderr

    aside.rename(subset)
    for split in ("trainval", "test"):
        run_cli("action-samples", "--split", split)
        run_cli("action-features", "--net", "tiny", "--split", split)
    run_cli("fit-action", "--net", "tiny", "--variant", "frozen")
    metrics = json.loads(Path("metrics/test-voc/tiny/action-frozen.json").read_text())
    assert metrics["eval_persons"] > 0 and 0 <= metrics["mAP"] <= 1
    remaining = sorted(str(p.parent) for p in Path("data").rglob("no-action-subset.txt"))
    assert remaining == [
        "data/action-maps/test-voc/tiny",  # until action-maps runs again
        *(f"data/action-results/test-voc/tiny/{v}" for v in ("scratch", "update")),
    ]
    run_cli("action-maps", "--net", "tiny")
    assert sorted(p.suffix for p in maps.iterdir()) == [".png", ".png"]


def test_an_action_list_line_with_a_non_ascii_digit_is_one_line_naming_it(action_project):
    listed = Path("VOCdevkit/VOC2007/ImageSets/Action/trainval.txt")
    image_id = listed.read_text().split()[0]
    listed.write_text(listed.read_text() + f"{image_id} ²\n")  # str.isdigit() says yes
    done = run_cli("action-samples", "--split", "trainval", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    number = len(listed.read_text().splitlines())
    line = f"error: {listed.resolve()}:{number}: expected '<image_id> <person index>', got"
    assert done.stderr.strip().splitlines()[-1].startswith(line)


def test_a_repeated_action_list_line_is_said_once_and_the_person_taken_once(action_project):
    listed = Path("VOCdevkit/VOC2007/ImageSets/Action/trainval.txt")
    first = listed.read_text().splitlines()[0]
    listed.write_text(listed.read_text() + f"{first}\n{first}\n")
    done = run_cli("action-samples", "--split", "trainval")
    assert "2 repeated lines" in done.stderr and "each person is taken once" in done.stderr
    persons = pq.read_table("manifests/test-voc/action/trainval/persons.parquet").to_pandas()
    assert not persons.duplicated(["image_id", "person"]).any()


def test_action_maps_refuse_another_backbone_and_verify_a_variant_of_another_name(
    described_persons,
):
    run_cli("fit-action", "--net", "tiny", "--variant", "frozen")
    heads = Path("data/heads/test-voc/tiny")
    set_params({"nets.tiny.seed": 1})  # the frozen layers learnt from descriptors of seed 0
    done = run_cli("action-maps", "--net", "tiny", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {heads}/action-frozen.pt: trained on tiny descriptors of w")
    assert "re-run `pipeline fit-action --variant frozen --net tiny`" in line
    shutil.copy(heads / "action-frozen.pt", heads / "action-update.pt")
    named = f"{heads}/action-update.pt: holds the trained layers of action-frozen.pt"
    assert named in run_cli("verify", check=False).stderr
