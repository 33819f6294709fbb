"""Writes that cannot complete (disk full, read-only, no permission) are one line naming the
path and the cause, leave no temporary file and keep the previous output; a re-run after the
cause is gone completes."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.core.atomic import atomic_path, write_text
from pipeline.core.errors import PipelineError
from pipeline.core.hashing import file_sha256
from pipeline.core.params import load_params
from stages import sample
from tests.cli import run_cli

PATCHES = Path("data/patches/test-voc/trainval")


def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_text("old\n", target)
    with pytest.raises(PipelineError) as err, atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value) == f"{target}: cannot write (No space left on device)"
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]


def test_a_library_naming_the_errno_only_in_its_message_is_understood(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("Can't write data (file write failed: errno = 30, error message = 'x')")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PipelineError, match=r"out.txt: cannot write \(Read-only file system\)"):
        write_text("new", tmp_path / "out.txt")
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_stay_bugs_with_their_traceback(tmp_path):
    with pytest.raises(OSError), atomic_path(tmp_path / "x") as tmp:
        tmp.write_text("x")
        raise OSError(errno.EBADF, "Bad file descriptor")


def shards() -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(PATCHES.glob("shard-*.h5"))}


def test_sample_on_a_full_disk_stops_in_one_line_and_resumes_to_the_same_shards(
    workdir, edit_params, monkeypatch
):
    edit_params({"shards.patches_per_shard": 16})
    for stage in ("index", "tile", "sample"):
        run_cli(stage, "--split", "trainval")
    complete = shards()
    assert len(complete) > 4
    shutil.rmtree(PATCHES)

    real_write, opened = Path.write_bytes, []

    def full_at_the_third_shard(path: Path, data: bytes) -> int:
        if path.name.startswith(".shard-"):
            opened.append(path)
            if len(opened) == 3:
                real_write(path, data[:100])  # the first bytes, then the disk was full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_at_the_third_shard)
    params = load_params(Path("params.yaml"))
    with pytest.raises(PipelineError) as err:
        sample.run(params, "trainval", jobs=1)
    assert str(err.value) == f"{PATCHES / 'shard-00002.h5'}: cannot write (No space left on device)"
    assert shards() == {k: complete[k] for k in ("shard-00000.h5", "shard-00001.h5")}
    assert not [p for p in PATCHES.iterdir() if ".tmp-" in p.name]
    journal = [json.loads(line)["shard"] for line in (PATCHES / ".written.jsonl").open()]
    assert journal == ["shard-00000.h5", "shard-00001.h5"]  # what a resume may trust

    monkeypatch.setattr(Path, "write_bytes", real_write)
    done = run_cli("sample", "--split", "trainval")
    assert f"{len(complete) - 2} of {len(complete)} shards to write" in done.stderr
    assert shards() == complete
    assert not [p for p in PATCHES.iterdir() if p.name.startswith(".")]


def test_a_read_only_shard_directory_is_one_line_naming_what_cannot_be_written(
    workdir, monkeypatch
):
    # a read-only patch directory (its parent writable, where the lock lies) used to end
    # `sample` with an OSError traceback on its resume journal
    for stage in ("index", "tile"):
        run_cli(stage, "--split", "trainval")
    real_open = Path.open

    def read_only(path: Path, mode: str = "r", *args, **kwargs):
        if path.parent.resolve() == PATCHES.resolve() and mode != "r":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)
    with pytest.raises(PipelineError) as err:
        sample.run(load_params(Path("params.yaml")), "trainval", jobs=1)
    assert str(err.value) == f"{PATCHES / '.written.jsonl'}: cannot write (Read-only file system)"
