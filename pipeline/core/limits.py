"""The process's own limits in words, for the errors that hitting them causes (a thread that
cannot start, a library that cannot be mapped, memory that cannot be allocated): the user
reads which limit and which settings lower the need, not a damaged-file message."""

from __future__ import annotations

import resource

LOWER_THE_NEED = "lower jobs, features.workers, features.batch_size or OMP_NUM_THREADS"


def address_space_limit() -> str:
    """The process's address-space limit (``ulimit -v``) in words: ``no limit`` or ``only
    N.N GiB``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return "no limit" if soft == resource.RLIM_INFINITY else f"only {soft / 2**30:.1f} GiB"


def out_of_threads(message: str) -> bool:
    """Whether a library's error `message` says a thread could not be started (pyarrow's
    ``Failed to launch worker thread``, OpenMP's (libgomp) ``Thread creation failed``)."""
    return "launch worker thread" in message or "Thread creation failed" in message


def limits_hint() -> str:
    """What to do when the process ran out of threads or address space."""
    return (
        f"the process ran out of threads or address space (ulimit -v: "
        f"{address_space_limit()}, ulimit -u: {_limit(resource.RLIMIT_NPROC)}); "
        f"{LOWER_THE_NEED}, or raise the limits"
    )


def _limit(kind: int) -> str:
    soft, _ = resource.getrlimit(kind)
    return "no limit" if soft == resource.RLIM_INFINITY else str(soft)
