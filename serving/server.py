"""Running the service under uvicorn: worker start-up, the HTTP protocol, supervision.

- `app_from_env`: the app factory each uvicorn worker calls (settings and serve options come
  from the environment `surfacer serve` sets); it tunes the cyclic GC after each model load
  (`settle_heap`) and logs how long its start-up took, or why it failed.
- `ArrivalProtocol`: uvicorn's httptools protocol, stamping each request's arrival time and
  the requests then in flight, so load shedding (`serving.middleware`) sees event-loop queueing.
- `WorkerSupervisor`: uvicorn's multiprocess supervisor that says why a worker is replaced
  (missed health check, crash, failed start) instead of "Child process died".
- `FlagWriterProcess`: the flag writer (`python -m serving.flag_writer`) as a child of the
  server, restarted within a second when it dies and drained on shutdown.
- `run_server`: all of the above, for `surfacer serve`.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.middleware import ARRIVAL_KEY, BACKLOG_KEY

log = logging.getLogger("uvicorn.error")

# How `surfacer serve` hands its options to the workers (which build the app from the
# environment): settings ride on SURFACER_*, these are serving-only.
ENV_FLAGS_JSONL = "SURFACER_SERVE_FLAGS_JSONL"
ENV_SAMPLE_RATE = "SURFACER_SERVE_SAMPLE_RATE"
ENV_EXTERNAL_WRITER = "SURFACER_SERVE_EXTERNAL_FLAG_WRITER"
# prometheus_client's multiprocess mode (serving.metrics.MULTIPROC_DIR_ENV; not imported here
# so that this process does not import prometheus_client before the variable is set).
ENV_PROMETHEUS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# uvicorn kills a worker that does not answer its health check in time. A worker answers
# only once its interpreter has started and imported the command's main module again (the
# spawn start method), which on a loaded machine takes a multiple of an idle one: the
# timeout is this multiple of the server's own measured start-up, within these bounds.
HEALTHCHECK_FACTOR = 4.0
HEALTHCHECK_MIN_S = 30
HEALTHCHECK_MAX_S = 600
# Restart delay of the flag writer: quick, with backoff when it keeps dying at start.
WRITER_RESTART_S = 0.2
WRITER_RESTART_MAX_S = 5.0

# Tracked-container allocations (net of frees) between young collections: Python's default,
# 700, collects ~24 times during one 1,000-item batch, walking and promoting objects the
# request frees a moment later anyway.
GC_YOUNG_THRESHOLD = 50_000


def settle_heap(_model: Any = None) -> None:
    """Tune the cyclic collector for a serving process: freeze what lives now, collect rarely.

    `gc.freeze()` hides what is alive now (model, libraries) from the collector: the full
    collections scanned the ~270k long-lived objects of the loaded model and libraries, ~20
    ms per batch on average and 200-400 ms spikes, measured in-process; frozen, ~2 ms and
    spikes under 110 ms. Run after each model swap: unfreezing first lets the old model's
    cycles be collected before the new heap is frozen.

    The young-generation threshold goes from 700 to `GC_YOUNG_THRESHOLD`: a request's
    objects are freed by reference counting when it ends, so with the higher threshold a
    1,000-item batch runs no collection instead of ~23 young and 2 middle ones (2.4-2.8 ms
    of the batch, timed with `gc.callbacks`). Cyclic garbage still triggers a collection
    once 50k containers are pending, so memory stays bounded.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def process_age_s() -> float:
    """Seconds since this process started (wall clock)."""
    import psutil

    return max(0.0, time.time() - psutil.Process().create_time())


def app_from_env() -> Any:
    """App factory of a uvicorn worker: settings and serve options from the environment."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    pid = os.getpid()
    try:
        from common.settings import get_settings
        from serving.app import create_app
        from serving.flag_writer import JsonlFlagSink

        settings = get_settings()
        flags_path = os.environ.get(ENV_FLAGS_JSONL)
        rate = os.environ.get(ENV_SAMPLE_RATE)
        app = create_app(
            settings,
            flag_sink=JsonlFlagSink(flags_path) if flags_path else None,
            sample_rate=float(rate) if rate else None,
            multiprocess_metrics=bool(os.environ.get(ENV_PROMETHEUS_DIR)),
            external_flag_writer=bool(os.environ.get(ENV_EXTERNAL_WRITER)),
            on_model_swap=settle_heap,
        )
    except Exception:
        log.exception("worker [%d] could not build the app; it exits", pid)
        raise
    log.info(
        "worker [%d] built the app in %.1fs (%.1fs CPU), %.1fs after its process started; "
        "loading the model next",
        pid,
        time.perf_counter() - t0,
        time.process_time() - cpu0,
        process_age_s(),
    )
    return app


class ArrivalProtocol(HttpToolsProtocol):
    """httptools protocol that stamps each request with when it arrived and how many
    requests this worker had in flight then (read by the load-shedding middleware)."""

    def on_headers_complete(self) -> None:
        self.scope[ARRIVAL_KEY] = time.perf_counter()  # type: ignore[literal-required]
        self.scope[BACKLOG_KEY] = len(self.tasks)  # type: ignore[literal-required]
        super().on_headers_complete()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def healthcheck_timeout_s(startup_s: float) -> int:
    """uvicorn's worker health-check timeout for a server whose own start-up took
    `startup_s` seconds (a worker repeats most of it before it can answer)."""
    return int(min(HEALTHCHECK_MAX_S, max(HEALTHCHECK_MIN_S, HEALTHCHECK_FACTOR * startup_s)))


def _supervisor_class() -> type:
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    class WorkerSupervisor(Multiprocess):
        """uvicorn's Multiprocess, saying why it replaces a worker."""

        startup_failed = False

        def keep_subprocess_alive(self) -> None:
            if self.should_exit.is_set():
                return
            timeout = self.config.timeout_worker_healthcheck
            for idx, process in enumerate(self.processes):
                if process.is_alive(timeout=timeout):
                    continue
                hung = process.process.is_alive()
                process.kill()
                process.join()
                code = process.exitcode
                if hung:
                    log.error(
                        "worker [%s] did not answer the health check within %ss (still "
                        "importing on a busy machine, or stuck); killed it, starting another",
                        process.pid,
                        timeout,
                    )
                elif code == STARTUP_FAILURE:
                    log.error(
                        "worker [%s] failed to start (its error is logged above); stopping "
                        "the server, since every new worker would fail the same way",
                        process.pid,
                    )
                    self.startup_failed = True
                    self.should_exit.set()
                    return
                else:
                    log.error("worker [%s] %s; starting another", process.pid, _exit_reason(code))
                if self.should_exit.is_set():
                    return
                replacement = Process(self.config, self.sockets)
                replacement.start()
                self.processes[idx] = replacement

    return WorkerSupervisor


class FlagWriterProcess:
    """The server's flag writer as child processes: one drains (it holds the spool's writer
    lock), a warm spare waits for the lock, so a writer that dies is replaced within about a
    tenth of a second, not after a cold start; each exited one is started again."""

    def __init__(
        self,
        spool_dir: Path,
        *,
        jsonl: Path | None,
        sample_rate: float | None,
        processes: int = 2,
    ) -> None:
        self.cmd = [sys.executable, "-m", "serving.flag_writer", "--spool", str(spool_dir)]
        if jsonl is not None:
            self.cmd += ["--jsonl", str(jsonl)]
        if sample_rate is not None:
            self.cmd += ["--sample-rate", str(sample_rate)]
        self.cmd += ["--parent", str(os.getpid())]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * processes
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> FlagWriterProcess:
        for slot in range(len(self.procs)):
            self._spawn(slot)
            t = threading.Thread(
                target=self._watch, args=(slot,), name=f"flag-writer-watch-{slot}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def _spawn(self, slot: int) -> float:
        with self._lock:
            proc = self.procs[slot] = subprocess.Popen(self.cmd)
        log.info("flag writer process started [%d]", proc.pid)
        return time.monotonic()

    def _watch(self, slot: int) -> None:
        delay = WRITER_RESTART_S
        started = time.monotonic()
        while not self._stopping.is_set():
            proc = self.procs[slot]
            assert proc is not None
            code = proc.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            delay = WRITER_RESTART_S if lived > 10 else min(WRITER_RESTART_MAX_S, delay * 2)
            log.error(
                "flag writer process [%d] %s; the spare takes over, another starts in %.1fs",
                proc.pid,
                _exit_reason(code),
                delay,
            )
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            started = self._spawn(slot)

    def stop(self, timeout_s: float = 40.0) -> None:
        """Ask the writers to store what is left in the spool and exit (killed past timeout)."""
        self._stopping.set()
        with self._lock:
            procs = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "flag writer [%d] did not stop within %.0fs; killing it", proc.pid, timeout_s
                )
                proc.kill()
                proc.wait()


def run_server(
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    spool_dir: Path,
    flags_jsonl: Path | None,
    sample_rate: float | None,
) -> None:
    """uvicorn with `workers` workers, the flag writer beside them; returns after shutdown.

    The environment must already carry the settings and serve options (`surfacer serve`)."""
    import uvicorn

    startup_s = process_age_s()
    timeout = healthcheck_timeout_s(startup_s)
    os.environ[ENV_EXTERNAL_WRITER] = "1"
    config = uvicorn.Config(
        "serving.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,  # request metrics cover it; a log line per request costs throughput
        loop="uvloop",
        http=ArrivalProtocol,
        timeout_worker_healthcheck=timeout,
    )
    writer = FlagWriterProcess(spool_dir, jsonl=flags_jsonl, sample_rate=sample_rate).start()
    log.info("server start-up took %.1fs here; worker health-check timeout %ds", startup_s, timeout)
    server = uvicorn.Server(config)
    # A one-worker uvicorn re-raises the SIGTERM it shut down for once it is done: catch it
    # here, stop the flag writer, then let it end the process as usual.
    terminated: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: terminated.append(sig))
    failed = False
    try:
        if workers > 1:
            sock = config.bind_socket()
            supervisor = _supervisor_class()(config, sockets=[sock])
            supervisor.run()
            failed = supervisor.startup_failed
        else:
            server.run()
            failed = not server.started
    except KeyboardInterrupt:
        pass
    finally:
        # Workers are gone and their segments sealed: the writer stores the rest and exits.
        writer.stop()
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        signal.raise_signal(signal.SIGTERM)
    if failed:
        raise RuntimeError("the server did not start: a worker failed; its error is logged above")
