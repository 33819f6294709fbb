"""Running stage work on a Dask cluster: where its workers write."""

from __future__ import annotations

import os

from distributed import LocalCluster

from pipeline.core.dask_cluster import dask_client


def test_dask_workers_work_in_the_project_directory_even_after_a_restart(tmp_path, monkeypatch):
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:  # its workers start in pytest's directory
        project = tmp_path / "project"
        project.mkdir()
        monkeypatch.chdir(project)
        with dask_client(cluster.scheduler_address, workers=2) as client:
            assert set(client.run(os.getcwd).values()) == {str(project)}
            monkeypatch.chdir(tmp_path)  # where the nannies (in this process) start a worker
            (restarted, *_) = client.scheduler_info()["workers"]
            client.restart_workers([restarted])
            assert set(client.run(os.getcwd).values()) == {str(project)}
