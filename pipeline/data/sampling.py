"""Seeded background subsampling of labelled patches (docs/method.md 1.3)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from pipeline.core.equal_runs import string_runs
from pipeline.data.labeling import BACKGROUND


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """Return a generator that depends only on `seed` and `image_id`, so that what is drawn for an
    image is the same on every machine, in any order and with any number of workers."""
    id_key = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), id_key])


def kept_patches(
    labels: np.ndarray, image_id: str, background_fraction: float, seed: int
) -> np.ndarray:
    """Choose the training patches of one image.

    Takes the image's patch labels ``[N]`` (-1 ignored, 0 background, >0 class) in patch order.
    Returns the sorted patch indices kept: every positive patch plus ``round(fraction * n_bg)``
    background patches drawn without replacement from the image's own seeded generator.
    Ignored patches are never kept.
    """
    labels = np.asarray(labels)
    background = np.flatnonzero(labels == BACKGROUND)
    n_keep = int(np.floor(background_fraction * len(background) + 0.5))
    drawn = image_rng(seed, image_id).choice(background, size=n_keep, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(labels > 0), drawn]))


def select_training_patches(patches: pa.Table, background_fraction: float, seed: int) -> pa.Table:
    """The rows of a patches table (sorted by image id) that training uses: every positive
    patch and, per image, a seeded `background_fraction` of its background (`kept_patches`)."""
    labels = patches["label"].to_numpy()
    kept = [
        start + kept_patches(labels[start:end], image_id, background_fraction, seed)
        for image_id, start, end in string_runs(patches["image_id"])
    ]
    return patches.take(pa.array(np.concatenate(kept) if kept else [], type=pa.int64()))
