"""The data half as a user runs it: index -> tile -> sample on the demo dataset."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from distributed import Client, LocalCluster, WorkerPlugin

from pipeline.core.hashing import file_sha256
from pipeline.core.params import load_params
from pipeline.core.shards import read_shard_index
from pipeline.data.cutting import cut_patches
from pipeline.data.images import load_rgb
from pipeline.data.patch_codecs import read_pixels
from pipeline.data.tiling import patch_grid
from tests.cli import run_cli
from tests.conftest import as_stored, demo_params, shard_rows

MANIFESTS = Path("manifests/test-voc")


def run_data_half(split: str = "trainval", *extra: str) -> None:
    run_cli("index", "--split", split, *extra)
    run_cli("tile", "--split", split)
    if split == "trainval":
        run_cli("sample", "--split", split, *extra)


def test_index_tile_sample_produce_joined_manifests_and_shards(workdir):
    run_data_half()
    images = pq.read_table(MANIFESTS / "trainval/images.parquet").to_pandas()
    objects = pq.read_table(MANIFESTS / "trainval/objects.parquet").to_pandas()
    patches = pq.read_table(MANIFESTS / "trainval/patches.parquet").to_pandas()
    assert images.image_id.tolist() == [f"{i:06d}" for i in range(1, 7)]
    assert (images.split == "trainval").all() and images.path.str.startswith("JPEGImages/").all()
    assert set(objects.label) <= {1, 2, 3, 4} and (objects.x1 > objects.x0).all()
    tiling = load_params(Path("params.yaml")).tiling
    for row in images.itertuples():
        mine = patches[patches.image_id == row.image_id]
        assert len(mine) == len(
            patch_grid(row.width, row.height, tiling.scales, tiling.min_overlap)[1]
        )
        assert mine.patch.tolist() == list(range(len(mine)))
    assert set(patches.label) <= {-1, 0, 1, 2, 3, 4} and (patches.label > 0).any()

    shards = read_shard_index(Path("data/patches/test-voc/trainval"))
    index = pq.read_table("data/patches/test-voc/trainval/index.parquet").to_pandas()
    assert [file_sha256(s.path) for s in shards] == [s.sha256 for s in shards]
    assert index.sha256.tolist() == [s.sha256 for s in shards]
    data = shard_rows([s.path for s in shards])
    keys = patches.set_index(["image_id", "patch"])
    sampled = [(data[i]["image_id"], data[i]["patch"], data[i]["label"]) for i in range(len(data))]
    labels = np.array([keys.loc[(i, p), "label"] for i, p, _ in sampled])
    assert [lab for *_, lab in sampled] == labels.tolist()
    assert set(np.flatnonzero(patches.label > 0)) <= {keys.index.get_loc(k[:2]) for k in sampled}
    assert (labels >= 0).all()
    n_background = int((patches.label == 0).sum())
    assert abs(int((labels == 0).sum()) - 0.1 * n_background) <= len(images)

    item = data[len(data) // 2]
    row = keys.loc[(item["image_id"], item["patch"])]
    image = load_rgb(Path("VOCdevkit/VOC2007/JPEGImages") / f"{item['image_id']}.jpg")
    expected = as_stored(cut_patches(image, np.array([[row.x0, row.y0, row.side]]), 32))[0]
    assert item["pixels"].shape == (32, 32, 3)
    assert np.array_equal(item["pixels"], expected)


def outputs_digest() -> dict[str, str]:
    patches = Path("data/patches/test-voc/trainval")
    files = sorted(MANIFESTS.rglob("*.parquet")) + sorted(patches.glob("*"))
    return {str(p): file_sha256(p) for p in files}


def test_same_params_give_byte_identical_manifests_and_shards_whatever_jobs(
    workdir, tmp_path_factory, monkeypatch
):
    run_data_half("trainval", "--jobs", "1")
    first = outputs_digest()
    other = tmp_path_factory.mktemp("again")
    shutil.copytree(workdir / "VOCdevkit", other / "VOCdevkit")
    params = demo_params(other / "VOCdevkit" / "VOC2007")
    params["dataset"]["root"] = str(workdir / "VOCdevkit" / "VOC2007")  # same images
    (other / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(other)
    run_data_half("trainval", "--jobs", "2")
    assert outputs_digest() == first


def test_a_local_dask_cluster_gives_the_bytes_of_a_local_run(
    workdir, tmp_path_factory, monkeypatch
):
    run_data_half("trainval")
    local = outputs_digest()
    other = tmp_path_factory.mktemp("dask")
    params = demo_params(workdir / "VOCdevkit" / "VOC2007")  # the same images
    params["cluster"] = {"backend": "dask", "scheduler": None}
    params["jobs"] = 2  # two worker processes
    (other / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(other)
    done = run_cli("index", "--split", "trainval")
    assert "Dask scheduler tcp://127.0.0.1:" in done.stderr
    run_cli("tile", "--split", "trainval")
    run_cli("sample", "--split", "trainval")
    assert outputs_digest() == local


class KillOnce(WorkerPlugin):
    """Kills the process of the worker that starts the cluster's `nth` task (counted with
    files in `counter`), once."""

    def __init__(self, counter: Path, nth: int) -> None:
        self.counter, self.nth = counter, nth

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish != "executing":
            return
        started = next(k for k in itertools.count(1) if claim(self.counter / str(k)))
        if started == self.nth:
            os._exit(1)


def claim(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def test_a_worker_killed_mid_run_leaves_the_bytes_of_a_local_run(
    workdir, tmp_path_factory, monkeypatch
):
    run_data_half("trainval")
    local = outputs_digest()
    other, counter = tmp_path_factory.mktemp("killed"), tmp_path_factory.mktemp("started")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):  # workers started in `workdir`
        params = demo_params(workdir / "VOCdevkit" / "VOC2007")
        params["cluster"] = {"backend": "dask", "scheduler": cluster.scheduler_address}
        (other / "params.yaml").write_text(yaml.safe_dump(params))
        monkeypatch.chdir(other)
        run_cli("index", "--split", "trainval")
        run_cli("tile", "--split", "trainval")
        client.register_plugin(KillOnce(counter, nth=2))
        run_cli("sample", "--split", "trainval")
    assert (counter / "2").exists()  # the second shard task killed its worker
    assert outputs_digest() == local


def break_inputs(root: Path) -> None:
    jpeg = root / "JPEGImages/000001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:2000])
    (root / "Annotations/000002.xml").write_text("<annotation><size><width>")
    xml = root / "Annotations/000003.xml"
    xml.write_text(re.sub(r"<name>\w+</name>", "<name>unicorn</name>", xml.read_text(), count=1))
    xml = root / "Annotations/000004.xml"
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + "9999" + text[text.index("</xmax>") :])
    (root / "JPEGImages/000005.jpg").unlink()


def test_bad_images_are_reported_counted_and_skipped(workdir):
    break_inputs(workdir / "VOCdevkit/VOC2007")
    done = run_cli("index", "--split", "trainval")
    report = yaml.safe_load((MANIFESTS / "trainval/problems.json").read_text())
    assert report["skipped"] == 4 and report["images"] == 2
    for needle in (
        "000001.jpg: corrupt or truncated",
        "000002.xml: malformed XML",
        "000004.xml: box of",
        "000005.jpg: image is listed but missing",
    ):
        assert any(needle in p for p in report["problems"]), needle
        assert needle in done.stderr
    # a class outside dataset.classes is no error: the image stays, the object is counted
    assert report["outside_classes"] == {"unicorn": 1}
    images = pq.read_table(MANIFESTS / "trainval/images.parquet")
    assert images["image_id"].to_pylist() == ["000003", "000006"]
    objects = pq.read_table(MANIFESTS / "trainval/objects.parquet").to_pandas()
    outside = objects[objects["class"] == "unicorn"]
    assert len(outside) == 1 and outside.label.tolist() == [-1]
    run_cli("tile", "--split", "trainval")
    run_cli("sample", "--split", "trainval")


def test_strict_stops_at_the_first_bad_image_with_one_line(workdir):
    break_inputs(workdir / "VOCdevkit/VOC2007")
    done = run_cli("index", "--split", "trainval", "--strict", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in done.stderr
    assert not (MANIFESTS / "trainval/images.parquet").exists()


def test_missing_split_file_is_one_clear_line(workdir):
    done = run_cli("index", "--split", "nosuchsplit", check=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and line.endswith(
        "ImageSets/Main/nosuchsplit.txt: split file is missing (is dataset.root a VOC year dir?)"
    )
    assert "Traceback" not in done.stderr


def shards_state() -> dict[str, str]:
    return {
        p.name: file_sha256(p)
        for p in sorted(Path("data/patches/test-voc/trainval").glob("shard-*.h5"))
    }


def test_killed_sample_leaves_no_torn_shard_and_resumes_to_the_same_shards(workdir, edit_params):
    edit_params({"shards.patches_per_shard": 8})
    run_data_half()
    complete = shards_state()
    index_bytes = Path("data/patches/test-voc/trainval/index.parquet").read_bytes()
    assert len(complete) > 10
    shutil.rmtree("data/patches")

    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.cli", "sample", "--split", "trainval"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(shards_state()) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = shards_state()
    assert partial, "the run was killed before writing any shard"
    for name, sha in partial.items():  # whatever is there under a shard's name is complete
        assert sha == complete[name]
        with h5py.File(Path("data/patches/test-voc/trainval") / name) as f:
            assert len(read_pixels(f, slice(None))) == len(f["label"])

    # a torn file under a final name (e.g. a crash of the file system) is rewritten too
    torn = Path("data/patches/test-voc/trainval") / next(iter(partial))
    torn.write_bytes(torn.read_bytes()[:500])
    run_cli("sample", "--split", "trainval")
    assert shards_state() == complete
    assert Path("data/patches/test-voc/trainval/index.parquet").read_bytes() == index_bytes
    assert not [
        p for p in Path("data/patches/test-voc/trainval").iterdir() if p.name.startswith(".")
    ]


@pytest.mark.parametrize("split", ["test"])
def test_index_and_tile_work_for_a_split_without_sampling(workdir, split):
    run_data_half(split)
    patches = pq.read_table(MANIFESTS / f"{split}/patches.parquet")
    assert patches.column_names == [
        "image_id",
        "patch",
        "scale",
        "x0",
        "y0",
        "side",
        "label",
        "best_object",
        "patch_cover",
        "object_cover",
    ]
    assert sorted(set(patches["image_id"].to_pylist())) == ["000007", "000008", "000009"]


def test_a_stage_run_too_early_names_the_stage_to_run_first(workdir):
    done = run_cli("tile", "--split", "trainval", check=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.endswith(
        "images.parquet: manifest is missing; run `pipeline index --split trainval`"
    )
    run_cli("index", "--split", "trainval")
    done = run_cli("sample", check=False)
    assert (
        "patches.parquet: manifest is missing; run `pipeline tile --split trainval`" in done.stderr
    )
