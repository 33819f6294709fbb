"""Shared fixtures: small synthetic VOCdevkits made by the project's own generator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.demo import generate_demo

CLASSES = ("aeroplane", "bicycle", "bird", "boat")


def demo_params(root: Path, **overrides: object) -> dict:
    """A params.yaml dict of the demo profile pointing at `root`, small enough for tests."""
    params = {
        "jobs": 1,
        "dataset": {
            "name": "test-voc",
            "root": str(root),
            "year": 2007,
            "splits": ["trainval", "test"],
            "classes": list(CLASSES),
        },
        "demo": {"n_trainval": 6, "n_test": 3, "seed": 7},
        "tiling": {
            "scales": [1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0],
            "min_overlap": 2 / 3,
            "patch_size": 32,
        },
        "labeling": {"min_patch_cover": 0.2, "min_object_cover": 0.6, "max_objects": 1},
        "sampling": {"background_fraction": 0.1, "seed": 0},
        "shards": {"patches_per_shard": 64, "compression": "gzip", "compression_level": 1},
    }
    for dotted, value in overrides.items():
        node = params
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return params


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
