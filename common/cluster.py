"""Where `--engine dask` runs: an existing scheduler, or a LocalCluster sized to this machine.

The address comes from the caller (`--scheduler`), else `SURFACER_DASK_SCHEDULER`, else a
LocalCluster is started for the command: a single-threaded worker process per available
core (`SURFACER_DASK_WORKERS`), each with a memory limit (`SURFACER_DASK_MEMORY_LIMIT`,
default 80 % of the machine's memory shared by the workers). Workers spill partitions to
disk (`SURFACER_DASK_SPILL_DIR`, default data_dir/dask) from 60 % of their limit and pause
new tasks at 80 %, so a step bigger than memory slows down instead of being killed.

A command opens one client and every Dask step inside it reuses it (`dask_client` is
re-entrant), so a training job does not start a cluster per issue. distributed is imported
only here and only when a client is opened.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ClusterError
from common.machine import available_cores, total_memory_bytes
from common.progress import Progress
from common.settings import Settings, get_settings

# Fractions of a worker's memory limit (distributed's own settings, made explicit here).
MEMORY_TARGET = 0.6  # start spilling the least recently used data to disk
MEMORY_SPILL = 0.7  # spill based on the process memory, not only on managed data
MEMORY_PAUSE = 0.8  # stop starting tasks until memory is back under
MEMORY_TERMINATE = 0.95  # the nanny restarts the worker (its tasks are retried)
AUTO_MEMORY_SHARE = 0.8  # of physical memory, split between the LocalCluster's workers

_active: list[Any] = []  # clients opened by dask_client, innermost last


@dataclass(frozen=True)
class ClusterPlan:
    """What `dask_client` connects to or starts, in words a user can check."""

    scheduler: str | None  # an address, or None for a LocalCluster
    n_workers: int
    memory_limit: int  # bytes per worker (0: no limit)
    spill_dir: Path

    def describe(self) -> str:
        if self.scheduler:
            return f"dask: scheduler {self.scheduler}"
        limit = f"{self.memory_limit / 1e9:.1f} GB" if self.memory_limit else "no"
        return (
            f"dask: local cluster of {self.n_workers} worker(s) x 1 thread, {limit} memory "
            f"limit each, spill to {self.spill_dir} from {MEMORY_TARGET:.0%} of it"
        )


def parse_bytes(text: str) -> int:
    """'4GB', '2 GiB', '512MB' or a byte count -> bytes; ValueError naming the bad value."""
    from dask.utils import parse_bytes as dask_parse

    try:
        value = int(dask_parse(str(text).strip()))
    except (ValueError, TypeError, KeyError):
        raise ValueError(
            f"memory limit must look like '4GB', '2GiB' or 'auto', got {text!r}"
        ) from None
    if value <= 0:
        raise ValueError(f"memory limit must be positive, got {text!r}")
    return value


def plan_cluster(
    scheduler: str | None = None,
    *,
    settings: Settings | None = None,
    n_workers: int | None = None,
) -> ClusterPlan:
    """Resolve the scheduler address, worker count, per-worker limit and spill folder."""
    settings = settings or get_settings()
    address = scheduler or settings.dask_scheduler
    workers = n_workers or settings.dask_workers or available_cores()
    if settings.dask_memory_limit.strip().lower() == "auto":
        total = total_memory_bytes()
        limit = int(total * AUTO_MEMORY_SHARE / workers) if total else 0
    else:
        limit = parse_bytes(settings.dask_memory_limit)
    spill = (settings.dask_spill_dir or settings.data_dir / "dask").resolve()
    return ClusterPlan(address or None, int(workers), limit, spill)


def _memory_config() -> dict[str, Any]:
    return {
        "distributed.worker.memory.target": MEMORY_TARGET,
        "distributed.worker.memory.spill": MEMORY_SPILL,
        "distributed.worker.memory.pause": MEMORY_PAUSE,
        "distributed.worker.memory.terminate": MEMORY_TERMINATE,
    }


class _NoComputeFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def quiet_task_failures() -> None:
    """Drop distributed's "Compute Failed" worker log records in this process (idempotent)."""
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _NoComputeFailed) for f in log.filters):
        log.addFilter(_NoComputeFailed())


@contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    settings: Settings | None = None,
    n_workers: int | None = None,
    processes: bool = True,
    announce: bool = False,
) -> Iterator[Any]:
    """A distributed Client for one command: reuses the one already open, else connects to
    `scheduler` (or SURFACER_DASK_SCHEDULER), else starts a LocalCluster (see the module doc).

    `announce` prints where the work runs (and the dashboard link when there is one) on stderr.
    """
    if _active and (scheduler is None or scheduler == _address(_active[-1])):
        yield _active[-1]
        return
    import dask
    from distributed import Client, LocalCluster

    plan = plan_cluster(scheduler, settings=settings, n_workers=n_workers)
    with ExitStack() as stack:
        stack.enter_context(dask.config.set(_memory_config()))
        if plan.scheduler:
            try:
                client = stack.enter_context(Client(plan.scheduler, timeout="10s"))
            except OSError as exc:
                raise ValueError(
                    f"cannot reach the Dask scheduler at {plan.scheduler!r} ({exc}); start one "
                    "(dask scheduler) or unset SURFACER_DASK_SCHEDULER for a local cluster"
                ) from None
        else:
            plan.spill_dir.mkdir(parents=True, exist_ok=True)
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=plan.n_workers,
                    threads_per_worker=1,
                    processes=processes,
                    memory_limit=plan.memory_limit or None,
                    local_directory=str(plan.spill_dir),
                    # any free port: the HTTP server (health, metrics) starts either way,
                    # and a fixed one collides with other clusters on the machine
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster))
            # A failed task's exception reaches the command through the client, which prints
            # a user error as one `error:` line (and anything else with its traceback); the
            # worker's own "Compute Failed" log, the same exception with a traceback, only
            # buried that line under one.
            client.run(quiet_task_failures)
            quiet_task_failures()
        if announce:
            # A local cluster runs without a dashboard (it needs bokeh, not a dependency; the
            # progress bar says how far the work is); a remote scheduler may serve one.
            link = getattr(client, "dashboard_link", None)
            has_dashboard = plan.scheduler is not None
            print(
                plan.describe() + (f"; dashboard {link}" if link and has_dashboard else ""),
                file=sys.stderr,
            )
        _active.append(client)
        try:
            yield client
        finally:
            _active.remove(client)


def _address(client: Any) -> str | None:
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return None


def current_client() -> Any:
    """The client `dask_client` has open in this process, or None."""
    return _active[-1] if _active else None


def n_workers(client: Any) -> int:
    """Workers the client's scheduler has now (at least 1)."""
    return max(len(client.scheduler_info().get("workers", {})), 1)


def gather_with_progress(
    client: Any, tasks: Sequence[Any], desc: str, *, progress: bool = False, unit: str = "task"
) -> list[Any]:
    """Compute delayed objects (or wait for futures) on `client`, a progress bar per task
    done, and return their results in order."""
    from concurrent.futures import CancelledError

    from distributed import Future, KilledWorker, as_completed

    pending = [i for i, t in enumerate(tasks) if not isinstance(t, Future)]
    futures = list(tasks)
    for i, future in zip(pending, client.compute([tasks[i] for i in pending]), strict=True):
        futures[i] = future
    try:
        with Progress(desc, len(futures), unit=unit, enabled=progress) as bar:
            for _ in as_completed(futures):
                bar.update(1)
        return client.gather(futures)
    except (CancelledError, KilledWorker) as exc:  # FutureCancelledError is a CancelledError
        raise ClusterError(
            f"{desc}: the Dask cluster lost a worker and the work it held ({type(exc).__name__}); "
            f"most often a worker ran out of memory ({_worker_limits(client)}): raise "
            "SURFACER_DASK_MEMORY_LIMIT, or give the cluster more memory"
        ) from None


def _worker_limits(client: Any) -> str:
    """The workers' memory limits, as the scheduler knows them now."""
    try:
        workers = client.scheduler_info().get("workers", {}).values()
        limits = sorted({int(w.get("memory_limit") or 0) for w in workers})
    except Exception:  # the scheduler itself may be gone
        return "limits unknown"
    if not limits or limits == [0]:
        return "no memory limit set"
    return "limit " + ", ".join(f"{b / 1e9:.1f} GB" for b in limits) + " per worker"
