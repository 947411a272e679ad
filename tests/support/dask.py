"""A Dask cluster for tests: two workers on loopback, closed when the module's tests end."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_scheduler(*, processes: bool) -> Iterator[str]:
    """The address of a 2-worker, 1-thread LocalCluster (processes=True where the code under
    test needs a process per worker, e.g. LightGBM's network or numba kernels)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster.scheduler_address
