"""Giving the heap memory that glibc keeps after frees back to the operating system.

Convolutions over images of varying sizes (dense maps, windows, uncached heat maps) and the
patches cut from whole images allocate and free large blocks of a different size for every
image; glibc keeps the freed blocks in its heap for reuse, and reuse fails as sizes change, so a
CPU process grows image after image (the trunk maps of effnet-lite0 at 224 px: from 0.8 GB to
2.8 GB over 16 images, flat at 0.8 GB when the heap is trimmed before each image; the patches
of 400 images cut and described by the tiny net: 1 MB a shard of 8 images, flat when trimmed).
`release_free_heap` trims it: about a millisecond a call.
"""

from __future__ import annotations

from pipeline.core.libc import libc_function

MALLOC_TRIM = libc_function("malloc_trim")  # glibc only


def release_free_heap() -> None:
    """Return the free memory of the C heap to the operating system (glibc's
    ``malloc_trim(0)``); nothing where the C library has no such call."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)
