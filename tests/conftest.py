"""Shared fixtures: small synthetic VOCdevkits made by the project's own generator."""

from __future__ import annotations

import faulthandler
import io
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from filelock import FileLock

from pipeline.core.params import load_params
from pipeline.data.patch_codecs import read_pixels, shard_codec
from pipeline.data.synthetic_devkit import generate_demo
from pipeline.data.tiling import patch_grid
from tests.cli import run_cli

CLASSES = ("aeroplane", "bicycle", "bird", "boat")
SPLITS = ("trainval", "test")
TRAINED_LAYERS = ("fit-head", "fit-windows", "fit-weak", "fit-cam")
ACTIONS = ["jumping", "phoning", "ridingbike"]


REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
PAPER = load_params(REPO_PARAMS)  # the paper's grid and labelling rule, as params.yaml holds them


# a `sitecustomize` that kills its process (SIGKILL: nothing runs after) when it starts to write
# the third temporary shard of a stage
KILLED_AT_THE_THIRD_SHARD = """
import os, signal
from pathlib import Path

written, real_write = [], Path.write_bytes

def write_bytes(path, data):
    if path.name.startswith(".shard-"):
        written.append(path)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write(path, data)

Path.write_bytes = write_bytes
"""


def net_options(net: str) -> dict:
    """The ``nets.<net>`` options params.yaml gives `net` ({} for a net without options)."""
    return PAPER.net_options(net)


def paper_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """`patch_grid` of a `width` x `height` image with the tiling params of params.yaml (the
    paper's 9 scales, 2/3 overlap): ``(scale [N], boxes [N, 3])``."""
    return patch_grid(width, height, PAPER.tiling.scales, PAPER.tiling.min_overlap)


# signals whose default action ends a process without a word (pytest's faulthandler covers the
# crashes: SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL; SIGKILL cannot be caught)
SILENT_ENDS = (
    signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU,
)  # fmt: skip


def name_silent_ends() -> None:
    """In this process (an xdist worker): a signal of `SILENT_ENDS` first writes its name, the
    running test and every thread's stack to the process's stderr, which the xdist controller
    prints, then ends the process as it would have (xdist alone says only "node down: Not
    properly terminated"). Children forked from it keep the plain default action."""
    stderr, worker = os.dup(2), os.getpid()

    def name_and_end(signum: int, _frame: object) -> None:
        if os.getpid() == worker:
            test = os.environ.get("PYTEST_CURRENT_TEST", "no test")
            os.write(stderr, f"{signal.Signals(signum).name} ends this worker in {test}\n".encode())
            faulthandler.dump_traceback(stderr, all_threads=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in SILENT_ENDS:
        signal.signal(signum, name_and_end)


class WorkerEnds:
    """In the xdist controller: how a worker's process ended when it ended without finishing
    its tests (xdist says only "node down"): its exit status, or the signal that killed it
    (SIGKILL: the kernel's out-of-memory killer or another process; nothing else shows it)."""

    @staticmethod
    def pytest_testnodedown(node: Any, error: object | None) -> None:
        popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
        if error is None or popen is None:
            return
        try:
            status = popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            status = None
        if status is None:
            ended = "is still running"
        elif -status in set(signal.Signals):
            ended = f"was killed by {signal.Signals(-status).name}"
        elif status < 0:
            ended = f"was killed by signal {-status}"
        else:
            ended = f"exited with status {status}"
        reporter = node.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"[{node.gateway.id}] worker process {popen.pid} {ended}")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, share the cores among the workers: each worker, and every process it
    starts (the `pipeline` commands, DVC), gets cores / workers threads for torch, OpenMP and
    MKL, so that workers running torch at once do not fight over the same cores. A worker that
    dies says why: the signal that ended it (`name_silent_ends`), and the controller how its
    process ended (`WorkerEnds`)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        name_silent_ends()
    elif config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(WorkerEnds())
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, threads)
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the tests marked `long` first (the order is otherwise kept), so that no worker
    begins a test of minutes when the others are nearly done."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


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


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory that `build` fills once per test run and every test then only reads.

    Under pytest-xdist each worker has its own session, so a session fixture alone would build
    it once per worker: the first worker to ask builds it under a file lock in the run's shared
    temporary directory, into a temporary name renamed when complete; the others wait for the
    lock and reuse it. Returns the directory."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    target = base / f"shared-{name}"
    with FileLock(f"{target}.lock"):
        if not target.is_dir():
            partial = base / f"shared-{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(target)
    return target


def private_copy(template: Path, destination: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a built project directory at `destination`, made the current directory."""
    shutil.copytree(template, destination)
    monkeypatch.chdir(destination)
    return destination


def run_stages(project: Path, *commands: tuple[str, ...]) -> None:
    """Run `pipeline` commands in `project` as a user does, in order."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        for command in commands:
            run_cli(*command)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only demo VOC2007 directory: 6 trainval and 3 test images, 4 classes."""

    def build(base: Path) -> None:
        generate_demo(base / "VOCdevkit" / "VOC2007", CLASSES, n_trainval=6, n_test=3, seed=7)

    return built_once(tmp_path_factory, "demo", build) / "VOCdevkit" / "VOC2007"


@pytest.fixture
def workdir(tmp_path: Path, demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory (cwd) with its own copy of the demo dataset and a params.yaml."""
    root = tmp_path / "VOCdevkit" / "VOC2007"
    shutil.copytree(demo_root, root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo_params(root)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def cached_template(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Path:
    """A project directory after index/tile/sample and `features --net tiny` on both splits
    (read it only: tests change a private copy)."""

    def build(project: Path) -> None:
        (project / "params.yaml").write_text(yaml.safe_dump(demo_params(demo_root)))
        data_half = [(stage, "--split", s) for s in SPLITS for stage in ("index", "tile")]
        features = [("features", "--net", "tiny", "--split", s) for s in SPLITS]
        run_stages(project, *data_half, ("sample", "--split", "trainval"), *features)

    return built_once(tmp_path_factory, "cached", build)


def built_on(
    factory: pytest.TempPathFactory, name: str, template: Path, *commands: tuple[str, ...]
) -> Path:
    """`built_once`: a copy of the project `template` after `commands`."""

    def build(project: Path) -> None:
        shutil.copytree(template, project, dirs_exist_ok=True)
        run_stages(project, *commands)

    return built_once(factory, name, build)


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory, cached_template: Path) -> Path:
    """`cached_template` after `fit-head` (the tiny net's head)."""
    return built_on(tmp_path_factory, "trained", cached_template, ("fit-head",))


@pytest.fixture(scope="session")
def dense_template(tmp_path_factory: pytest.TempPathFactory, cached_template: Path) -> Path:
    """`cached_template` after `dense --net tiny` on both splits."""
    dense = [("dense", "--net", "tiny", "--split", s) for s in SPLITS]
    return built_on(tmp_path_factory, "dense", cached_template, *dense)


@pytest.fixture(scope="session")
def layers_template(tmp_path_factory: pytest.TempPathFactory, dense_template: Path) -> Path:
    """`dense_template` after every trained layer of the object task: fit-head, fit-windows,
    fit-weak and fit-cam."""
    layers = [(stage, "--net", "tiny") for stage in TRAINED_LAYERS]
    return built_on(tmp_path_factory, "layers", dense_template, *layers)


@pytest.fixture
def cached(cached_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the cached project directory, as the current directory."""
    return private_copy(cached_template, tmp_path / "project", monkeypatch)


@pytest.fixture
def trained(trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the project with the tiny net's head, as the current directory."""
    return private_copy(trained_template, tmp_path / "project", monkeypatch)


@pytest.fixture
def dense_cached(dense_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the project with the dense maps of both splits, as the current
    directory."""
    return private_copy(dense_template, tmp_path / "project", monkeypatch)


@pytest.fixture
def all_layers(layers_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the project with dense maps and every trained layer of the object
    task, as the current directory."""
    return private_copy(layers_template, tmp_path / "project", monkeypatch)


@pytest.fixture(scope="session")
def action_root(tmp_path_factory) -> Path:
    """A demo devkit with an Action task: 8 trainval and 4 test images of persons."""

    def build(base: Path) -> None:
        generate_demo(
            base / "VOCdevkit" / "VOC2007", CLASSES, n_trainval=2, n_test=1, seed=5,
            actions=ACTIONS, n_action_trainval=8, n_action_test=4,
        )  # fmt: skip

    return built_once(tmp_path_factory, "action", build) / "VOCdevkit" / "VOC2007"


def action_params(root: Path) -> dict:
    """The test params pointed at the action devkit `root`, with short training schedules."""
    params = demo_params(root)
    params["action"]["actions"] = ACTIONS
    params["action"]["scratch"]["max_epochs"] = 2
    params["head"].update(max_epochs=3, hidden=32)
    return params


@pytest.fixture(scope="session")
def described_template(tmp_path_factory, action_root) -> Path:
    """A project on the (shared, read-only) action devkit after `action-samples` and
    `action-features --net tiny` on both splits."""

    def build(project: Path) -> None:
        (project / "params.yaml").write_text(yaml.safe_dump(action_params(action_root)))
        run_stages(
            project,
            *[
                command
                for split in SPLITS
                for command in (
                    ("action-samples", "--split", split),
                    ("action-features", "--net", "tiny", "--split", split),
                )
            ],
        )

    return built_once(tmp_path_factory, "described", build)


@pytest.fixture(scope="session")
def action_layers_template(
    tmp_path_factory: pytest.TempPathFactory, described_template: Path
) -> Path:
    """`described_template` after `fit-action --net tiny` of the three variants."""
    variants = [
        ("fit-action", "--net", "tiny", "--variant", v) for v in ("frozen", "update", "scratch")
    ]
    return built_on(tmp_path_factory, "action-layers", described_template, *variants)
