"""Functions of the C library that Python does not wrap (`malloc_trim`, `sigaltstack`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once (finding it runs ``ldconfig``); None off Linux or when it
    cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def libc_function(name: str) -> ctypes._CFuncPtr | None:
    """The C library's function `name`, to call through ctypes (arguments and result as C
    ints unless the caller sets ``argtypes``/``restype``); None off Linux, where the library
    cannot be loaded, or where it has no such function (musl has no ``malloc_trim``)."""
    return getattr(_libc(), name, None)
