"""Reading torch files safely: ``torch.load(weights_only=True)``, so that no pickled code in a
weights file or checkpoint ever runs, with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.errors import PipelineError


def load_weights_only(path: Path, *, if_missing: str, kind: str) -> Any:
    """The tensors and plain containers stored at `path` (on the CPU).

    Raises PipelineError naming the file: ``<path>: <if_missing>`` when it does not exist, and
    ``<path>: not a readable <kind> (...)`` when torch cannot read it as weights only.
    """
    if not path.is_file():
        raise PipelineError(f"{path}: {if_missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and torch errors all mean "not such a file"
        raise PipelineError(f"{path}: not a readable {kind} ({reason(err)})") from None


def reason(err: Exception) -> str:
    """The line of a (possibly long, multi-line) torch error that says why: the refused
    global of a weights-only load, else its first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    refused = [line for line in lines if "WeightsUnpickler error" in line]
    return (refused or lines or [type(err).__name__])[0]
