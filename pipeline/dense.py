"""Dense mode, computing the maps: the trunk of a backbone run once per image and scale (the
cache they go to, and the windows read from it, are `pipeline.dense_cache`).

For scale λ the image is resized once so that a patch (side ``min(w, h) / λ``) becomes
`patch_size` pixels, exactly as patch cutting resizes it; the trunk maps the resized image to
cells `stride` pixels apart; the window of a patch is the map of one `patch_size` input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from pipeline.cutting import resize_for_patches
from pipeline.errors import PipelineError
from pipeline.features import FeatureExtractor
from pipeline.heap import release_free_heap
from pipeline.images import load_rgb
from pipeline.nets import normalise


def patch_side(width: int, height: int, scale: float) -> float:
    """The patch side of `scale` in original pixels, ``min(w, h) / λ``, rounded to float32 as
    ``patches.parquet`` stores it, so that dense mode resizes exactly as patch cutting does."""
    return float(np.float32(min(width, height) / scale))


def resized_scales(
    image: np.ndarray, scales: Sequence[float], patch_size: int
) -> list[tuple[np.ndarray, float]]:
    """The RGB image ``[H, W, 3]`` resized once per scale (see `resize_for_patches`): a list of
    ``(resized [h', w', 3] uint8, factor)`` in the order of `scales`."""
    height, width = image.shape[:2]
    pil = Image.fromarray(image)
    return [resize_for_patches(pil, patch_side(width, height, s), patch_size) for s in scales]


class ResizedImages(Dataset):
    """Item i: image i decoded and resized once per scale, ``[(pixels [h', w', 3], factor), ...]``
    (or the PipelineError met reading it, so that it crosses DataLoader workers intact)."""

    def __init__(self, paths: Sequence[Path], scales: Sequence[float], patch_size: int) -> None:
        self.paths = list(paths)
        self.scales = list(scales)
        self.patch_size = patch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> list[tuple[np.ndarray, float]] | PipelineError:
        """The resized versions of image `index`, one per scale."""
        try:
            return resized_scales(load_rgb(self.paths[index]), self.scales, self.patch_size)
        except PipelineError as err:
            return err


@torch.inference_mode()
def trunk_maps(
    extractor: FeatureExtractor, resized: Sequence[tuple[np.ndarray, float]], patch_size: int
) -> list[torch.Tensor]:
    """The trunk maps ``[C, h, w]`` float32 (on the CPU) of an image's resized versions, one
    forward pass each, on the extractor's device and precision; each input padded at the
    right and bottom to an `aligned` size, so that the window of a cell is a patch's map."""
    release_free_heap()  # the last image's blocks, of other sizes than this one's
    dense, backbone = extractor.backbone.dense_trunk(), extractor.backbone
    trunk, _ = extractor.whole_image_trunk
    out = []
    for pixels, _ in resized:
        batch = torch.as_tensor(pixels)[None].to(extractor.device)  # numpy, or a loader's tensor
        x = normalise(batch, backbone.mean, backbone.std)
        height, width = x.shape[-2:]
        padding = (0, aligned(width, patch_size, dense.stride) - width)
        padding += (0, aligned(height, patch_size, dense.stride) - height)
        if any(padding):
            x = F.pad(x, padding).contiguous(memory_format=torch.channels_last)
        with extractor.autocast:
            maps = trunk(x)
        out.append(maps[0].float().cpu())
    return out


def aligned(length: int, patch_size: int, stride: int) -> int:
    """The smallest ``patch_size + n stride >= length``: the input length whose cells fall
    where a patch's own cells fall. Padding (zeros after normalisation, the value convolution
    padding uses) brings a resized image to it, because some trunks (TensorFlow-style "same"
    padding) shift their cell grid with the input size."""
    return patch_size + -(-(max(length, patch_size) - patch_size) // stride) * stride
