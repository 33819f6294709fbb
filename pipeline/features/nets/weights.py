"""Reading a net's weights safely: state dicts loaded weights-only and matched key by key,
torchvision's weight files checked against the hash in their name, and the digest of tensors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.hashing import checked_file_sha256
from pipeline.core.torch_files import load_weights_only

HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torchvision's SHA-256 prefix in a file name


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, shapes and values (in key order)."""
    h = hashlib.sha256()
    for key, value in state.items():
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Load a state dict with ``torch.load(weights_only=True)``; PipelineError when unreadable."""
    state = load_weights_only(
        path, if_missing=f"{what} weights file is missing", kind="torch state dict"
    )
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise PipelineError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)


def load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module`, requiring the same keys and shapes.

    Raises PipelineError naming `source` and the first missing, unexpected or mismatching key.
    """
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise PipelineError(f"{source}: key {key!r} is missing (expected {tuple(value.shape)})")
        if tuple(state[key].shape) != tuple(value.shape):
            raise PipelineError(
                f"{source}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise PipelineError(f"{source}: unexpected key {extra[0]!r} ({len(extra)} in all)")
    module.load_state_dict(state)


def _download_hint(name: str, path: Path) -> str:
    return (
        f"{name}: ImageNet weights are not in the torch cache and cannot be downloaded here; "
        f'on a networked machine run `python -c "import torchvision; '
        f"torchvision.models.get_model_weights('{name}').DEFAULT.get_state_dict()\"` once, or copy "
        f"{path.name} into {path.parent}"
    )


def torchvision_weights_file(name: str, weights: Any) -> Path:
    """The torch-cache file of a torchvision weights enum, downloaded when absent, and checked:
    its SHA-256 must start with the prefix that torchvision's registry puts in the file name
    (``alexnet-owt-7be5be79.pth``), so that a file placed there by hand is the expected one.
    Raises PipelineError naming the file when it cannot be fetched or does not match."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    found = HASH_IN_NAME.search(path.name)
    prefix = found.group(1) if found else None
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), prefix, progress=False)
        except (URLError, OSError, RuntimeError) as err:
            raise PipelineError(f"{_download_hint(name, path)} ({err})") from None
    if prefix is not None:
        checked_file_sha256(path, prefix, f"torchvision's {name} weights")
    return path


def torchvision_state(name: str, weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum, from its checked cache file, loaded
    weights-only (no pickled code runs)."""
    return load_state_dict_file(torchvision_weights_file(name, weights), name)
