"""Dense mode, computing the maps: the trunk of a backbone run once per image and scale, and a
split's maps planned, computed and written as the shards of its cache, resuming (the cache's
format, and the windows read from it, are `pipeline.features.dense_cache`).

For scale λ the image is resized once so that a patch (side ``min(w, h) / λ``) becomes
`patch_size` pixels, exactly as patch cutting resizes it; the trunk maps the resized image to
cells `stride` pixels apart; the window of a patch is the map of one `patch_size` input."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.core.hashing import digest_of
from pipeline.core.heap_trim import release_free_heap
from pipeline.core.params import Params
from pipeline.core.shards import shard_name, update_shards
from pipeline.core.timing import record_backbone_time
from pipeline.data.cutting import resize_for_patches
from pipeline.data.images import load_rgb
from pipeline.data.manifests import image_digests, image_files, read_manifest
from pipeline.features.cache_identity import backbone_identity, shard_attributes
from pipeline.features.dense_cache import ImageMaps, write_dense_shard, write_window_rule
from pipeline.features.nets.backbone import normalise
from pipeline.features.patch_extractor import FeatureExtractor, chunk_loader

log = logging.getLogger("pipeline")


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
    forward pass each, with the extractor's device and arithmetic; each input padded at the
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
        out.append(trunk(x)[0].cpu())
    return out


def aligned(length: int, patch_size: int, stride: int) -> int:
    """The smallest ``patch_size + n stride >= length``: the input length whose cells fall
    where a patch's own cells fall. Padding (zeros after normalisation, the value convolution
    padding uses) brings a resized image to it, because some trunks (TensorFlow-style "same"
    padding) shift their cell grid with the input size."""
    return patch_size + -(-(max(length, patch_size) - patch_size) // stride) * stride


@dataclass(frozen=True)
class DenseTask:
    """One dense shard: its path, map count, content digest, and its images
    ``(image_id, path, width, height)``."""

    path: Path
    rows: int
    digest: str
    images: list[tuple[str, Path, int, int]]


def dense_identity(params: Params, net: str, extractor: FeatureExtractor) -> dict:
    """What the maps depend on besides the pixels: the net, its weights and transform, the
    runtime and precision, the patch size, the scales, the trunk's stride and whether its
    batch norms are folded."""
    backbone, size = extractor.backbone, params.tiling.patch_size
    return backbone_identity(net, backbone, size, extractor.arithmetic) | {
        "scales": list(params.tiling.scales),
        "stride": backbone.dense_trunk().stride,
        "trunk": "batch norms folded" if extractor.whole_image_trunk[1] else "as in patch mode",
    }


def plan(params: Params, split: str, identity: dict, out: Path) -> list[DenseTask]:
    """One dense shard per block of ``features.images_per_shard`` images of the split's
    manifest, keyed by the images' bytes and the identity."""
    table = read_manifest(params.layout.manifests(split), "images.parquet")
    images, files = table.to_pylist(), image_files(table, params.dataset.root)
    sha = image_digests(files)
    per_shard, n_scales = params.features.images_per_shard, len(params.tiling.scales)
    tasks = []
    for number, first in enumerate(range(0, len(images), per_shard)):
        block = images[first : first + per_shard]
        ids = [row["image_id"] for row in block]
        digest = digest_of(1, identity, "dense", ids, [sha[i] for i in ids])
        members = [(r["image_id"], files[r["image_id"]], r["width"], r["height"]) for r in block]
        tasks.append(DenseTask(out / shard_name(number), len(block) * n_scales, digest, members))
    return tasks


def describe(
    extractor: FeatureExtractor,
    image_id: str,
    size: tuple[int, int],
    resized: list,
    scales: list[float],
    patch_size: int,
) -> ImageMaps:
    """The maps of one image (original `size`: width, height) from its resized versions
    ``[(pixels, factor), ...]``, one per scale of `scales`."""
    maps = [m.numpy() for m in trunk_maps(extractor, resized, patch_size)]
    return ImageMaps(image_id, *size, scales, [float(f) for _, f in resized], maps)


def dense_split(
    params: Params, net: str, extractor: FeatureExtractor, split: str, workers: int
) -> None:
    """Compute the missing dense shards of one split, write its index and the time taken."""
    layout, scales, size = params.layout, list(params.tiling.scales), params.tiling.patch_size
    identity = dense_identity(params, net, extractor)
    out = layout.dense(net, split)
    tasks = plan(params, split, identity, out)
    attrs = shard_attributes(identity, extractor.device)
    log.info("%s dense maps of %s on %s, %d scales", net, split, extractor.device, len(scales))

    def write_missing(todo: list[DenseTask]) -> Iterator[tuple[DenseTask, str]]:
        members = [m for t in todo for m in t.images]
        dataset = ResizedImages([m[1] for m in members], scales, size)
        loaded = iter(chunk_loader(dataset, extractor.device, workers))
        started = time.perf_counter()  # the trunk was compiled before: `dense_identity`
        with tqdm(total=len(members), unit="img", desc=f"dense {split}", mininterval=1) as bar:
            for task in todo:
                block = []
                for image_id, _, width, height in task.images:
                    resized = next(loaded)
                    if isinstance(resized, Exception):
                        raise resized
                    block.append(
                        describe(extractor, image_id, (width, height), resized, scales, size)
                    )
                    bar.update()
                yield task, write_dense_shard(task.path, block, task.digest, attrs)
        seconds = time.perf_counter() - started
        record_backbone_time(
            layout.timing(net, f"dense-{split}"), len(members), seconds, str(extractor.device)
        )

    update_shards(out, tasks, write_missing)
    rule = extractor.backbone.dense_trunk().window_rule(size)
    write_window_rule(layout.window_rule(net, split), rule, identity)
