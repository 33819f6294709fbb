"""Content digests: of a file's bytes, and of the values a computed file depends on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError


def digest_of(*parts: Any) -> str:
    """Return a SHA-256 hex digest of JSON-able values and numpy arrays, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str(part.dtype).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checked_file_sha256(path: Path, expected: str, what: str) -> str:
    """The SHA-256 of a file whose hash is known in advance (`expected`, whole or a prefix, as
    torchvision puts one in its file names); raises PipelineError naming the file when its
    bytes are not those, before anything reads them as weights."""
    sha = file_sha256(path)
    if not sha.startswith(expected.lower()):
        raise PipelineError(
            f"{path}: SHA-256 is {sha[:16]}..., not the {expected[:16]}... recorded for {what}; "
            "it is not that file: replace it (it was not loaded)"
        )
    return sha
