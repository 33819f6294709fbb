"""Torch files written and read safely: written whole (serialised in memory, then renamed into
place), sealed by a digest of their contents, and read with ``torch.load(weights_only=True)``
so that no pickled code in a weights file, checkpoint or rule ever runs; errors are one line
naming the file."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from pipeline.core.atomic import write_bytes
from pipeline.core.errors import PipelineError


def load_weights_only(path: Path, *, if_missing: str, kind: str, remedy: str = "") -> Any:
    """The tensors and plain containers stored at `path` (on the CPU).

    Raises PipelineError naming the file: ``<path>: <if_missing>`` when it does not exist, and
    ``<path>: not a readable <kind> (...)`` (followed by ``; <remedy>`` when given) when torch
    cannot read it as weights only (truncated, damaged, not a torch file).
    """
    if not path.is_file():
        raise PipelineError(f"{path}: {if_missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and torch errors all mean "not such a file"
        tail = f"; {remedy}" if remedy else ""
        raise PipelineError(f"{path}: not a readable {kind} ({reason(err)}){tail}") from None


def reason(err: Exception) -> str:
    """The line of a (possibly long, multi-line) torch error that says why: the refused
    global of a weights-only load, else its first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    refused = [line for line in lines if "WeightsUnpickler error" in line]
    return (refused or lines or [type(err).__name__])[0]


def _tensor_json(value: Any) -> Any:
    """A tensor met outside ``state_dict`` as JSON: its shape, dtype and SHA-256 of its bytes
    (every other object as its ``str``)."""
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data
        return [list(value.shape), str(value.dtype), hashlib.sha256(data).hexdigest()]
    return str(value)


def content_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a record to be saved as a torch file: the tensors of its ``state_dict``
    (names, shapes, dtypes, bytes, in key order), then its other entries as sorted JSON (a
    tensor among them by its shape, dtype and bytes' SHA-256), the recorded ``digest`` left
    out."""
    h = hashlib.sha256()
    for key, value in record.get("state_dict", {}).items():
        h.update(f"{key} {tuple(value.shape)} {value.dtype}".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    rest = {k: v for k, v in record.items() if k not in ("state_dict", "digest")}
    h.update(json.dumps(rest, sort_keys=True, default=_tensor_json).encode())
    return h.hexdigest()


def sealed(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its ``digest`` (`content_digest`), checked by `check_seal` when read."""
    return {**record, "digest": content_digest(record)}


def check_seal(record: Any, path: Path, writer: str, rerun: str) -> None:
    """PipelineError naming `path`, the stage `writer` that wrote it and `rerun` (what to do)
    when `record` (as read from `path`) is not a dict whose contents match the digest recorded
    in it."""
    try:
        intact = isinstance(record, dict) and record.get("digest") == content_digest(record)
    except (AttributeError, TypeError, RuntimeError):  # a state_dict of something else
        intact = False
    if not intact:
        raise PipelineError(
            f"{path}: contents do not match the digest recorded when `pipeline {writer}` wrote "
            f"it (damaged, or not written by it); {rerun}"
        )


def save_torch(record: dict[str, Any], path: Path) -> None:
    """Write a record of tensors and plain values atomically: serialised in memory, then
    written as plain bytes (so a full disk is a one-line error, not a torch stream error)."""
    buffer = io.BytesIO()
    torch.save(record, buffer)
    write_bytes(buffer.getvalue(), path)
