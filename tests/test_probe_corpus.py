"""The probe corpus: cases of the three probes of the landed code that run in seconds on the
`tiny` net, each run as a user runs it on a copy of a finished project (`all_layers`).

Each case holds one of two ways:
- refused: exit status 1, no traceback, and the last line of stderr names the file or the
  setting at fault;
- recovered: the command succeeds and leaves the files it writes byte-identical to a clean
  run's.

The bad inputs that `index` skips, and the params rules one by one, have corpora of their own
(`test_bad_inputs.py`, `test_params.py`); the faults of the machine are in
`test_resource_faults.py`.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.hashing import file_sha256
from tests.cli import run_cli
from tests.conftest import KILLED_AT_THE_THIRD_SHARD, set_params

FEATURES = Path("data/features/test-voc/tiny")
DENSE = Path("data/dense/test-voc/tiny")
HEADS = Path("data/heads/test-voc/tiny")
MANIFESTS = Path("manifests/test-voc")
PATCHES = Path("data/patches/test-voc/trainval")


def truncate(path: Path | str) -> Callable[[], None]:
    """A setup that cuts the file at `path` to half its bytes."""

    def cut() -> None:
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    return cut


def params(changes: dict) -> Callable[[], None]:
    """A setup that sets keys of the project's params.yaml."""
    return lambda: set_params(changes)


def params_text(text: str) -> Callable[[], None]:
    """A setup that replaces params.yaml by `text`."""
    return lambda: Path("params.yaml").write_text(text)


def both(*setups: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        for setup in setups:
            setup()

    return run


def run(*command: str) -> Callable[[], None]:
    """A setup that runs a stage first (to have what it writes)."""
    return lambda: run_cli(*command)


def remove(path: str) -> Callable[[], None]:
    return lambda: shutil.rmtree(path)


def private_devkit_with(change: Callable[[Path], None]) -> Callable[[], None]:
    """A setup that copies the devkit into the project, changes it and points params at it."""

    def setup() -> None:
        root = Path(set_params({})["dataset"]["root"])
        copy = Path("devkit").absolute()
        shutil.copytree(root, copy)
        change(copy)
        set_params({"dataset.root": str(copy)})

    return setup


def first_test_image(root: Path) -> Path:
    first = (root / "ImageSets/Main/test.txt").read_text().split()[0]
    return root / "JPEGImages" / f"{first}.jpg"


@dataclass(frozen=True)
class Refused:
    """Held when the command exits 1, prints no traceback, and its last line names `needle`."""

    needle: str


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[], None]
    command: tuple[str, ...]
    held: Refused


CASES = [
    # params a user gets wrong
    Case("unknown net", lambda: None, ("features", "--net", "resnet9000"), Refused("resnet9000")),
    Case("patch size 0", params({"tiling.patch_size": 0}), ("tile",), Refused("tiling.patch_size")),
    Case("negative lr", params({"head.lr": -1}), ("fit-head",), Refused("head.lr")),
    Case(
        "no such dataset root",
        params({"dataset.root": "/nonexistent/VOC2007"}),
        ("index", "--split", "test"),
        Refused("/nonexistent/VOC2007"),
    ),
    Case(
        "unknown runtime",
        params({"features.runtime": "tensorrt"}),
        ("features",),
        Refused("features.runtime"),
    ),
    Case("params not yaml", params_text("tiling: [\n"), ("tile",), Refused("params.yaml")),
    Case("empty params", params_text(""), ("tile",), Refused("params.yaml")),
    Case("key given twice", params_text("jobs: 1\njobs: 2\n"), ("tile",), Refused("params.yaml")),
    Case(
        "unknown image to draw",
        params({"heatmaps.images": ["nope"]}),
        ("heatmaps",),
        Refused("heatmaps.images"),
    ),
    Case(
        "scheduler of no known form",
        params({"cluster.backend": "dask", "cluster.scheduler": "carrier-pigeon"}),
        ("index", "--split", "test"),
        Refused("cluster.scheduler"),
    ),
    Case("no classes", params({"dataset.classes": []}), ("index",), Refused("dataset.classes")),
    Case("k is nan", params({"scoring.k": float("nan")}), ("evaluate",), Refused("scoring.k")),
    Case(
        "split outside the project",
        params({"dataset.eval_split": "../x"}),
        ("index",),
        Refused("dataset.eval_split"),
    ),
    # dataset files
    Case(
        "missing split file",
        params({"dataset.eval_split": "nosplit"}),
        ("index", "--split", "nosplit"),
        Refused("nosplit.txt"),
    ),
    Case(
        "corrupt jpeg under --strict",
        private_devkit_with(lambda r: first_test_image(r).write_bytes(b"\xff\xd8 not a jpeg")),
        ("index", "--split", "test", "--strict"),
        Refused(".jpg"),
    ),
    # damaged files of every kind the stages write
    Case(
        "truncated images manifest",
        truncate(MANIFESTS / "test/images.parquet"),
        ("tile", "--split", "test"),
        Refused("images.parquet"),
    ),
    Case(
        "truncated patches manifest",
        truncate(MANIFESTS / "test/patches.parquet"),
        ("compare",),
        Refused("patches.parquet"),
    ),
    Case(
        "truncated patch shard",
        both(truncate(PATCHES / "shard-00000.h5"), remove(str(FEATURES / "trainval"))),
        ("features", "--split", "trainval"),
        Refused("shard-00000.h5"),
    ),
    Case(
        "truncated feature shard",
        truncate(FEATURES / "trainval/shard-00000.h5"),
        ("fit-head",),
        Refused("shard-00000.h5"),
    ),
    Case(
        "truncated shard index",
        truncate(FEATURES / "trainval/index.parquet"),
        ("fit-head",),
        Refused("index.parquet"),
    ),
    Case(
        "truncated test feature shard",
        truncate(FEATURES / "test/shard-00000.h5"),
        ("evaluate",),
        Refused("shard-00000.h5"),
    ),
    Case("truncated head", truncate(HEADS / "head.pt"), ("evaluate",), Refused("head.pt")),
    Case("truncated weak layer", truncate(HEADS / "weak.pt"), ("compare",), Refused("weak.pt")),
    Case(
        "truncated window rule",
        truncate(DENSE / "trainval.rule.pt"),
        ("fit-weak",),
        Refused("trainval.rule.pt"),
    ),
    Case(
        "truncated dense shard",
        truncate(DENSE / "trainval/shard-00000.h5"),
        ("fit-cam",),
        Refused("shard-00000.h5"),
    ),
    Case(
        "damaged metrics",
        both(run("compare"), truncate("metrics/test-voc/tiny/compare.json")),
        ("table",),
        Refused("compare.json"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_probe_case_is_refused_in_one_line_naming_the_file_or_setting(all_layers, case):
    case.setup()
    done = run_cli(*case.command, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert case.held.needle in last, done.stderr


def pipeline(*args: str, env: dict | None = None, limit: int | None = None):
    """`pipeline ARGS` as a process of its own (what only a process shows: a kill, a limit)."""

    def file_size_limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen(
        [sys.executable, "-m", "stages.cli", *args], env=env or dict(os.environ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=file_size_limit if limit else None,
    )  # fmt: skip


def shard_bytes(directory: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(directory.glob("shard-*.h5"))}


@pytest.fixture
def clean_patches(all_layers) -> dict[str, str]:
    """The patch shards of a clean `sample` with 16 patches per shard (many shards)."""
    set_params({"shards.patches_per_shard": 16})
    run_cli("sample", "--split", "trainval")
    clean = shard_bytes(PATCHES)
    assert len(clean) > 4
    shutil.rmtree(PATCHES)
    return clean


RECOVERED = ["killed -9 then resumed", "two at once", "disk full then resumed"]


@pytest.mark.parametrize("case", RECOVERED)
def test_a_probe_case_recovers_to_the_bytes_of_a_clean_run(clean_patches, case, tmp_path):
    if case == "killed -9 then resumed":
        (tmp_path / "sitecustomize.py").write_text(KILLED_AT_THE_THIRD_SHARD)
        path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
        killed = pipeline("sample", env=dict(os.environ, PYTHONPATH=path))
        killed.communicate()
        assert killed.returncode == -9 and len(shard_bytes(PATCHES)) == 2
    elif case == "two at once":
        runs = [pipeline("sample"), pipeline("sample")]
        for run in runs:
            _, stderr = run.communicate()
            refused = run.returncode == 1 and "Traceback" not in stderr
            last = stderr.strip().splitlines()[-1] if refused else ""
            assert run.returncode == 0 or f"{PATCHES}: another pipeline run" in last, stderr
    else:
        full = pipeline("sample", limit=4096)  # smaller than a shard
        _, stderr = full.communicate()
        assert full.returncode == 1 and "Traceback" not in stderr, stderr
        assert "cannot write" in stderr.strip().splitlines()[-1]
        assert not [p for p in PATCHES.iterdir() if ".tmp-" in p.name]
    run_cli("sample", "--split", "trainval")
    assert shard_bytes(PATCHES) == clean_patches
