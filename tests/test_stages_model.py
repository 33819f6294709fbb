"""fit-head -> evaluate -> heatmaps as a user runs them, on the tiny net's cached features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from pipeline.core.torch_files import sealed
from pipeline.scoring.average_precision import average_precision
from pipeline.scoring.map_pictures import KEY_WIDTH, LEGEND_HEIGHT, PANEL_GAP
from tests.cli import run_cli
from tests.conftest import flip_a_byte_in_the_middle
from tests.devkit import devkit_ap


def read_json(path: str):
    return json.loads(Path(path).read_text())


def test_fit_head_writes_the_head_and_a_per_epoch_log(trained):
    assert Path("data/heads/test-voc/tiny/head.pt").is_file()
    log = read_json("plots/test-voc/tiny/train.json")
    assert [e["epoch"] for e in log] == list(range(1, len(log) + 1))
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"} <= set(log[0])
    summary = read_json("metrics/test-voc/tiny/train.json")
    assert summary["val_loss"] == pytest.approx(min(e["val_loss"] for e in log), abs=1e-6)
    assert summary["examples"] == "patches"
    assert summary["train_examples"] > 0 and summary["val_examples"] > 0


def test_evaluate_writes_ap_pr_curves_scores_and_devkit_results(trained):
    run_cli("evaluate", "--net", "tiny", "--split", "test")
    metrics = read_json("metrics/test-voc/tiny/test.json")
    assert metrics["method"] == "VOC2007 11-point" and metrics["k"] == 5
    classes = ["aeroplane", "bicycle", "bird", "boat"]
    assert list(metrics["ap"]) == classes
    scores = pq.read_table("data/scores/test-voc/tiny/test.parquet").to_pandas()
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
            Path(f"data/results/test-voc/tiny/VOC2007/Main/comp1_cls_test_{name}.txt")
            .read_text()
            .split("\n")
        )
        assert [line.split()[0] for line in lines if line] == scores.image_id.tolist()
        assert (
            Path(f"plots/test-voc/tiny/pr/{name}.csv").read_text().startswith("recall,precision\n")
        )
    defined = [v for v in metrics["ap"].values() if v is not None]
    assert metrics["mAP"] == pytest.approx(np.mean(defined), abs=1e-6)


def assert_files_give_the_reported_ap(params: dict, split: str) -> None:
    root = Path(params["dataset"]["root"])
    metrics = read_json(f"metrics/test-voc/tiny/{split}.json")
    for name, reported in metrics["ap"].items():
        if reported is None:
            continue
        from_files = devkit_ap(
            Path(f"data/results/test-voc/tiny/VOC2007/Main/comp1_cls_{split}_{name}.txt"),
            root / f"ImageSets/Main/{name}_{split}.txt",
            eleven_point=True,
        )
        assert from_files == pytest.approx(reported, abs=1e-9), name


@pytest.mark.parametrize("k", [5, 50])
def test_devkit_result_files_give_the_reported_ap_even_for_tiny_scores(trained, edit_params, k):
    params = edit_params({"scoring.k": k})
    run_cli("evaluate")
    scores = pq.read_table("data/scores/test-voc/tiny/test.parquet").to_pandas()
    if k == 50:  # scores far below what six decimals can tell apart
        assert (scores.drop(columns="image_id").to_numpy() < 1e-6).mean() > 0.5
    assert_files_give_the_reported_ap(params, "test")


def test_evaluating_images_the_head_was_trained_on_is_refused_with_one_line(trained, edit_params):
    # params that name one split twice are refused at load; a head and a split can still meet
    done = run_cli("evaluate", "--split", "trainval", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "split 'trainval' shares 6 images with the training split 'trainval'" in line
    edit_params({"dataset.eval_split": "trainval", "dataset.train_split": "train"})
    for args in (("evaluate",), ("heatmaps",)):
        done = run_cli(*args, check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "split 'trainval' shares 6 images with the training split 'trainval'" in line


def test_changing_k_changes_scores(trained, edit_params):
    run_cli("evaluate")
    k5 = pq.read_table("data/scores/test-voc/tiny/test.parquet").to_pandas()
    edit_params({"scoring.k": 1})
    run_cli("evaluate", "--net", "tiny")
    k1 = pq.read_table("data/scores/test-voc/tiny/test.parquet").to_pandas()
    assert read_json("metrics/test-voc/tiny/test.json")["k"] == 1
    assert (k1.aeroplane >= k5.aeroplane).all() and not np.allclose(k1.aeroplane, k5.aeroplane)


def test_head_of_another_class_list_is_refused_with_one_line(trained, edit_params):
    classes = yaml.safe_load(Path("params.yaml").read_text())["dataset"]["classes"]
    edit_params({"dataset.classes": list(reversed(classes))})
    done = run_cli("evaluate", "--net", "tiny", check=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: data/heads/test-voc/tiny/head.pt: trained for classes")


def test_evaluate_without_a_head_says_which_stage_to_run(cached):
    done = run_cli("evaluate", "--net", "tiny", check=False)
    assert done.returncode == 1
    assert "no trained layers; run `pipeline fit-head --net tiny`" in done.stderr


def test_heatmaps_render_chosen_images_and_report_peaks(trained, edit_params):
    params = edit_params({"heatmaps.images": ["000008"]})
    run_cli("heatmaps", "--net", "tiny")
    assert [p.name for p in Path("data/heatmaps/test-voc/tiny").glob("*.png")] == ["000008.png"]
    picture = Image.open("data/heatmaps/test-voc/tiny/000008.png")
    width = Image.open(Path(params["dataset"]["root"]) / "JPEGImages/000008.jpg").width
    top = params["heatmaps"]["top_classes"]
    assert picture.width == (top + 1) * (width + PANEL_GAP) + KEY_WIDTH  # + the colour bar
    report = read_json("metrics/test-voc/tiny/heatmaps.json")
    assert report["pairs"] > 0 and 0 <= report["pointing"] <= 1 and 0 <= report["corloc"] <= 1


def test_heatmaps_of_any_image_and_a_clear_line_for_an_unreadable_one(trained, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(photo)
    run_cli("heatmaps", "--net", "tiny", "--image", str(photo))
    assert Image.open("data/heatmaps/test-voc/tiny/extra/photo.png").height == 60 + LEGEND_HEIGHT
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:100])
    done = run_cli("heatmaps", "--net", "tiny", "--image", str(broken), check=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "broken.jpg: not a readable image" in line


def test_an_evaluation_image_skipped_by_index_is_ranked_last_and_counted(workdir):
    root = workdir / "VOCdevkit/VOC2007"
    jpeg = root / "JPEGImages/000008.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:1500])
    for stage in ("index", "tile", "sample", "features", "fit-head"):
        run_cli(stage)
    done = run_cli("evaluate")
    assert "1 of 3 images have no score" in done.stderr
    metrics = read_json("metrics/test-voc/tiny/test.json")
    assert (metrics["images"], metrics["unscored"]) == (3, 1)
    scores = pq.read_table("data/scores/test-voc/tiny/test.parquet").to_pandas()
    assert scores.image_id.tolist() == ["000007", "000008", "000009"]
    assert np.isneginf(scores.drop(columns="image_id").iloc[1]).all()
    for name in metrics["ap"]:
        results = Path(f"data/results/test-voc/tiny/VOC2007/Main/comp1_cls_test_{name}.txt")
        assert [line.split()[0] for line in results.read_text().splitlines()] == [
            "000007",
            "000009",
        ]
    # the unscored image holds an object, so its class's AP counts it as a missed positive
    holds = [
        n
        for n in metrics["ap"]
        if "000008  1" in (root / f"ImageSets/Main/{n}_test.txt").read_text()
    ]
    assert holds and all(metrics["ap"][n] < 1 for n in holds)
    assert_files_give_the_reported_ap(yaml.safe_load(Path("params.yaml").read_text()), "test")


def changed_weight(checkpoint: dict) -> dict:
    state = dict(checkpoint["state_dict"])
    first = next(iter(state))
    state[first] = state[first].clone()
    state[first].view(-1)[0] += 0.001  # what four flipped bytes do to a float
    return {**checkpoint, "state_dict": state}


def nan_weights(checkpoint: dict) -> dict:
    state = {k: v.clone().fill_(float("nan")) for k, v in checkpoint["state_dict"].items()}
    return sealed({**checkpoint, "state_dict": state})  # even re-sealed: never used


def missing_key(checkpoint: dict) -> dict:
    state = dict(checkpoint["state_dict"])
    state.pop(next(iter(state)))
    return sealed({**checkpoint, "state_dict": state})


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (changed_weight, "contents do not match the digest recorded when `pipeline fit-head`"),
        (lambda c: {**c, "state_dict": {}}, "contents do not match the digest recorded"),
        (nan_weights, "holds NaN or inf; re-run `pipeline fit-head --net tiny`"),
        (missing_key, "weights do not fit the layers it records (Error(s) in loading"),
    ],
    ids=["changed weight", "empty state dict", "nan weights", "missing key"],
)
def test_a_damaged_head_is_one_line_in_evaluate_and_verify(trained, tamper, needle):
    path = Path("data/heads/test-voc/tiny/head.pt")
    torch.save(tamper(torch.load(path, weights_only=True)), path)
    done = run_cli("evaluate", "--net", "tiny", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: ") and needle in line
    if tamper is not missing_key:  # verify reads the checkpoint, it does not build the layers
        assert f"{path}: " in run_cli("verify", check=False).stderr


def test_four_flipped_bytes_in_a_head_file_are_named(trained):
    path = Path("data/heads/test-voc/tiny/head.pt")
    flip_a_byte_in_the_middle(path)
    done = run_cli("evaluate", "--net", "tiny", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {path}: ")


def test_maps_of_any_image_refuse_a_backbone_of_other_weights_than_the_head_learnt_from(
    trained, edit_params, tmp_path
):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(photo)
    edit_params({"nets.tiny.seed": 1})  # the head learnt from the descriptors of seed 0
    done = run_cli("heatmaps", "--net", "tiny", "--image", str(photo), check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: data/heads/test-voc/tiny/head.pt: trained on tiny descripto")
    assert "re-run `pipeline fit-head --net tiny`" in line
    assert not Path("data/heatmaps/test-voc/tiny/extra/photo.png").exists()
