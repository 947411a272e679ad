"""`surfacer ingest` (consume the event bus into the online store) and `surfacer replay`
(stream a dataset into a running service in event-time order)."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from common.settings import get_settings

INGEST_HELP = (
    "Consume the platform's event stream (Redis Streams or NATS JetStream) into the online store."
)
STEP_NS = 3_600 * 10**9
REPLAY_HELP = "Stream a dataset into a running service in event-time order (loopback HTTP)."


def _loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"replay sends only to a loopback service (127.0.0.1, ::1), got {url!r}")
    return url.rstrip("/")


def stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGTERM and Ctrl-C set `stop` (the consumer finishes the read in hand, acknowledges
    it and returns); returns a function that restores the previous handlers.

    Why not Python's default KeyboardInterrupt: a process started in the background by a
    non-interactive shell (CI logs, `make test &`, a supervisor script) inherits SIGINT
    *ignored*, so Python installs no KeyboardInterrupt and `kill -INT` did nothing; and
    SIGTERM, what process managers send, killed the consumer without a word. SIGINT is still
    left alone when inherited ignored (the shell's way of keeping Ctrl-C away from
    background jobs); SIGTERM always stops it.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(sig)
        if sig == signal.SIGINT and current == signal.SIG_IGN:
            continue
        previous[sig] = current
        signal.signal(sig, lambda *_: stop.set())

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    return restore


def run_ingest(
    url: str,
    *,
    max_messages: int | None = None,
    drain: bool = False,
    quiet: bool = False,
    count: int = 64,
    rescore: bool = False,
    nice: int = 0,
    idle: bool = False,
    status_s: float = 30.0,
) -> int:
    """Consume `url` into the store the settings name until interrupted; messages handled.

    `rescore`: also re-score touched items, in a child process (`_rescore_process`), so
    that the serving workers can run with settings.online_rescore off and spend their time
    on requests. `nice`: lower this process's CPU priority by that much first, `idle`: run
    it in the idle scheduling class instead (`lower_priority`; the re-scorer inherits
    either)."""
    lower_priority(nice, idle=idle)
    if not rescore:
        return _consume(url, max_messages=max_messages, drain=drain, quiet=quiet, count=count)
    import multiprocessing

    from serving.stream import NatsSource, StreamSource

    # a bad URL fails before the re-scorer starts loading a model
    (NatsSource if url.startswith("nats://") else StreamSource).parse(url)
    settings = get_settings()
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    queued = ctx.Value("q", -1)
    proc = ctx.Process(
        target=_rescore_process,
        args=(settings, stop, queued, os.getpid(), status_s),
        name="surfacer-rescore",
        daemon=True,
    )
    proc.start()
    if not quiet:
        typer.echo(
            f"ingest: re-scoring touched items in process {proc.pid} (flags go to the spool "
            f"in {settings.spool_path})"
        )
    try:
        return _consume(url, max_messages=max_messages, drain=drain, quiet=quiet, count=count)
    finally:
        stop.set()  # the re-scorer makes a last pass over the items due, then exits
        proc.join(60)
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
        if not quiet and queued.value >= 0:
            typer.echo(f"ingest: re-scoring queued {queued.value} items for review")


def _rescore_process(
    settings: Any, stop: Any, queued: Any, parent: int, status_s: float = 30.0
) -> None:
    """`run_rescorer` in its own process until `stop` is set or the ingest process is gone.

    Why a process, not a thread of the consumer: batch scoring and the consumer's planning
    are both CPU work under the GIL, so as threads of one process they shared one core and
    took turns in 5 ms GIL slices (the consumer, re-scoring too, fell behind a 50k events/s
    stream that it kept up alone); as processes the scheduler runs them on separate
    cores when there are any free. Signals: the parent's SIGTERM or Ctrl-C sets `stop`
    (Ctrl-C reaches the whole process group, so it is ignored here)."""
    from serving.online import run_rescorer

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def orphaned() -> None:  # the parent was killed (SIGKILL): stop as it would have
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, name="rescore-parent-watch", daemon=True).start()

    def ready(model: Any) -> None:  # one line operators (and bench/online.py) can wait for
        print(f"ingest: re-scorer ready (model version {model.version})", flush=True)

    def status(line: str) -> None:  # every status_s: is re-scoring keeping up?
        print(f"ingest: {line}", flush=True)

    queued.value = run_rescorer(settings, stop, on_ready=ready, on_status=status, status_s=status_s)


def lower_priority(nice: int, *, idle: bool = False) -> int:
    """Lower this process's CPU priority by `nice` (os.nice; 0 leaves it); the new niceness.
    With `idle`, put it in Linux's idle scheduling class (SCHED_IDLE) instead.

    Why: ingest is throughput-bound and freshness-tolerant (a message applied a few ms
    later changes nothing), a serve worker is latency-bound (GET score p99 < 10 ms). On a
    host where they share cores, the scheduler then runs a worker woken by a request
    ahead of the consumer instead of letting it wait out the consumer's time slice; the
    consumer still gets every cycle the workers leave, so it keeps up as long as the
    cores are not saturated (bench/online.py prints the rate it kept).

    A niced process still gets a share of a busy core (about 10% at nice 10 against one
    nice-0 process) and is not always preempted at once when a worker wakes. SCHED_IDLE
    gets only the cycles no normal process wants and yields at once: on two shared cores
    (`bench/online.py`) it is what kept GET p99 under 10 ms beside 50k events/s. Its cost:
    on a host whose normal processes use every core, an idle-class ingester stops, and
    its stream lag (and the store's staleness) grows until they leave it cycles. Threads
    and child processes started afterwards (the re-scorer) inherit the class."""
    if nice < 0:
        raise ValueError(f"--nice lowers the priority: give 0..19, got {nice}")
    if idle:
        if not hasattr(os, "SCHED_IDLE"):
            raise RuntimeError("--idle needs Linux's SCHED_IDLE scheduling class")
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return os.nice(0)
    return os.nice(nice)


def _consume(url: str, *, max_messages: int | None, drain: bool, quiet: bool, count: int) -> int:
    """Apply the stream at `url` (Redis Streams or NATS JetStream) to the store the settings
    name, archiving when the settings say so, until stopped; messages handled. The store
    and the archive (an `OnlineService`'s, as in a serve worker) are opened once here and
    closed whatever happens."""
    from features.online import store_from_settings
    from serving.online import OnlineService
    from serving.stream import NatsSource, StreamSource

    settings = get_settings()
    nats = url.startswith("nats://")
    source = (NatsSource if nats else StreamSource).parse(url)  # a bad URL fails first
    online = OnlineService(settings, store_from_settings(settings))
    try:
        online.store.ping()
        run = _consume_nats if nats else _consume_stream
        return run(source, online, max_messages=max_messages, drain=drain, quiet=quiet, count=count)
    finally:
        online.close()  # the archive's last rows, then the store


def _consume_nats(
    source: Any,
    online: Any,
    *,
    max_messages: int | None,
    drain: bool,
    quiet: bool,
    count: int,
) -> int:
    """JetStream: one fetch at a time, acknowledged once applied (and archived)."""
    import asyncio

    from serving.stream import consume_nats_into

    if max_messages is not None:
        raise ValueError(
            "--max-messages is for Redis Streams; a JetStream consumer runs "
            "until stopped or, with --drain, until the stream is idle"
        )
    del count  # the fetch size of consume_nats' default; --count is documented for Redis

    def run(stop: threading.Event) -> Any:
        return asyncio.run(consume_nats_into(source, online, stop, until_idle=drain))

    what = f"JetStream {source.stream} ({source.subject}, durable {source.durable})"
    return _run_consumer(what, online, run, quiet=quiet, rejected="rejected")


def _consume_stream(
    source: Any,
    online: Any,
    *,
    max_messages: int | None,
    drain: bool,
    quiet: bool,
    count: int,
) -> int:
    """Redis Streams: a consumer group, `count` messages per read, one XACK per read."""
    from serving.stream import stream_consumer

    consumer = stream_consumer(source, online, count=count)

    def run(stop: threading.Event) -> Any:
        try:
            return consumer.run(stop, max_messages=max_messages, until_idle=drain)
        finally:
            consumer.close()

    what = f"{source.stream} (group {source.group}, consumer {source.consumer})"
    return _run_consumer(what, online, run, quiet=quiet, rejected="dead-lettered")


def _run_consumer(
    what: str,
    online: Any,
    run: Callable[[threading.Event], Any],
    *,
    quiet: bool,
    rejected: str,
) -> int:
    """Run a consumer until Ctrl-C / SIGTERM (or its own end), saying what it consumes and
    what it did; messages handled."""
    archive = online.archive
    if not quiet:
        typer.echo(
            f"ingest: consuming {what} into the {online.store.backend} online store"
            + (f", archiving to {archive.root}" if archive is not None else "")
            + "; Ctrl-C or SIGTERM stops"
        )
    stop = threading.Event()
    restore = stop_on_signals(stop)
    try:
        stats = run(stop)
    finally:
        restore()
    if not quiet:
        typer.echo(
            f"ingest: {stats.messages} messages, {stats.rows} rows taken "
            f"({online.ingest_rows['expired']} of them of expired items, dropped), "
            f"{stats.duplicates} re-sent, {stats.rejected} {rejected}"
        )
    return stats.messages


def replay(
    data: Path,
    url: str,
    key: str,
    *,
    speed: float,
    max_rows: int = 5000,
    progress: bool = True,
) -> int:
    """POST the dataset's rows to the service in event-time order at `speed` x real time
    (0: as fast as the service takes them); returns rows sent."""
    import httpx
    import numpy as np

    from common.progress import Progress
    from features.io import load_dataset
    from features.online.ingest import json_columns
    from features.online.replay import chunks, timeline

    if speed < 0:
        raise ValueError(f"speed must be >= 0 (0: as fast as possible), got {speed}")
    base = _loopback(url)
    tables = load_dataset(data)
    order = timeline(tables)
    times = order["time"].to_numpy()
    real = times[times > np.iinfo(np.int64).min]
    t0 = int(real.min()) if real.size else 0
    run = uuid.uuid4().hex[:8]
    sent = seq = 0
    start = time.monotonic()
    with (
        httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client,
        Progress("replay", len(order), unit="row", enabled=progress) as bar,
    ):
        pos = 0
        while pos < len(order):
            if speed > 0:
                now_ns = t0 + int((time.monotonic() - start) * speed * 1e9)
                end = int(np.searchsorted(times, now_ns, side="right"))
                if end == pos:
                    wait = (int(times[pos]) - now_ns) / 1e9 / speed
                    time.sleep(min(max(wait, 0.01), 0.5))
                    continue
            else:
                end = len(order)
            # At most an hour of event time per step: rows are sent table by table within a
            # step, which must stay well inside an item's life (online_horizon_h).
            end = min(end, int(np.searchsorted(times, int(times[pos]) + STEP_NS, side="left")))
            end = max(end, pos + 1)
            for table, frame in chunks(tables, order, pos, end, max_rows, by_table=True):
                r = client.post(
                    f"/v1/{table}",
                    json={"columns": json_columns(frame), "batch_id": f"replay-{run}-{seq}"},
                )
                seq += 1
                if r.status_code != 200:
                    raise ValueError(
                        f"the service refused a {table} batch ({r.status_code}): {r.text[:500]}"
                    )
                sent += len(frame)
                bar.update(len(frame))
                if speed > 0:
                    bar.status(
                        f"event time {np.datetime64(int(times[min(end, len(times)) - 1]), 'ns')}"
                    )
            pos = end
    return sent


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `surfacer` app."""

    @app.command("ingest", help=INGEST_HELP)
    def ingest_cmd(
        from_url: Annotated[
            str,
            typer.Option(
                "--from",
                help="redis://host:port/db?stream=NAME&group=NAME[&consumer=NAME] (defaults: "
                "stream surfacer:events, group surfacer-ingest) or "
                "nats://host:4222?stream=NAME&subject=X[&durable=NAME].",
            ),
        ],
        max_messages: Annotated[
            int | None, typer.Option(help="Stop after this many messages (default: run on).")
        ] = None,
        drain: Annotated[
            bool, typer.Option("--drain", help="Stop once the stream has no new message.")
        ] = False,
        count: Annotated[
            int,
            typer.Option(
                help="Redis Streams: messages per read, applied in one round trip and "
                "acknowledged with one XACK.",
                min=1,
            ),
        ] = 64,
        rescore: Annotated[
            bool,
            typer.Option(
                "--rescore",
                help="Also re-score touched items here (queueing new flags to the spool the "
                "service's flag writer drains); run `surfacer serve` with "
                "SURFACER_ONLINE_RESCORE=false then.",
            ),
        ] = False,
        nice: Annotated[
            int,
            typer.Option(
                "--nice",
                help="Lower this process's CPU priority by N (os.nice) so that serve workers "
                "sharing its cores answer requests first; 0 keeps it.",
                min=0,
                max=19,
            ),
        ] = 10,
        idle: Annotated[
            bool,
            typer.Option(
                "--idle",
                help="Run in Linux's idle scheduling class (SCHED_IDLE) instead of --nice: "
                "only on cycles no other process wants, so serve workers on the same cores "
                "keep their latency; it falls behind (stream lag grows) on a host whose "
                "other processes keep every core busy.",
            ),
        ] = False,
        status_every: Annotated[
            float,
            typer.Option(
                "--status-every",
                help="With --rescore: seconds between the re-scorer's status lines (items "
                "scored and queued, the backlog of due items).",
                min=0.1,
            ),
        ] = 30.0,
    ) -> None:
        try:
            run_ingest(
                from_url,
                max_messages=max_messages,
                drain=drain,
                count=count,
                rescore=rescore,
                nice=nice,
                idle=idle,
                status_s=status_every,
            )
        except (ValueError, RuntimeError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise SystemExit(2) from None

    @app.command("replay", help=REPLAY_HELP)
    def replay_cmd(
        data: Annotated[Path, typer.Option(help="Dataset folder (raw contract tables).")],
        speed: Annotated[
            float,
            typer.Option(help="Event time per wall time: 3600 = an hour a second (0: flat out)."),
        ] = 3600.0,
        url: Annotated[str, typer.Option(help="The running service (loopback).")] = (
            "http://127.0.0.1:8000"
        ),
        key: Annotated[
            str | None,
            typer.Option(help="API key with the ingest scope (default: SURFACER_REPLAY_KEY)."),
        ] = None,
        max_rows: Annotated[int, typer.Option(help="Rows per request.", min=1)] = 5000,
    ) -> None:
        import os

        key = key or os.environ.get("SURFACER_REPLAY_KEY")
        if not key:
            typer.secho(
                "error: give --key (an API key with the ingest scope) or SURFACER_REPLAY_KEY",
                fg=typer.colors.RED,
                err=True,
            )
            raise SystemExit(2)
        import httpx

        try:
            sent = replay(data, url, key, speed=speed, max_rows=max_rows)
        except httpx.HTTPError as exc:
            typer.secho(
                f"error: cannot reach the service at {url} ({exc}); is `surfacer serve` "
                "running there?",
                fg=typer.colors.RED,
                err=True,
            )
            raise SystemExit(2) from None
        except (ValueError, FileNotFoundError, OSError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise SystemExit(2) from None
        typer.echo(f"replay: {sent} rows sent to {url}")
