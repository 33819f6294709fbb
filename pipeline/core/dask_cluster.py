"""Connecting to a Dask cluster for joblib's dask backend (`pipeline.core.parallel.cluster_jobs`).

Imported only when ``cluster.backend`` is ``dask``: `distributed` takes a while to import.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster, Worker, WorkerPlugin
from distributed.comm import connect

from pipeline.core.errors import PipelineError

log = logging.getLogger("pipeline")
CONNECT_SECONDS = 10  # a scheduler on the network answers in well under a second


class ProjectDirectory(WorkerPlugin):
    """Moves each worker of a cluster to the project directory, the workers present and those
    that join later (one restarted after its process died), since every output path of the
    pipeline is relative to it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, worker: Worker) -> None:
        """Called by Dask on every worker: change its working directory."""
        os.chdir(self.path)


@contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Client]:
    """A client of the scheduler at address `scheduler` (``tcp://host:8786``), or of a local
    cluster of `workers` single-threaded worker processes when it is None, with every worker
    moved to this process's directory (`ProjectDirectory`); closed (and the local cluster shut
    down) on leaving. PipelineError when the scheduler cannot be reached or what answers at its
    address is not a Dask scheduler (`check_scheduler`)."""
    if scheduler is not None:
        check_scheduler(scheduler, CONNECT_SECONDS)
    try:
        if scheduler is None:
            local = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(local)
        else:
            local, client = None, Client(scheduler, timeout=f"{CONNECT_SECONDS}s")
    except OSError as err:
        raise PipelineError(f"cluster.scheduler: cannot reach {scheduler!r} ({err})") from None
    try:
        client.register_plugin(ProjectDirectory(os.getcwd()), name="project-directory")
        log.info("Dask scheduler %s", client.scheduler.address)
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()


def check_scheduler(address: str, seconds: float) -> None:
    """Connect to `address` and exchange Dask's handshake within `seconds` in all, before a
    client is made: Dask's own connection waits for the handshake without a deadline (a server
    that never answers hangs it) and reads whatever answers as a Dask frame (an HTTP reply
    becomes an allocation of exabytes). PipelineError naming ``cluster.scheduler`` when nothing
    is reachable there or what answers is not a Dask scheduler."""

    async def handshake() -> None:
        comm = await connect(address, timeout=seconds)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), seconds))
    except TimeoutError:
        raise PipelineError(
            f"cluster.scheduler: {address!r} did not answer as a Dask scheduler within "
            f"{seconds:g} s (a server of another kind, or a stalled one, at that address)"
        ) from None
    except OSError as err:
        raise PipelineError(f"cluster.scheduler: cannot reach {address!r} ({err})") from None
    except Exception as err:  # noqa: BLE001 - any other answer: not Dask's handshake
        raise PipelineError(
            f"cluster.scheduler: {address!r} answered, but not as a Dask scheduler "
            f"({type(err).__name__}); check the address and port"
        ) from None
