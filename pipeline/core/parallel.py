"""Running a function over many items (images, shards) in worker processes, and keeping the
bad inputs it meets: each is logged as one line and counted, or stops the run when strict."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from joblib import Parallel, delayed, parallel_config
from tqdm import tqdm

from pipeline.core.atomic import write_json
from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.core.params import Cluster

log = logging.getLogger("pipeline")
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Problems:
    """Bad inputs met by a stage: each is logged as one line and counted; with `strict` the
    first one stops the stage."""

    strict: bool
    found: list[str] = field(default_factory=list)

    def report(self, error: PipelineError) -> None:
        """Record `error`; raise it again in strict mode."""
        if self.strict:
            raise error
        log.warning("skipped: %s", error)
        self.found.append(str(error))

    def write(self, path: Path, **summary: Any) -> None:
        """Write ``{"skipped": n, "problems": [...], **summary}`` as JSON and log the count."""
        write_json({"skipped": len(self.found), "problems": self.found, **summary}, path)
        if self.found:
            log.warning("%d input(s) skipped; see %s", len(self.found), path)


def _catching(fn: Callable[[T], R]) -> Callable[[T], R | PipelineError]:
    def call(item: T) -> R | PipelineError:
        try:
            return fn(item)
        except PipelineError as err:
            return err

    return call


def parallel_map(
    fn: Callable[[T], R], items: Iterable[T], *, jobs: int, desc: str, unit: str = "it"
) -> Iterator[R | PipelineError]:
    """Apply `fn` to every item with joblib over `jobs` processes (`ALL_WORKERS`: every worker
    of the active backend, a Dask cluster inside `cluster_jobs`), in order, with a progress bar.

    A PipelineError raised by `fn` is returned in place of the result, so that the caller decides
    whether to skip the item or stop.
    """
    items = list(items)
    call = _catching(fn)
    if jobs == 1:
        results: Iterable[R | PipelineError] = map(call, items)
    else:
        results = Parallel(n_jobs=jobs, return_as="generator")(delayed(call)(i) for i in items)
    with tqdm(total=len(items), desc=desc, unit=unit, dynamic_ncols=True) as bar:
        for result in results:  # a caller that stops early closes this generator, and the bar
            bar.update()
            yield result


ALL_WORKERS = -1  # `parallel_map` jobs: every worker of the active joblib backend


@contextmanager
def cluster_jobs(cluster: Cluster, jobs: int) -> Iterator[int]:
    """Where `parallel_map` runs inside the context; yields the `jobs` to give it.

    ``local``: `jobs` processes on this machine (joblib's default backend). ``dask``: joblib's
    dask backend on a client of the scheduler at ``cluster.scheduler``, or of a local cluster of
    `jobs` single-threaded worker processes when it is None (`dask_client`: workers moved to
    the project directory); tasks of a worker that dies are re-run by Dask on another, so the
    results are those of a local run. PipelineError when the scheduler cannot be reached.
    """
    if cluster.backend == "local":
        yield jobs
        return
    from pipeline.core.dask_cluster import dask_client

    with dask_client(cluster.scheduler, jobs), parallel_config(backend="dask"):
        yield ALL_WORKERS
