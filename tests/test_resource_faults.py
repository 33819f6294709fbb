"""Faults of the machine rather than of the data: a disk that fills under a stage's scratch
copy, a scheduler address answered by something that is not Dask, a process that cannot map
its libraries, start threads or allocate memory. Each is one line naming the file or the
setting, exit status 1, and nothing lost."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.sealed_tables import read_parquet
from stages import cli
from tests.cli import run_cli
from tests.conftest import set_params

HEADS = Path("data/heads/test-voc/tiny")


def limited_file_size(max_bytes: int):
    """A `preexec_fn` that caps the size of any file the child writes (``ulimit -f``)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


@pytest.mark.parametrize(("stage", "kind"), [("fit-head", "head"), ("fit-windows", "windows")])
def test_a_full_disk_under_the_scratch_copy_is_one_line_and_the_layers_stay(
    all_layers, stage, kind
):
    before = (HEADS / f"{kind}.pt").read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", stage, "--net", "tiny"],
        capture_output=True, text=True, preexec_fn=limited_file_size(4096), check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith(f"error: {HEADS}: cannot hold a copy of the descriptors of data/")
    assert "(File too large)" in line
    assert (HEADS / f"{kind}.pt").read_bytes() == before
    assert not [p for p in HEADS.iterdir() if p.name.startswith(".rows-")]


def serve(reply: bytes | None) -> Iterator[int]:
    """A TCP server on a free local port that answers every connection with `reply` (None:
    accepts and never answers); yields the port."""
    server = socket.create_server(("127.0.0.1", 0))
    connections = []

    def answer() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connections.append(connection)
            if reply is not None:
                connection.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in connections:
        connection.close()


@pytest.fixture(params=["http reply", "silent"])
def not_a_scheduler(request) -> Iterator[tuple[str, str]]:
    """The address of a server that is not a Dask scheduler, and how it answers."""
    reply = b"HTTP/1.0 400 Bad Request\r\n\r\n" if request.param == "http reply" else None
    for port in serve(reply):
        yield f"tcp://127.0.0.1:{port}", request.param


def test_a_scheduler_address_that_is_not_dask_is_one_line_naming_the_setting(
    workdir, not_a_scheduler
):
    address, answers = not_a_scheduler
    set_params({"cluster.backend": "dask", "cluster.scheduler": address})
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", "index", "--split", "test"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cluster.scheduler: {address!r} ")
    if answers == "silent":
        assert "did not answer as a Dask scheduler within 10 s" in line
    else:
        assert "answered, but not as a Dask scheduler" in line
    assert not Path("manifests").exists() or not any(Path("manifests").rglob("*.parquet"))


def test_libraries_that_cannot_be_mapped_are_one_line_naming_the_limit(workdir):
    # below about 2 GiB of address space torch cannot even be loaded
    limit = 1400 * 2**20
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", "dense", "--net", "tiny", "--split", "test"],
        capture_output=True, text=True, check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: dense: cannot load its libraries (")
    assert "failed to map segment" in line and "only 1.4 GiB of address space (ulimit -v)" in line


def test_a_thread_that_cannot_start_is_not_called_a_damaged_file(workdir, monkeypatch):
    run_cli("index", "--split", "test")
    images = Path("manifests/test-voc/test/images.parquet")

    def no_thread(*args, **kwargs):
        raise pa.ArrowException("Failed to launch worker thread: Resource temporarily unavailable")

    monkeypatch.setattr(pq, "read_table", no_thread)
    with pytest.raises(PipelineError) as refused:
        read_parquet(images, "re-run `pipeline index --split test`")
    line = str(refused.value)
    assert line.startswith(f"{images}: not read (Failed to launch worker thread")
    assert "ran out of threads or address space (ulimit -v: " in line and "re-run" not in line


def test_running_out_of_memory_is_one_line_naming_what_lowers_the_need(
    workdir, monkeypatch, capsys
):
    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli, "stage", lambda command: out_of_memory)
    monkeypatch.setattr(sys, "argv", ["pipeline", "dense", "--net", "tiny"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: out of memory (address space: ")
    assert "lower jobs, features.workers, features.batch_size or OMP_NUM_THREADS" in line
