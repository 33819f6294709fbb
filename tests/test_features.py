"""Cached descriptors: `pipeline features` over shards and images, with the `tiny` net."""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.core.atomic import exclusive, reading
from pipeline.core.errors import PipelineError
from pipeline.core.hashing import file_sha256
from pipeline.core.sealed_tables import write_parquet
from pipeline.core.shards import read_shard_attrs, read_shard_index, store_array, write_shard
from pipeline.data.patch_codecs import PATCH_FORMAT_VERSION
from pipeline.data.patch_datasets import ImagePatchChunks, ShardPixelChunks
from pipeline.features.dask_extractor import WorkerExtractor
from pipeline.features.feature_cache import feature_cache_shards, read_features
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import configured_extractor, rebatch
from pipeline.features.runtimes import resolve_arithmetic
from tests.cli import run_cli
from tests.conftest import as_stored, net_options

FEATURES = Path("data/features/test-voc/tiny")


def test_rebatch_keeps_order_and_never_crosses_a_boundary():
    chunks = [torch.arange(a, b) for a, b in [(0, 5), (5, 7), (7, 20), (20, 21), (21, 30)]]
    batches = list(rebatch(chunks, 4, boundaries=[7, 21, 30]))
    assert torch.equal(torch.cat(batches), torch.arange(30))
    assert [len(b) for b in batches] == [4, 3, 4, 4, 4, 2, 4, 4, 1]
    assert [len(b) for b in rebatch(chunks, 8)] == [8, 8, 8, 6]


def test_descriptors_do_not_depend_on_batch_size():
    backbone = build_backbone("tiny", net_options("tiny"))
    pixels = torch.randint(0, 256, (37, 32, 32, 3), dtype=torch.uint8)
    one = configured_extractor(backbone, torch.device("cpu"), 37, "auto", "auto")(pixels)
    other = configured_extractor(backbone, torch.device("cpu"), 5, "auto", "auto")(pixels)
    assert one.dtype == np.float16 and one.shape == (37, 64)
    np.testing.assert_allclose(one, other, rtol=1e-2, atol=1e-3)


def feature_rows(directory: Path) -> dict[str, np.ndarray]:
    shards = [read_features(shard) for shard in feature_cache_shards(directory)]
    return {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}


def set_attribute_keeping_the_index(shard: Path, key: str, value: object) -> None:
    """Change a shard's attribute and record its new bytes in the index, as a directory
    written by another version of the project would be."""
    with h5py.File(shard, "a") as f:
        f.attrs[key] = value
    index = shard.parent / "index.parquet"
    table = pq.read_table(index).to_pandas()
    table.loc[table.shard == shard.name, "sha256"] = file_sha256(shard)
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), index)


def shard_hashes(directory: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(directory.glob("shard-*.h5"))}


def index_hash(directory: Path) -> dict[str, str]:
    return {"index.parquet": file_sha256(directory / "index.parquet")}


def test_test_split_rows_join_one_to_one_with_the_patch_manifest(cached):
    rows = feature_rows(FEATURES / "test")
    patches = pq.read_table("manifests/test-voc/test/patches.parquet").to_pandas()
    assert rows["features"].shape == (len(patches), 64)
    assert rows["image_id"].tolist() == patches.image_id.tolist()
    assert rows["patch"].tolist() == patches.patch.tolist()
    assert rows["label"].tolist() == patches.label.tolist()
    attrs = read_shard_attrs(read_shard_index(FEATURES / "test")[0], "features")
    assert attrs["net"] == "tiny" and attrs["format_version"] == 1
    assert {"layer", "weights", "weights_digest", "transform", "digest"} <= set(attrs)


def test_features_from_shards_equal_features_cut_from_the_image(cached):
    rows = feature_rows(FEATURES / "trainval")
    patches = pq.read_table("manifests/test-voc/trainval/patches.parquet").to_pandas()
    keyed = patches.set_index(["image_id", "patch"])
    picked = np.arange(0, len(rows["patch"]), 7)
    boxes = keyed.loc[list(zip(rows["image_id"][picked], rows["patch"][picked], strict=True))]
    assert (boxes.label.to_numpy() == rows["label"][picked]).all()
    extractor = configured_extractor(
        build_backbone("tiny", net_options("tiny")), torch.device("cpu"), 16, "auto", "auto"
    )
    root = Path(yaml.safe_load(Path("params.yaml").read_text())["dataset"]["root"]) / "JPEGImages"
    for k, (image_id, patch) in enumerate(
        zip(rows["image_id"][picked], rows["patch"][picked], strict=True)
    ):
        row = keyed.loc[(image_id, patch)]
        cut = ImagePatchChunks(
            [(root / f"{image_id}.jpg", np.array([[row.x0, row.y0, row.side]]))], 32
        )[0]
        stored = torch.from_numpy(as_stored(cut.numpy()))  # as the shard's codec keeps it
        np.testing.assert_allclose(
            extractor(stored)[0], rows["features"][picked[k]], rtol=1e-2, atol=1e-3
        )


def test_features_on_a_local_dask_cluster_are_the_bytes_of_a_local_run(cached):
    splits = ("trainval", "test")  # from the patch shards, and cut from the images
    local = {s: shard_hashes(FEATURES / s) | index_hash(FEATURES / s) for s in splits}
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["cluster"] = {"backend": "dask", "scheduler": None}
    params["jobs"] = 2
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for split in splits:
        shutil.rmtree(FEATURES / split)
    done = run_cli("features", "--net", "tiny", "--device", "cpu")
    assert "on the Dask cluster's workers" in done.stderr
    assert {s: shard_hashes(FEATURES / s) | index_hash(FEATURES / s) for s in splits} == local


def test_a_worker_with_other_weights_is_refused_in_one_line(cached):
    options = json.dumps(net_options("tiny"))
    arithmetic = resolve_arithmetic("auto", "auto", torch.device("cpu"), False, True)
    worker = WorkerExtractor("tiny", options, "another", 8, arithmetic)
    shard = feature_cache_shards(FEATURES / "trainval")[0]
    chunks = ShardPixelChunks([(Path("data/patches/test-voc/trainval") / shard.path.name, 4)], 4)
    with pytest.raises(PipelineError, match="are not the stage's .*install the same weights"):
        worker.descriptors((chunks, 4))
    # a worker whose runtime is another version computes other numbers: refused likewise
    other = dataclasses.replace(arithmetic, version="0.0")
    worker = WorkerExtractor("tiny", options, "another", 8, other)
    with pytest.raises(PipelineError, match=r"features.runtime: worker .* has .*not the stage's"):
        worker.descriptors((chunks, 4))


def test_batch_size_and_resume_do_not_change_the_cache(cached):
    before = feature_rows(FEATURES / "test")
    hashes = shard_hashes(FEATURES / "test")
    shutil.rmtree(FEATURES / "test")
    run_cli("features", "--net", "tiny", "--split", "test", "--batch-size", "7")
    np.testing.assert_allclose(
        feature_rows(FEATURES / "test")["features"], before["features"], rtol=1e-2, atol=1e-3
    )

    shutil.rmtree(FEATURES / "test")
    run_cli("features", "--net", "tiny", "--split", "test")
    assert shard_hashes(FEATURES / "test") == hashes
    names = sorted(hashes)
    (FEATURES / "test" / names[0]).unlink()  # interrupted before this shard
    torn = FEATURES / "test" / names[-1]
    torn.write_bytes(torn.read_bytes()[:300])
    done = run_cli("features", "--net", "tiny", "--split", "test")
    assert "2 of" in done.stderr
    assert shard_hashes(FEATURES / "test") == hashes


@pytest.mark.parametrize("workers", ["0", "1"])
def test_torch_cutting_gives_the_descriptors_of_pil_cutting(cached, workers):
    before = feature_rows(FEATURES / "test")  # cut by PIL (auto on a CPU)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["features"]["cutting"] = "torch"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    shutil.rmtree(FEATURES / "test")
    args = ("--net", "tiny", "--split", "test", "--workers", workers)
    done = run_cli("features", *args)
    assert "test from images (cut by torch)" in done.stderr
    after = feature_rows(FEATURES / "test")
    for key in ("image_id", "patch", "label"):
        assert np.array_equal(after[key], before[key])
    np.testing.assert_allclose(after["features"], before["features"], rtol=0.05, atol=0.02)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_shard_of_another_format_version_is_refused_with_one_line(cached, workers):
    shard = next(Path("data/patches/test-voc/trainval").glob("shard-*.h5"))
    set_attribute_keeping_the_index(shard, "format_version", 99)
    shutil.rmtree(FEATURES / "trainval")
    args = ("--net", "tiny", "--split", "trainval", "--workers", workers)
    done = run_cli("features", *args, check=False)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: ")
        and f"shard format version 99 is not {PATCH_FORMAT_VERSION}" in last
    )
    feature_shard = feature_cache_shards(FEATURES / "test")[0]
    set_attribute_keeping_the_index(feature_shard.path, "format_version", 7)
    with pytest.raises(PipelineError, match="shard format version 7 is not 1"):
        read_features(feature_cache_shards(FEATURES / "test")[0])


def test_unknown_net_on_the_command_line_is_one_line(workdir):
    done = run_cli("features", "--net", "resnet9000", "--split", "test", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: unknown net 'resnet9000'; known nets: pre1512")


def test_without_net_and_split_every_configured_net_and_split_is_computed(cached):
    hashes = {split: shard_hashes(FEATURES / split) for split in ("trainval", "test")}
    shutil.rmtree(FEATURES)
    done = run_cli("features")
    assert "trainval from shards" in done.stderr and "test from images" in done.stderr
    assert {split: shard_hashes(FEATURES / split) for split in hashes} == hashes


def test_data_loader_workers_do_not_change_the_cache(cached):
    hashes = shard_hashes(FEATURES / "trainval")
    shutil.rmtree(FEATURES / "trainval")
    run_cli("features", "--net", "tiny", "--split", "trainval", "--workers", "2")
    assert shard_hashes(FEATURES / "trainval") == hashes


def test_sample_cannot_rewrite_the_patch_shards_while_features_reads_them(cached, edit_params):
    # sample with other params, run while features read the shards, used to leave feature
    # shards computed from patches other than those checked, and verify passed them
    patches = Path("data/patches/test-voc/trainval")
    before = {p.name: p.read_bytes() for p in patches.iterdir()}
    edit_params({"sampling.seed": 7})
    with reading(patches):  # what features holds while it reads them
        done = run_cli("sample", "--split", "trainval", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == f"error: {patches}: another pipeline run is reading it; wait for it to finish"
    assert {p.name: p.read_bytes() for p in patches.iterdir()} == before
    next(Path("data/features/test-voc/tiny/trainval").glob("shard-*.h5")).unlink()
    with exclusive(patches):  # what sample holds while it writes them
        done = run_cli("features", "--net", "tiny", "--split", "trainval", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {patches}: another pipeline")


@pytest.mark.parametrize(
    ("stage", "directory"),
    [
        (["features", "--net", "tiny", "--split", "trainval"], "data/features/test-voc/tiny"),
        (["sample", "--split", "trainval", "--jobs", "2"], "data/patches/test-voc"),
    ],
)
def test_a_full_disk_is_one_line_and_leaves_no_temporary(cached, edit_params, stage, directory):
    # a file size limit fails writes as a full disk does (EFBIG / ENOSPC): workers used to
    # segfault inside HDF5, leaving temporaries
    out = Path(directory) / "trainval"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    edit_params({"sampling.seed": 7})  # every shard of the stage is to be written again
    for shard in out.glob("shard-*.h5"):
        shard.unlink()

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", *stage], capture_output=True, text=True,
        preexec_fn=small_files,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "cannot write (File too large)" in line
    assert not [p for p in Path("data").rglob(".*") if ".tmp" in p.name]
    left = {p.name for p in out.iterdir()} - {".written.jsonl"}  # the resume journal stays
    assert left <= set(before)


def test_a_feature_shard_takes_the_bytes_of_its_descriptors_and_no_padding(tmp_path):
    """1,100 descriptors of 1280-d: a layout in chunks of 1,024 rows stored 948 rows of
    padding after the last, 2.4 MB (an evaluation shard of 8 VOC images of mixed sizes
    padded 10% on average); what remains beside the descriptors is the row keys (image ids in
    HDF5's heap) and the attributes."""
    descriptors = np.random.default_rng(0).standard_normal((1100, 1280)).astype(np.float16)
    path = tmp_path / "shard-00000.h5"
    write_shard(
        path, store=store_array("features", descriptors), label=np.zeros(1100, np.int16),
        image_id=["i"] * 1100, patch=np.arange(1100, dtype=np.int32), format_version=1,
        digest="digest",
    )  # fmt: skip
    assert path.stat().st_size - descriptors.nbytes < 128 * 1024
    with h5py.File(path) as f:
        assert np.array_equal(f["features"][:], descriptors)
