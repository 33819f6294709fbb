"""Layers trained from image-level labels alone on cached dense maps (docs/method.md, weak
supervision and class activation maps): no box is ever read.

- Weak (Oquab et al. 2015): the adaptation layers over every window of every scale, the image
  score of class c the maximum of its logit over windows and scales.
- Full image (Zhou et al. 2016): one linear layer on the descriptor of the whole image at scale
  1; for nets whose descriptor is the average of the maps, its class activation map
  ``M_c = sum_k w_ck f_k(x, y)`` (plus the bias) needs no other forward pass.

Both minimise the sum over classes of the logistic loss ``log(1 + exp(-y_c f_c))`` with
``y_c = +1`` (a non-difficult object of c in the image), ``-1`` (none), ``0`` (difficult only:
ignored), on the hold-out/plateau schedule of the patch head.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.core.heap_trim import release_free_heap
from pipeline.core.params import Head as HeadParams
from pipeline.core.scratch_rows import DiskRowsWriter, disk_rows_writer
from pipeline.features.dense_cache import DenseImageReader, ImageMaps, image_windows
from pipeline.features.trunks import WindowRule, apply_rule
from pipeline.trained.head import (
    EpochLog,
    FittedHead,
    build_head,
    holdout_mask,
    train_on_plateaus,
)


class WindowDescriptors(Sequence[torch.Tensor]):
    """The descriptors ``[P_i, d]`` (float16, CPU) of every window of every scale of each image
    of a dense cache, in cache order, computed from the image's maps when asked: memory holds
    the images of one batch, never the training set's windows (6 MB per image at 224 px)."""

    def __init__(self, images: DenseImageReader, rule: WindowRule, device: torch.device) -> None:
        self.images, self.rule, self.device = images, rule, device

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):  # type: ignore[override]  # an int
        """The window descriptors of image `index`."""
        return image_windows(self.rule, self.images[index], self.device).descriptors.half()


class StoredWindows(Sequence[torch.Tensor]):
    """The descriptors of `WindowDescriptors` computed once into a temporary file of float16
    rows (`disk_rows_writer`) and read back one image at a time (one contiguous read each):
    the same values, without recomputing the windows at every epoch."""

    def __init__(self, windows: WindowDescriptors, writer: DiskRowsWriter) -> None:
        counts = []
        for index in tqdm(range(len(windows)), unit="img", desc="windows", mininterval=1):
            block = windows[index].numpy()
            writer.append(block)
            counts.append(len(block))
        self.rows = writer.rows()
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):  # type: ignore[override]  # an int
        """The window descriptors ``[P_i, d]`` float16 of image `index`."""
        return self.rows[int(self.offsets[index]) : int(self.offsets[index + 1])]


@contextmanager
def training_windows(
    windows: WindowDescriptors, scratch: Path, source: Path
) -> Iterator[StoredWindows]:
    """The window descriptors fit-weak trains on, read at every epoch: computed once into a
    temporary file in `scratch` and read back (at 224 px, per 500x375 image and epoch, reading
    takes a fraction of a percent of computing them with AlexNet's FC6 and FC7, a few percent
    of the average pooling of effnet-lite0: docs/benchmarks.md), removed when the block ends.
    The file holds every training image's windows in float16: about 6 MB per image for a
    1280-d net, 29 MB for a 6144-d one. `source` (the dense cache) is named in errors."""
    with disk_rows_writer(scratch, source) as writer:
        yield StoredWindows(windows, writer)


class Picked(Sequence[torch.Tensor]):
    """The items at `indices` of a sequence, fetched when asked (a view: nothing is copied or
    loaded before it is used)."""

    def __init__(self, items: Sequence[torch.Tensor], indices: np.ndarray) -> None:
        self.items, self.indices = items, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):  # type: ignore[override]  # an int
        """Item `index` of the view."""
        return self.items[int(self.indices[index])]


def scale_one(image: ImageMaps) -> int:
    """The index of scale 1 (the whole image) among an image's maps; PipelineError when the
    maps were computed without it."""
    for n, scale in enumerate(image.scales):
        if abs(scale - 1.0) < 1e-6:
            return n
    raise PipelineError(
        f"image {image.image_id}: no map at scale 1 (tiling.scales lacks 1.0), which the "
        "full-image layer and its class activation maps need"
    )


@torch.inference_mode()
def whole_image_descriptor(rule: WindowRule, image: ImageMaps, device: torch.device) -> np.ndarray:
    """The descriptor ``[d]`` float32 of the whole image: the net's window rule over the entire
    scale-1 map (its global average for GAP nets)."""
    maps = torch.from_numpy(np.asarray(image.maps[scale_one(image)])).float()[None].to(device)
    return apply_rule(rule.rule, maps, tuple(maps.shape[-2:])).flatten().cpu().numpy()


SCAN_ROWS = 8192  # window rows per forward pass of a scan: bounds its memory, not its result


def image_logits(
    module: nn.Module, inputs: Iterable[torch.Tensor], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per image, its rows ``[P_i, d]`` as float32 on `device` and the module's logits on them
    ``[P_i, C]``. Images are taken from `inputs` as they are needed and run in groups of
    consecutive images of at most `SCAN_ROWS` rows (an image with more alone), so that memory
    holds a group's windows and activations, whatever the images per step
    (``weak.images_per_batch``: 2 VOC images at 224 px are 4,686 windows, 128 are 300,000,
    whose float32 copy and hidden layer would take 4 GB with a 1280-d net)."""
    group: list[torch.Tensor] = []
    for x in itertools.chain(inputs, [None]):
        if group and (x is None or sum(len(g) for g in group) + len(x) > SCAN_ROWS):
            sizes = [len(g) for g in group]
            release_free_heap()  # the last group's blocks, of other sizes than this one's
            rows = torch.cat(group).to(device).float()
            group = []
            yield from zip(rows.split(sizes), module(rows).split(sizes), strict=True)
        if x is not None:
            group.append(x)


def max_scores(module: nn.Module, inputs: Iterable[torch.Tensor], device: torch.device):
    """Image scores ``[B, C]``: per image, the maximum over its rows ``[P_i, d]`` of the
    module's logits (`image_logits`)."""
    return torch.stack([logits.max(0).values for _, logits in image_logits(module, inputs, device)])


def logistic_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over classes of ``log(1 + exp(-y f))`` (``y = 0`` ignored), mean over images."""
    return (F.softplus(-labels * scores) * (labels != 0)).sum(1).mean()


@torch.inference_mode()
def measure_multilabel(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    batch: int,
    device: torch.device,
) -> tuple[float, float]:
    """Mean logistic loss and the fraction of labelled (image, class) pairs whose score has the
    label's sign, over images given as ``[P_i, d]`` rows."""
    module.eval()
    loss, right, images = 0.0, 0, 0
    for start in range(0, len(inputs), batch):
        taken = range(start, min(start + batch, len(inputs)))
        scores = max_scores(module, (inputs[i] for i in taken), device).cpu()
        y = labels[start : start + batch]
        loss += float(logistic_loss(scores, y)) * len(y)
        right += int(((scores > 0) == (y > 0))[y != 0].sum())
        images += len(y)
    labelled = max(int((labels != 0).sum()), 1)
    return loss / max(images, 1), right / labelled


def chosen_windows(module: nn.Module, inputs: Iterable[torch.Tensor], device: torch.device):
    """Rows ``[B, C, d]`` float32 on `device`: for each image and class, the row where the
    module (in eval mode, no dropout) gives the class its highest logit, i.e. where max-pooling
    sends the gradient. The images are scanned as `image_logits` runs them."""
    module.eval()
    with torch.no_grad():
        chosen = [x[logits.argmax(0)] for x, logits in image_logits(module, inputs, device)]
    module.train()
    return torch.stack(chosen)


def fit_image_labels(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: np.ndarray,
    image_ids: Sequence[str],
    config: HeadParams,
    device: torch.device,
    on_epoch: Callable[[EpochLog], None] | None = None,
    lr_key: str = "weak.lr",
) -> FittedHead:
    """Train `module` (rows ``[P, d]`` -> logits ``[P, C]``) from image labels ``[N, C]`` in {-1,
    0, +1}, the rows of image i being ``inputs[i]`` (fetched batch by batch, so that `inputs`
    may compute them on demand, as `WindowDescriptors` does): each image's score of class c is
    the maximum of its rows' logits, `config.batch_size` images per SGD step, a seeded
    `config.val_fraction` of the images held out. The gradient of a maximum flows through its
    row alone, so each step finds that row (without dropout) and trains on it (with dropout).
    Training loss and accuracy in the log are running means over the epoch's steps; hold-out
    ones are measured after it."""
    held = holdout_mask(np.asarray(image_ids), config.val_fraction, config.seed)
    y = torch.from_numpy(np.asarray(labels, np.float32))
    train, val = Picked(inputs, np.flatnonzero(~held)), Picked(inputs, np.flatnonzero(held))
    y_train, y_val = y[torch.from_numpy(~held)], y[torch.from_numpy(held)]
    order_rng = torch.Generator().manual_seed(config.seed)
    running: dict[str, float] = {}
    classes = torch.arange(y.shape[1])

    def one_epoch(optimiser: torch.optim.Optimizer) -> None:
        order = torch.randperm(len(train), generator=order_rng).tolist()
        loss_sum = right = 0.0
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            chosen = chosen_windows(module, (train[r] for r in rows), device)  # [B, C, d]
            scores = module(chosen)[:, classes, classes]  # class c's logit at its own row
            target = y_train[rows].to(device)
            loss = logistic_loss(scores, target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += loss.item() * len(rows)
            right += float((((scores > 0) == (target > 0)) & (target != 0)).sum())
        running["loss"] = loss_sum / max(len(order), 1)
        running["accuracy"] = right / max(int((y_train != 0).sum()), 1)

    def measure() -> tuple[float, float, float, float]:
        val_loss, val_accuracy = measure_multilabel(module, val, y_val, config.batch_size, device)
        return running["loss"], running["accuracy"], val_loss, val_accuracy

    started = time.perf_counter()
    history = train_on_plateaus(module, config, device, one_epoch, measure, on_epoch, lr_key)
    seconds = time.perf_counter() - started
    dim = int(inputs[0].shape[1])
    shape = {"dim": dim, "layers": config.layers, "hidden": config.hidden,
             "outputs": int(labels.shape[1])}  # fmt: skip
    return FittedHead(module, history, shape, held, seconds)


def weak_head(dim: int, n_classes: int, config: HeadParams) -> nn.Sequential:
    """The adaptation layers of `config` with one logit per class (no background)."""
    return build_head(
        dim, n_classes, layers=config.layers, hidden=config.hidden, dropout=config.dropout,
        seed=config.seed,
    )  # fmt: skip


def full_image_layer(dim: int, n_classes: int, seed: int) -> nn.Sequential:
    """The full-image classifier: one linear layer, no dropout (as CAM's)."""
    return build_head(dim, n_classes, layers=1, dropout=0.0, seed=seed)


@torch.inference_mode()
def class_activation_maps(layer: nn.Module, image: ImageMaps, stride: int) -> np.ndarray:
    """Per-class activation maps of the full-image layer on an image's scale-1 map,
    ``sigmoid(sum_k w_ck f_k(x, y) + b_c)``: float32 ``[C, H, W]`` at the original image's
    pixels (cells upsampled bilinearly; a cell covers `stride` resized pixels)."""
    n = scale_one(image)
    maps = torch.from_numpy(np.asarray(image.maps[n])).float()
    linear = [m for m in layer if isinstance(m, nn.Linear)][0]
    cam = torch.einsum("ck,khw->chw", linear.weight, maps) + linear.bias[:, None, None]
    rows, cols = maps.shape[1:]
    span = (round(rows * stride / image.factors[n]), round(cols * stride / image.factors[n]))
    size = (max(span[0], image.height), max(span[1], image.width))
    full = F.interpolate(cam[None], size=size, mode="bilinear", align_corners=False)[0]
    return torch.sigmoid(full[:, : image.height, : image.width]).numpy()
