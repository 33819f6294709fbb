"""fit-head -> evaluate -> heatmaps as a user runs them, on the tiny net's cached features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.metrics import average_precision
from tests.cli import run_cli


def read_json(path: str):
    return json.loads(Path(path).read_text())


@pytest.fixture
def trained(cached):
    run_cli("fit-head")  # every net of features.nets: here `tiny`
    return cached


def test_fit_head_writes_the_head_and_a_per_epoch_log(trained):
    assert Path("data/heads/tiny/head.pt").is_file()
    log = read_json("plots/tiny/train.json")
    assert [e["epoch"] for e in log] == list(range(1, len(log) + 1))
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"} <= set(log[0])
    summary = read_json("metrics/tiny/train.json")
    assert summary["val_loss"] == pytest.approx(min(e["val_loss"] for e in log), abs=1e-6)
    assert summary["train_patches"] > 0 and summary["val_patches"] > 0


def test_evaluate_writes_ap_pr_curves_scores_and_devkit_results(trained):
    run_cli("evaluate", "--net", "tiny", "--split", "test")
    metrics = read_json("metrics/tiny/test.json")
    assert metrics["method"] == "VOC2007 11-point" and metrics["k"] == 5
    classes = ["aeroplane", "bicycle", "bird", "boat"]
    assert list(metrics["ap"]) == classes
    scores = pq.read_table("data/scores/tiny/test.parquet").to_pandas()
    assert scores.image_id.tolist() == ["000007", "000008", "000009"]
    root = Path(yaml.safe_load(Path("params.yaml").read_text())["dataset"]["root"])
    for name in classes:
        truth_file = root / f"ImageSets/Main/{name}_test.txt"
        truth = dict(line.split() for line in truth_file.read_text().splitlines())
        expected = average_precision(
            scores[name].to_numpy(), np.array([int(truth[i]) for i in scores.image_id]), "11-point"
        )
        assert metrics["ap"][name] == (
            None if np.isnan(expected) else pytest.approx(expected, abs=1e-6)
        )
        lines = (
            Path(f"data/results/tiny/VOC2007/Main/comp1_cls_test_{name}.txt")
            .read_text()
            .split("\n")
        )
        assert [line.split()[0] for line in lines if line] == scores.image_id.tolist()
        assert Path(f"plots/tiny/pr/{name}.csv").read_text().startswith("recall,precision\n")
    defined = [v for v in metrics["ap"].values() if v is not None]
    assert metrics["mAP"] == pytest.approx(np.mean(defined), abs=1e-6)


def test_changing_k_changes_scores(trained):
    run_cli("evaluate")
    k5 = pq.read_table("data/scores/tiny/test.parquet").to_pandas()
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scoring"]["k"] = 1
    Path("params.yaml").write_text(yaml.safe_dump(params))
    run_cli("evaluate", "--net", "tiny")
    k1 = pq.read_table("data/scores/tiny/test.parquet").to_pandas()
    assert read_json("metrics/tiny/test.json")["k"] == 1
    assert (k1.aeroplane >= k5.aeroplane).all() and not np.allclose(k1.aeroplane, k5.aeroplane)


def test_head_of_another_class_list_is_refused_with_one_line(trained):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["dataset"]["classes"] = list(reversed(params["dataset"]["classes"]))
    Path("params.yaml").write_text(yaml.safe_dump(params))
    done = run_cli("evaluate", "--net", "tiny", check=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: data/heads/tiny/head.pt: head was trained for classes")


def test_evaluate_without_a_head_says_which_stage_to_run(cached):
    done = run_cli("evaluate", "--net", "tiny", check=False)
    assert done.returncode == 1
    assert "no trained head; run `pipeline fit-head --net tiny`" in done.stderr


def test_heatmaps_render_chosen_images_and_report_peaks(trained):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["heatmaps"]["images"] = ["000008"]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    run_cli("heatmaps", "--net", "tiny")
    assert [p.name for p in Path("data/heatmaps/tiny").glob("*.png")] == ["000008.png"]
    picture = Image.open("data/heatmaps/tiny/000008.png")
    width = Image.open(Path(params["dataset"]["root"]) / "JPEGImages/000008.jpg").width
    top = params["heatmaps"]["top_classes"]
    assert picture.width == (top + 1) * width + top * 6
    report = read_json("metrics/tiny/heatmaps.json")
    assert report["pairs"] > 0 and 0 <= report["peak_in_box"] <= 1


def test_heatmaps_of_any_image_and_a_clear_line_for_an_unreadable_one(trained, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(photo)
    run_cli("heatmaps", "--net", "tiny", "--image", str(photo))
    assert Image.open("data/heatmaps/tiny/extra/photo.png").height == 60
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:100])
    done = run_cli("heatmaps", "--net", "tiny", "--image", str(broken), check=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "broken.jpg: not a readable image" in line
