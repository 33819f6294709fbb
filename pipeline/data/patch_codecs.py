"""The patch shard format: how a patch shard stores its pixels (the codecs of
``shards.compression``), writing a patch shard and reading its pixels back.

Lossless codecs keep ``pixels`` uint8 ``[N, S, S, 3]`` as an HDF5 dataset, one patch per chunk,
through an HDF5 filter: none, gzip, or Blosc2 with LZ4 or Zstd (the filter plugins of the
`hdf5plugin` package, registered on import of this module). h5py's LZF filter is not offered:
it leaves its hash table uninitialised, so the same pixels compress to other bytes from one
run to the next, and shards must be byte-identical. ``jpeg``
stores each patch as a JPEG (``jpeg``: variable-length uint8 ``[N]``), decoded where the pixels
are read (in DataLoader workers for the features stage). The shard attribute ``codec`` names
the codec, so that a reader never guesses.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import hdf5plugin
import numpy as np
from PIL import Image

from pipeline.core.shards import write_shard

if TYPE_CHECKING:
    from pipeline.core.params import Shards

LOSSLESS = ("none", "gzip", "blosc2-lz4", "blosc2-zstd")  # and "jpeg"
LEVELLED = ("gzip", "blosc2-lz4", "blosc2-zstd")  # the codecs that read compression_level


@dataclass(frozen=True)
class PatchCodec:
    """A codec as ``shards.compression`` names it (`LOSSLESS` or ``jpeg``), with its level
    (gzip and Blosc2 0-9; None: 1 for gzip, 5 for Blosc2) and, for ``jpeg``, its quality
    (1-100)."""

    name: str
    level: int | None = None
    quality: int = 90

    @property
    def identity(self) -> tuple[Any, ...]:
        """What of the codec changes a shard's bytes (part of its content digest)."""
        if self.name == "jpeg":
            return (self.name, self.quality)
        return (self.name, self.level) if self.name in LEVELLED else (self.name,)

    def h5_filter(self) -> dict[str, Any]:
        """h5py ``create_dataset`` keywords of a lossless codec's filter."""
        level = self.level
        if self.name == "gzip":
            return {"compression": "gzip", "compression_opts": 1 if level is None else level}
        if self.name.startswith("blosc2-"):
            return dict(
                hdf5plugin.Blosc2(
                    cname=self.name.removeprefix("blosc2-"),
                    clevel=5 if level is None else level,
                    filters=hdf5plugin.Blosc2.SHUFFLE,
                )
            )
        return {}

    def store(self, f: h5py.File, pixels: np.ndarray) -> None:
        """Write `pixels` uint8 ``[N, S, S, 3]`` RGB into the open shard `f` with this codec,
        and the attribute ``codec``."""
        f.attrs["codec"] = self.name
        if self.name == "jpeg":
            data = np.empty(len(pixels), dtype=object)
            data[:] = [encode_jpeg(patch, self.quality) for patch in pixels]
            f.create_dataset("jpeg", data=data, dtype=h5py.vlen_dtype(np.uint8), track_times=False)
            f.attrs["patch_size"] = pixels.shape[1] if len(pixels) else 0
            return
        n = len(pixels)
        f.create_dataset(
            "pixels",
            data=pixels,
            chunks=(1, *pixels.shape[1:]) if n else None,
            track_times=False,
            **(self.h5_filter() if n else {}),
        )


def shard_codec(shards: Shards) -> PatchCodec:
    """The codec that the ``shards`` params block names."""
    return PatchCodec(shards.compression, shards.compression_level, shards.jpeg_quality)


def read_pixels(f: h5py.File, rows: slice) -> np.ndarray:
    """The pixels uint8 ``[n, S, S, 3]`` RGB of `rows` of an open patch shard, decoded by the
    codec its ``codec`` attribute names."""
    if f.attrs.get("codec") != "jpeg":
        return f["pixels"][rows]
    encoded = f["jpeg"][rows]
    size = int(f.attrs["patch_size"])
    out = np.empty((len(encoded), size, size, 3), np.uint8)
    for k, data in enumerate(encoded):
        out[k] = decode_jpeg(data)
    return out


def encode_jpeg(patch: np.ndarray, quality: int) -> np.ndarray:
    """One patch ``[S, S, 3]`` uint8 RGB as JPEG bytes (a uint8 array): Pillow's libjpeg at
    `quality`, no chroma subsampling (4:4:4: a patch's colour edges are what a net sees)."""
    buffer = io.BytesIO()
    Image.fromarray(patch).save(buffer, "JPEG", quality=quality, subsampling=0)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def decode_jpeg(data: np.ndarray) -> np.ndarray:
    """The RGB pixels ``[S, S, 3]`` uint8 of JPEG bytes written by `encode_jpeg`."""
    with Image.open(io.BytesIO(data.tobytes())) as image:
        return np.array(image.convert("RGB"))


PATCH_FORMAT_VERSION = 2  # 2: the pixels' codec in the attribute ``codec``


def write_patch_shard(
    path: Path,
    *,
    pixels: np.ndarray,
    label: np.ndarray,
    image_id: Sequence[str],
    patch: np.ndarray,
    digest: str,
    codec: PatchCodec,
) -> str:
    """Write one patch shard atomically (see `write_shard`) and return its SHA-256.

    Takes pixels ``[N, S, S, 3]`` uint8 RGB (stored by `codec`), label int16 ``[N]``, image
    ids, patch indices ``[N]`` and the content digest.
    """
    return write_shard(
        path,
        store=lambda f: codec.store(f, pixels),
        label=label,
        image_id=image_id,
        patch=patch,
        format_version=PATCH_FORMAT_VERSION,
        digest=digest,
    )
