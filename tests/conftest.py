"""Shared fixtures: small synthetic VOCdevkits made by the project's own generator."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from pipeline.demo import generate_demo
from pipeline.params import load_params
from pipeline.patch_codecs import read_pixels, shard_codec
from tests.cli import run_cli

CLASSES = ("aeroplane", "bicycle", "bird", "boat")


REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def demo_params(root: Path) -> dict:
    """The repository's params.yaml pointed at `root`, made small enough for tests: 4 classes,
    32-pixel patches, 64 patches per shard, the `tiny` net, one job."""
    params = yaml.safe_load(REPO_PARAMS.read_text())
    params["jobs"] = 1
    params["dataset"].update(name="test-voc", root=str(root), classes=list(CLASSES))
    params["demo"].update(
        classes=list(CLASSES), n_trainval=6, n_test=3, seed=7, n_action_trainval=4,
        n_action_test=2,
    )  # fmt: skip
    params["tiling"]["patch_size"] = 32
    params["shards"]["patches_per_shard"] = 64
    params["features"].update(nets=["tiny"], device="cpu", batch_size=32, images_per_shard=1)
    return params


def as_stored(pixels: np.ndarray, params: Path = Path("params.yaml")) -> np.ndarray:
    """Patches uint8 ``[N, S, S, 3]`` as a shard written with the codec of `params` gives them
    back (the same pixels for a lossless codec, JPEG's decoded ones for ``jpeg``)."""
    with h5py.File(io.BytesIO(), "w") as f:
        shard_codec(load_params(params).shards).store(f, pixels)
        return read_pixels(f, slice(None))


def shard_rows(paths: list[Path]) -> list[dict[str, Any]]:
    """Every row of patch shards, in order: ``pixels`` (uint8 ``[S, S, 3]``), ``label``,
    ``image_id`` and ``patch``, read with h5py and the shard's codec."""
    rows = []
    for path in paths:
        with h5py.File(path, "r") as f:
            pixels = read_pixels(f, slice(None))
            keys = zip(f["label"][:], f["image_id"].asstr()[:], f["patch"][:], strict=True)
            for n, (label, image_id, patch) in enumerate(keys):
                rows.append(
                    {"pixels": pixels[n], "label": int(label), "image_id": image_id,
                     "patch": int(patch)}
                )  # fmt: skip
    return rows


def flip_a_byte_in_the_middle(path: Path) -> None:
    """Damage a file as bit rot would: one byte in its middle inverted."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class Payload:
    """A pickle that, when loaded without weights_only, writes a file: proof that it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the pickle ran"))


def set_params(changes: dict[str, Any], path: Path = Path("params.yaml")) -> dict:
    """Set dotted keys of a params file (``{"scoring.k": 3}``); return the new params."""
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *blocks, key = dotted.split(".")
        node = params
        for block in blocks:
            node = node[block]
        node[key] = value
    path.write_text(yaml.safe_dump(params))
    return params


@pytest.fixture
def edit_params() -> Callable[..., dict]:
    """`set_params` on ./params.yaml of the test's project directory."""
    return set_params


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only demo VOC2007 directory: 6 trainval and 3 test images, 4 classes."""
    root = tmp_path_factory.mktemp("demo") / "VOCdevkit" / "VOC2007"
    generate_demo(root, CLASSES, n_trainval=6, n_test=3, seed=7)
    return root


@pytest.fixture
def workdir(tmp_path: Path, demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory (cwd) with its own copy of the demo dataset and a params.yaml."""
    root = tmp_path / "VOCdevkit" / "VOC2007"
    shutil.copytree(demo_root, root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo_params(root)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def cached_template(tmp_path_factory, demo_root) -> Path:
    """A project directory after index/tile/sample and `features --net tiny` on both splits."""
    project = tmp_path_factory.mktemp("cached")
    (project / "params.yaml").write_text(yaml.safe_dump(demo_params(demo_root)))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        for split in ("trainval", "test"):
            run_cli("index", "--split", split)
            run_cli("tile", "--split", split)
        run_cli("sample", "--split", "trainval")
        run_cli("features", "--net", "tiny", "--split", "trainval")
        run_cli("features", "--net", "tiny", "--split", "test")
    return project


@pytest.fixture
def cached(cached_template, tmp_path, monkeypatch) -> Path:
    """A private copy of the cached project directory, as the current directory."""
    project = tmp_path / "project"
    shutil.copytree(cached_template, project)
    monkeypatch.chdir(project)
    return project
