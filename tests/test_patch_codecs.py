"""Patch shard codecs: lossless ones give the cut pixels back exactly, JPEG within its stated
error, every reader decodes every codec, and shards of an older format are rewritten."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from skimage import data as photos

from pipeline.core.hashing import file_sha256
from pipeline.core.sealed_tables import write_parquet
from pipeline.core.shards import read_shard_index
from pipeline.data.cutting import cut_patches
from pipeline.data.patch_codecs import (
    LOSSLESS,
    PATCH_FORMAT_VERSION,
    PatchCodec,
    read_pixels,
    write_patch_shard,
)
from pipeline.data.patch_datasets import ShardPixelChunks
from pipeline.features.feature_cache import read_feature_cache
from tests.cli import run_cli
from tests.conftest import paper_grid, shard_rows

PATCHES = Path("data/patches/test-voc/trainval")
FEATURES = Path("data/features/test-voc/tiny/trainval")


@pytest.fixture(scope="module")
def photo_patches() -> np.ndarray:
    """40 grid patches (64 px) of a real photo (scikit-image's coffee cup)."""
    image = photos.coffee()
    boxes = paper_grid(image.shape[1], image.shape[0])[1]
    return cut_patches(image, boxes[:: len(boxes) // 40][:40], 64)


def write(path: Path, pixels: np.ndarray, codec: PatchCodec) -> str:
    n = len(pixels)
    return write_patch_shard(
        path, pixels=pixels, label=np.zeros(n, np.int16), image_id=["x"] * n,
        patch=np.arange(n), digest="d", codec=codec,
    )  # fmt: skip


@pytest.mark.parametrize(
    "codec", [PatchCodec(name, 3 if name == "gzip" else None) for name in LOSSLESS]
)
def test_lossless_codecs_give_the_cut_pixels_back_and_the_same_bytes_each_time(
    tmp_path, photo_patches, codec
):
    first = write(tmp_path / "a.h5", photo_patches, codec)
    assert write(tmp_path / "b.h5", photo_patches, codec) == first
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["codec"] == codec.name
        assert np.array_equal(read_pixels(f, slice(None)), photo_patches)
        assert np.array_equal(read_pixels(f, slice(5, 9)), photo_patches[5:9])


@pytest.mark.parametrize("codec", [PatchCodec("gzip"), PatchCodec("blosc2-zstd")])
def test_a_dataset_object_kept_alive_does_not_change_the_bytes(
    tmp_path, photo_patches, codec, monkeypatch
):
    """A Dask worker's profiler holds the frames of running tasks, so the dataset a codec
    created may be freed (and its cached chunks written) later than in a plain process."""
    first = write(tmp_path / "a.h5", photo_patches, codec)
    kept, create = [], h5py.Group.create_dataset

    def create_and_keep(group, *args, **kwargs):
        kept.append(create(group, *args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(h5py.Group, "create_dataset", create_and_keep)
    assert write(tmp_path / "b.h5", photo_patches, codec) == first
    assert kept


def test_jpeg_stays_within_its_stated_error_and_every_reader_decodes_it(tmp_path, photo_patches):
    sha = write(tmp_path / "shard-00000.h5", photo_patches, PatchCodec("jpeg", quality=90))
    assert write(tmp_path / "again.h5", photo_patches, PatchCodec("jpeg", quality=90)) == sha
    with h5py.File(tmp_path / "shard-00000.h5") as f:
        decoded = read_pixels(f, slice(None))
        empty = read_pixels(f, slice(0, 0))
    assert decoded.shape == photo_patches.shape and decoded.dtype == np.uint8
    assert empty.shape == (0, 64, 64, 3)
    error = np.abs(decoded.astype(int) - photo_patches)
    assert error.mean() < 2.5  # measured: 1.9 at 64 px, 1.05 at 224 px (docs/benchmarks.md)
    assert error.mean() > 0  # lossy: a codec that stored raw pixels would not be JPEG
    size = (tmp_path / "shard-00000.h5").stat().st_size
    assert size < photo_patches.nbytes / 4
    rows = [(tmp_path / "shard-00000.h5", len(photo_patches))]
    chunks = ShardPixelChunks(rows, chunk_rows=16)
    assert np.array_equal(np.concatenate([c.numpy() for c in chunks]), decoded)
    index = read_shard_index_of(tmp_path, "shard-00000.h5", len(photo_patches), sha)
    assert index[0].sha256 == sha
    assert np.array_equal(shard_rows([index[0].path])[7]["pixels"], decoded[7])


def test_reading_shard_after_shard_keeps_one_shard_open(tmp_path, photo_patches):
    # an open HDF5 file keeps its caches (megabytes): a reader that kept every shard it had read
    # open grew with the dataset (VOC2007's training shards: gigabytes)
    codec = PatchCodec("jpeg", quality=90)
    paths = [tmp_path / f"shard-{k:05d}.h5" for k in range(5)]
    for k, path in enumerate(paths):
        write(path, photo_patches[k * 8 : (k + 1) * 8], codec)
    chunks = ShardPixelChunks([(path, 8) for path in paths], chunk_rows=4)
    before = h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)  # others' files
    open_files, read = [], []
    for chunk in chunks:
        read.append(chunk.numpy())
        open_files.append(h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) - before)
    assert max(open_files) == 1
    assert np.array_equal(np.concatenate(read), [row["pixels"] for row in shard_rows(paths)])


def read_shard_index_of(directory: Path, name: str, rows: int, sha: str):
    write_parquet(
        pa.table({"shard": [name], "rows": [rows], "sha256": [sha], "digest": ["d"]}),
        directory / "index.parquet",
    )
    return read_shard_index(directory)


def shard_hashes() -> dict[str, str]:
    return {p.name: file_sha256(p) for p in PATCHES.glob("shard-*.h5")}


def test_the_codec_param_rewrites_the_shards_and_lossless_ones_give_the_same_features(
    cached, edit_params
):
    hashes = {"jpeg": shard_hashes()}  # the default codec
    features = {"jpeg": read_feature_cache(FEATURES)[0]}
    for codec in ("gzip", "blosc2-zstd"):
        edit_params({"shards.compression": codec})
        run_cli("sample")
        hashes[codec] = shard_hashes()
        with h5py.File(next(iter(PATCHES.glob("shard-*.h5")))) as f:
            assert f.attrs["codec"] == codec
        run_cli("features", "--net", "tiny", "--split", "trainval")  # new shards: recomputed
        features[codec] = read_feature_cache(FEATURES)[0]
    assert hashes["jpeg"].keys() == hashes["gzip"].keys() == hashes["blosc2-zstd"].keys()
    all_shards = {sha for by_name in hashes.values() for sha in by_name.values()}
    assert len(all_shards) == 3 * len(hashes["jpeg"])  # every codec wrote other bytes
    for key, column in features["gzip"].items():  # lossless: same pixels, same descriptors
        assert np.array_equal(features["blosc2-zstd"][key], column)
    assert not np.array_equal(features["jpeg"]["features"], features["gzip"]["features"])


def test_a_shard_of_the_previous_format_is_rewritten_not_read(cached):
    shard = next(iter(PATCHES.glob("shard-*.h5")))
    with h5py.File(shard, "a") as f:  # a version-1 shard: no codec attribute
        f.attrs["format_version"] = 1
        del f.attrs["codec"]
    index = pq.read_table(PATCHES / "index.parquet").to_pandas()
    index.loc[index.shard == shard.name, ["sha256", "digest"]] = [file_sha256(shard), "old"]
    write_parquet(pa.Table.from_pandas(index, preserve_index=False), PATCHES / "index.parquet")
    done = run_cli("features", "--net", "tiny", "--split", "trainval", check=False)
    assert done.returncode == 1
    assert f"shard format version 1 is not {PATCH_FORMAT_VERSION}" in done.stderr
    assert "Traceback" not in done.stderr
    run_cli("sample")
    with h5py.File(shard) as f:
        assert f.attrs["format_version"] == PATCH_FORMAT_VERSION and f.attrs["codec"] == "jpeg"
