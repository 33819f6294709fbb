"""dense -> fit-weak / fit-cam -> compare, and evaluate / heatmaps in dense mode, as a user runs
them on the tiny net."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.core.shards import read_shard_index
from pipeline.features.dense_cache import DenseImageReader, open_dense_cache
from pipeline.scoring.methods import METHODS as METHOD_NAMES
from pipeline.trained.trained_layers import writer_of
from pipeline.trained.weak import StoredWindows, WindowDescriptors, training_windows
from tests.cli import run_cli

METHODS = ("patches", "dense", "windows", "weak", "cam")


def read_json(path: str):
    return json.loads(Path(path).read_text())


def test_dense_caches_every_scale_of_every_image_and_records_its_time(dense_cached):
    shards = read_shard_index(Path("data/dense/test-voc/tiny/test"))
    assert len(shards) == 3  # features.images_per_shard = 1
    timing = read_json("timings/test-voc/tiny/dense-test.json")
    assert timing["images"] == 3 and timing["seconds_per_image"] > 0
    again = run_cli("dense", "--net", "tiny", "--split", "test")
    assert "0 of 3 shards to write" in again.stderr
    assert read_json("timings/test-voc/tiny/dense-test.json") == timing


def test_evaluate_and_heatmaps_in_dense_mode(all_layers, edit_params):
    run_cli("evaluate", "--net", "tiny")
    patches = read_json("metrics/test-voc/tiny/test.json")
    edit_params({"scoring.cache": "dense"})
    run_cli("evaluate", "--net", "tiny")
    dense = read_json("metrics/test-voc/tiny/test.json")
    assert (patches["cache"], dense["cache"]) == ("features", "dense")
    assert dense["windows"] > 0 and "patches" not in dense
    scores = pq.read_table("data/scores/test-voc/tiny/test.parquet").to_pandas()
    assert np.isfinite(scores.drop(columns="image_id").to_numpy()).all()
    edit_params({"scoring.pool": "max"})
    run_cli("evaluate", "--net", "tiny")
    highest = pq.read_table("data/scores/test-voc/tiny/test.parquet").to_pandas()
    assert (highest.drop(columns="image_id").to_numpy() <= 1).all()
    run_cli("heatmaps", "--net", "tiny")
    assert read_json("metrics/test-voc/tiny/heatmaps.json")["cache"] == "dense"
    assert len(list(Path("data/heatmaps/test-voc/tiny").glob("*.png"))) == 3


def test_compare_reports_every_method_and_draws_them_side_by_side(all_layers):
    run_cli("compare", "--net", "tiny")  # after fit-head, fit-windows, fit-weak and fit-cam
    report = read_json("metrics/test-voc/tiny/compare.json")
    times = read_json("timings/test-voc/tiny/compare.json")
    assert set(report["methods"]) == set(times["methods"]) == set(METHODS)
    assert report["images"] == 3
    for method in METHODS:
        row, cost = report["methods"][method], times["methods"][method]
        assert 0 <= row["mAP"] <= 1 and not any("seconds" in key for key in row)
        assert cost["train_seconds"] > 0
        assert cost["test_seconds_per_image"] >= cost["test_backbone_seconds_per_image"] > 0
    # tiny's descriptor is FC on a pooled grid, not an average of its maps: no CAM
    assert report["methods"]["cam"]["pointing"] is None
    assert 0 <= report["methods"]["weak"]["corloc"] <= 1
    pictures = sorted(Path("data/compare/test-voc/tiny").glob("*.png"))
    assert [p.stem for p in pictures] == ["000007", "000008", "000009"]

    run_cli("table")
    with open("tables/test-voc/classification.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [row["method"] for row in rows] == list(METHOD_NAMES.values())  # in their order
    for row, method in zip(rows, METHOD_NAMES, strict=True):
        result = report["methods"][method]
        assert row["net"] == "tiny"
        for name, ap in result["ap"].items():  # the metrics' values, as they hold them
            assert row[name] == ("" if ap is None else str(ap)), (method, name)
        assert float(row["mAP"]) == result["mAP"]
    markdown = Path("tables/test-voc/classification.md").read_text()
    assert f"{100 * report['methods']['patches']['mAP']:.1f}" in markdown


def window_head() -> tuple[dict, dict]:
    checkpoint = torch.load("data/heads/test-voc/tiny/windows.pt", weights_only=True)
    return checkpoint, read_json("metrics/test-voc/tiny/train-windows.json")


def test_fit_windows_learns_the_sampled_patches_from_the_dense_maps_alone(all_layers, edit_params):
    checkpoint, summary = window_head()  # as `pipeline fit-windows --net tiny` wrote it
    assert checkpoint["kind"] == "windows" and checkpoint["train_split"] == "trainval"
    # four windows per row of the patch shards: the same sampled patches, labels, background
    sampled = sum(s.rows for s in read_shard_index(Path("data/patches/test-voc/trainval")))
    assert summary["examples"] == "windows"
    assert summary["train_examples"] + summary["val_examples"] == 4 * sampled
    # no patch pixel and no patch descriptor is read: without them, the same layers
    shutil.rmtree("data/patches")
    shutil.rmtree("data/features/test-voc/tiny/trainval")
    run_cli("fit-windows", "--net", "tiny")
    again, summary_again = window_head()
    assert summary_again == summary
    assert checkpoint["state_dict"].keys() == again["state_dict"].keys()
    assert all(torch.equal(v, again["state_dict"][k]) for k, v in checkpoint["state_dict"].items())
    # dense scoring with the layers scoring.head names
    edit_params({"scoring.cache": "dense"})
    Path("data/heads/test-voc/tiny/head.pt").unlink()  # fit-head never ran
    refused = run_cli("evaluate", "--net", "tiny", check=False)
    assert "no trained layers; run `pipeline fit-head --net tiny`" in refused.stderr
    edit_params({"scoring.head": "windows"})
    run_cli("evaluate", "--net", "tiny")
    metrics = read_json("metrics/test-voc/tiny/test.json")
    assert metrics["cache"] == "dense" and 0 <= metrics["mAP"] <= 1
    run_cli("heatmaps", "--net", "tiny")
    assert len(list(Path("data/heatmaps/test-voc/tiny").glob("*.png"))) == 3


def test_fit_windows_of_a_net_without_dense_mode_says_so_in_one_line(cached):
    done = run_cli("fit-windows", "--net", "torchvision:vgg11", check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: torchvision:vgg11: no dense mode (dense mode takes")
    assert "Traceback" not in done.stderr


BOX = re.compile(r"<bndbox>.*?</bndbox>", re.S)


def random_box(rng: np.random.Generator, width: int, height: int) -> str:
    """A VOC ``<bndbox>`` of at least one pixel inside a `width` x `height` image."""
    x0, y0 = rng.integers(1, width), rng.integers(1, height)
    x1, y1 = rng.integers(x0 + 1, width + 1), rng.integers(y0 + 1, height + 1)
    return f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"


def randomise_boxes(root: Path, seed: int) -> None:
    """Replace every box of the devkit's annotations by a random box inside its image."""
    rng = np.random.default_rng(seed)
    for path in sorted((root / "Annotations").glob("*.xml")):
        text = path.read_text()
        width = int(re.search(r"<width>(\d+)</width>", text)[1])
        height = int(re.search(r"<height>(\d+)</height>", text)[1])
        path.write_text(BOX.sub(lambda _: random_box(rng, width, height), text))  # noqa: B023


def trained_layers() -> dict[str, dict[str, torch.Tensor]]:
    return {
        m: torch.load(f"data/heads/test-voc/tiny/{m}.pt", weights_only=True)["state_dict"]
        for m in ("weak", "cam")
    }


def test_weak_and_cam_training_never_read_a_box(all_layers, demo_root, edit_params):
    before = trained_layers()  # as fit-weak and fit-cam wrote them, boxes indexed
    objects = pq.read_table("manifests/test-voc/trainval/objects.parquet").to_pandas()
    root = all_layers / "VOCdevkit" / "VOC2007"  # the project's own copy of the same images
    shutil.copytree(demo_root, root)
    edit_params({"dataset.root": str(root)})
    randomise_boxes(root, seed=0)
    run_cli("index", "--split", "trainval", "--strict")
    moved = pq.read_table("manifests/test-voc/trainval/objects.parquet").to_pandas()
    assert (moved[["class", "difficult"]] == objects[["class", "difficult"]]).all().all()
    assert not np.allclose(moved[["x0", "y0", "x1", "y1"]], objects[["x0", "y0", "x1", "y1"]])
    run_cli("fit-weak")
    run_cli("fit-cam")
    after = trained_layers()
    for method, state in before.items():
        assert state.keys() == after[method].keys()
        assert all(torch.equal(state[k], after[method][k]) for k in state), method


def last_error_line(done) -> str:
    """The one line a refused command ends with (exit status 1, no traceback)."""
    assert done.returncode == 1 and "Traceback" not in done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("copied", "over", "stage"),
    [("windows", "head", "evaluate"), ("cam", "weak", "compare"), ("weak", "head", "heatmaps")],
)
def test_trained_layers_of_another_method_are_refused_by_their_readers_and_verify(
    all_layers, copied, over, stage
):
    heads = Path("data/heads/test-voc/tiny")
    shutil.copy(heads / f"{copied}.pt", heads / f"{over}.pt")
    named = f"{heads / over}.pt: holds the trained layers of {copied}.pt, not of {over}.pt"
    line = last_error_line(run_cli(stage, "--net", "tiny", check=False))
    assert line.startswith(f"error: {named}")
    assert line.endswith(f"re-run `pipeline {writer_of(over)} --net tiny`")
    assert named in run_cli("verify", check=False).stderr


def test_dense_heat_maps_use_the_window_rule_stored_with_the_maps(all_layers, edit_params):
    edit_params({"scoring.cache": "dense"})
    rule = Path("data/dense/test-voc/tiny/test.rule.pt")
    rule.write_bytes(rule.read_bytes()[:64])  # a torn rule is refused, not rebuilt from the net
    line = last_error_line(run_cli("heatmaps", "--net", "tiny", check=False))
    assert line.startswith(f"error: {rule}: not a readable window rule")


def test_fit_weak_computes_the_windows_once_and_reads_back_the_same_values(dense_cached, tmp_path):
    # fit-weak stores the windows' descriptors once in a temporary file instead of computing
    # them again every epoch (the tiny net's run a fully connected layer, as AlexNet's FC6 and
    # FC7); it trains on the very values it would have computed, and nothing is left behind
    dense = Path("data/dense/test-voc/tiny")
    cache = open_dense_cache(dense / "trainval", dense / "trainval.rule.pt", "tiny")
    windows = WindowDescriptors(DenseImageReader(cache.shards), cache.rule, torch.device("cpu"))
    scratch = tmp_path / "scratch"
    with training_windows(windows, scratch, Path("data/dense")) as stored:
        assert isinstance(stored, StoredWindows) and len(stored) == len(windows)
        for index in range(len(windows)):
            again = windows[index]
            assert stored[index].dtype == torch.float16 and torch.equal(stored[index], again)
    assert list(scratch.iterdir()) == []
