"""Where torch work runs: the device named by a ``device`` param and the DataLoader workers
that feed it."""

from __future__ import annotations

import os

import torch

from pipeline.core.errors import PipelineError

MAX_CUDA_WORKERS = 8  # DataLoader workers of `auto` on CUDA: enough to keep one GPU fed


def resolve_device(name: str, source: str = "features.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named torch device. `source`
    (the param or option that named it) starts the one-line error of an unknown or absent
    device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PipelineError(f"{source}: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"{source}: {name} asked for but no CUDA GPU is visible")
    return device


def chosen_device(option: str | None, param: str, key: str) -> torch.device:
    """The device of a stage: its ``--device`` `option` when given, else its `param` (the
    value of the params key `key`), resolved by `resolve_device`, whose errors name the one
    used."""
    return resolve_device(option or param, "--device" if option else key)


def resolve_workers(setting: int | str, device: torch.device) -> int:
    """DataLoader workers: an int as given; ``auto`` -> 0 on CPU (loading is cheap next to the
    forward pass and would steal its cores), up to `MAX_CUDA_WORKERS` on CUDA."""
    if setting == "auto":
        return 0 if device.type == "cpu" else min(MAX_CUDA_WORKERS, os.cpu_count() or 1)
    if isinstance(setting, int) or (isinstance(setting, str) and setting.isdigit()):
        return int(setting)
    raise PipelineError(f"features.workers: {setting!r} is not a count of workers or auto")
