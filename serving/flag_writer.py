"""The flag writer: drains the flag spool into the review store (or a JSON-lines file).

Workers only append to the spool (`serving.spool`) before they answer; this writer, one per
spool folder (an flock on writer.lock), reads the segments oldest first, turns their frames
back into `FlaggedItem`s and writes them to its sink in batches (up to 5,000 items: small
while it keeps up, big when a backlog waits; a `parallel` sink, the review store on
PostgreSQL, takes two segments' batches at once). After a batch is stored it records the
segment offset (progress.json), so a restarted writer replays only what was not stored; the
store's upsert ignores a replayed item (same scoring time), so a replay changes nothing.
Failures are told apart:

- the sink is unreachable (`SinkUnavailable`: database down, schema missing): nothing moves,
  the writer retries (one round trip per try, at most `retry_max_s` = 0.5 s apart) and
  reports itself unhealthy in status.json (/readyz and /metrics read it); the items wait in
  the spool;
- the sink refuses some items (too long for a column, a value it cannot hold): the batch is
  bisected until the refused items are alone, the rest is stored, and each refused item goes
  to dead-letters.jsonl with the error. Nothing is dropped.

`surfacer serve` runs the writer as its own process (`python -m serving.flag_writer`),
restarted by the server within a second if it dies; `create_app` runs it as a thread when no
such process is started for it (tests, a plain `uvicorn` run).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from pydantic import TypeAdapter

from serving.schemas import FlaggedItem
from serving.spool import (
    DEAD_LETTERS_FILE,
    PROGRESS_FILE,
    STATUS_FILE,
    WRITER_LOCK_FILE,
    CorruptFrame,
    Frame,
    Segment,
    count_items,
    list_segments,
    read_frames,
    read_json,
    resync,
    write_atomic,
)

__all__ = [
    "FlagSink",
    "FlagWriter",
    "FlaggedItem",
    "JsonlFlagSink",
    "SinkUnavailable",
    "expand_frame",
    "flagged_item",
    "json_safe",
    "writer_status",
]

log = logging.getLogger(__name__)

# A status older than this means no writer is running (it rewrites it twice a second).
STALE_AFTER_S = 3.0
# How often a waiting (spare) writer tries the lock.
LOCK_POLL_S = 0.1


class SinkUnavailable(Exception):
    """The sink cannot take anything now (database unreachable, schema missing): retry later.
    Any other exception from `FlagSink.write` means the sink refused those items."""


class FlagSink(Protocol):
    """Where flagged items end up; `write` raises SinkUnavailable to ask for a retry."""

    def write(self, items: Sequence[FlaggedItem]) -> None: ...


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} in a flagged item")


def to_json(value: Any, option: int = 0) -> bytes:
    """JSON bytes by orjson's rules (datetimes as ISO strings, NaN/inf as null, dataclasses
    as objects), numpy scalars and arrays included; `option` adds orjson flags."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | option)


def json_safe(value: Any) -> Any:
    """`value` with only JSON types (see `to_json`)."""
    return orjson.loads(to_json(value))


# Snapshot fields that say how many people an item reached, best first (flat datasets differ).
REACH_FIELDS = ("n_view", "n_viewers", "video_view_count")


def reach_of(record: Mapping[str, Any]) -> float:
    """How many people the item reached (0 when the snapshot does not say)."""
    for name in REACH_FIELDS:
        v = record.get(name)
        if isinstance(v, str):  # a count the API read leniently from text ("12")
            try:
                v = float(v)
            except ValueError:
                continue
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v:
            return float(v)
    return 0.0


def flagged_item(
    record: dict[str, Any],
    probs: Mapping[str, float | None],
    flagged: list[str],
    reasons: dict,
    model_version: str,
    scored_at: datetime,
) -> FlaggedItem:
    """The review-queue entry of one scored snapshot: flagged, or `sampled` when not.

    Issues without a probability (None: not applicable, or disabled in the bundle) carry no
    score; they are never flagged."""
    return FlaggedItem(
        item_id=record["item_id"],
        as_of=record.get("as_of"),
        anchor=record.get("anchor") or "post",
        snapshot=record,
        scores={k: v for k, v in probs.items() if v is not None and v == v},
        flagged=flagged,
        reasons=reasons,
        model_version=model_version,
        reach=reach_of(record),
        sampled=not flagged,
        scored_at=scored_at,
    )


# A snapshot's as_of read as the API reads it (ISO text, epoch numbers, null).
_AS_OF: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)


def _as_of(value: Any) -> datetime | None:
    """A request's as_of as the API read it: ISO text the fast way, other forms (epoch
    numbers, unusual text) by the API's own rules."""
    if isinstance(value, str) and len(value) > 10 and value[10] == "T":
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return _AS_OF.validate_python(value)


def item_from_json(d: dict[str, Any]) -> FlaggedItem:
    """A FlaggedItem back from its JSON (datetimes come as ISO strings)."""
    for key in ("as_of", "scored_at"):
        if isinstance(d.get(key), str):
            d[key] = datetime.fromisoformat(d[key])
    return FlaggedItem(**d)


class Refused:
    """An item (or raw bytes) that cannot be stored, with the reason: a dead letter."""

    __slots__ = ("error", "item", "raw")

    def __init__(self, error: str, item: FlaggedItem | None = None, raw: Any = None) -> None:
        self.error, self.item, self.raw = error, item, raw

    def record(self, segment: str, offset: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(),
            "error": self.error[:2000],
            "segment": segment,
            "offset": offset,
        }
        if self.item is not None:
            out["item_id"] = str(self.item.item_id)
            out["item"] = json_safe(self.item)
        else:
            out["raw"] = self.raw
        return out


def expand_frame(frame: Frame) -> list[FlaggedItem | Refused]:
    """The items of one spool frame; a row that cannot be rebuilt is a `Refused` with why.

    A batch frame holds the request and response bytes: its rows are the request items as
    sent (the API validated them before it answered; only as_of is parsed again, the same
    way), with the response's scores, flags and reasons."""
    meta = frame.meta
    if meta.get("k") == "item":
        try:
            return [item_from_json(orjson.loads(frame.body))]
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            return [
                Refused(
                    f"unreadable flagged item: {exc!r}", raw=frame.body.decode("utf-8", "replace")
                )
            ]
    try:
        split = int(meta["req"])
        items = orjson.loads(frame.body[:split])["items"]
        results = orjson.loads(frame.body[split:])["items"]
        at = datetime.fromisoformat(meta["at"])
        rows = [int(i) for i in meta["rows"]]
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        return [Refused(f"unreadable batch frame: {exc!r}", raw=meta)]
    out: list[FlaggedItem | Refused] = []
    for i in rows:
        try:
            res = results[i]
            record = dict(items[i])
            record["as_of"] = _as_of(record.get("as_of"))
            out.append(
                flagged_item(
                    record,
                    res["probabilities"],
                    res["flagged"],
                    res["reasons"],
                    res["model_version"],
                    at,
                )
            )
        except Exception as exc:  # one bad row must not take its batch with it
            raw = items[i] if isinstance(items, list) and 0 <= i < len(items) else None
            out.append(Refused(f"cannot rebuild batch row {i}: {exc!r}"[:2000], raw=raw))
    return out


class JsonlFlagSink:
    """Appends each flagged item as one JSON line to a file (`surfacer serve --flags-jsonl`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, items: Sequence[FlaggedItem]) -> None:
        # orjson serialises the dataclass itself (fields in order, datetimes as ISO strings,
        # NaN as null) in C.
        lines = b"".join(to_json(it, orjson.OPT_APPEND_NEWLINE) for it in items)
        # One write per batch in append mode: lines from one flush stay contiguous.
        try:
            with self.path.open("ab") as fh:
                fh.write(lines)
        except OSError as exc:
            raise SinkUnavailable(f"cannot append to {self.path}: {exc}") from exc

    def check(self) -> None:
        if not os.access(self.path.parent, os.W_OK):
            raise SinkUnavailable(f"{self.path.parent} is not writable")

    def describe(self) -> str:
        return f"JSON lines file {self.path}"

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """The items written so far (for tests and tooling)."""
        p = Path(path)
        if not p.exists():
            return []
        return [orjson.loads(line) for line in p.read_bytes().splitlines() if line.strip()]


def writer_status(spool_dir: Path) -> dict[str, Any] | None:
    """The writer's last status.json, with `alive` (fresh heartbeat) added; None if none."""
    status = read_json(Path(spool_dir) / STATUS_FILE)
    if status is None:
        return None
    age = time.time() - float(status.get("heartbeat", 0))
    status["alive"] = age < STALE_AFTER_S and not status.get("stopped", False)
    status["age_s"] = age
    return status


class FlagWriter:
    """Drains one spool folder into a sink; `run(stop)` until `stop` is set, then drains."""

    def __init__(
        self,
        spool_dir: str | Path,
        sink_factory: Callable[[], FlagSink],
        *,
        batch_items: int = 5000,
        poll_interval_s: float = 0.1,
        status_interval_s: float = 0.5,
        probe_interval_s: float = 2.0,
        # Longest pause between tries while the sink is down: a try is one round trip (see
        # _cycle), and after the database returns the spool waits at most this long.
        retry_max_s: float = 0.5,
    ) -> None:
        if batch_items < 1:
            raise ValueError(f"batch_items must be >= 1, got {batch_items}")
        self.dir = Path(spool_dir)
        self.sink_factory = sink_factory
        self.batch_items = batch_items
        self.poll_interval_s = poll_interval_s
        self.status_interval_s = status_interval_s
        self.probe_interval_s = probe_interval_s
        self.retry_max_s = retry_max_s
        self.sink: FlagSink | None = None
        self.sink_ok: bool | None = None
        self.sink_error: str | None = None
        self._sink_since = time.time()
        self._progress: dict[str, int] = {}
        self.totals = {"stored": 0, "dead_lettered": 0, "lost": 0, "torn": 0, "restarts": 0}
        self._scan: dict[str, list[int]] = {}  # stem -> [scanned up to, items since progress]
        self._lock_fd: int | None = None
        self._started_at = time.time()
        self._failures = 0
        self._last_io = 0.0
        self._status_at = 0.0
        # Guards totals, progress, the scan and the dead letters when segments are stored
        # from several threads (a `parallel` sink).
        self._books = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, drain_timeout_s: float = 20.0) -> None:
        """Take the writer lock (waiting while another writer holds it), then drain the spool
        until `stop` is set; then store what is left, for at most `drain_timeout_s`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        while not self._try_lock():  # a spare: take over as soon as the writer is gone
            if stop.wait(LOCK_POLL_S):
                return
        try:
            self._load_progress()
            self._write_status(force=True)
            while not stop.is_set():
                moved = self._cycle()
                if not moved:
                    stop.wait(self._pause())
            deadline = time.monotonic() + drain_timeout_s
            while time.monotonic() < deadline:
                if not self._cycle() and self.sink_ok:
                    break
                if not self.sink_ok:
                    time.sleep(min(self._pause(), max(0.0, deadline - time.monotonic())))
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self._write_status(force=True, stopped=True)
            close = getattr(self.sink, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            self._unlock()

    def _pause(self) -> float:
        if self._failures:
            return min(self.retry_max_s, 0.25 * 2 ** min(self._failures - 1, 4))
        return self.poll_interval_s

    def _try_lock(self) -> bool:
        fd = os.open(self.dir / WRITER_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_progress(self) -> None:
        saved = read_json(self.dir / PROGRESS_FILE) or {}
        self._progress = {str(k): int(v) for k, v in (saved.get("segments") or {}).items()}
        for k, v in (saved.get("totals") or {}).items():
            if k in self.totals:
                self.totals[k] = int(v)
        previous = read_json(self.dir / STATUS_FILE)
        if (
            previous is not None
            and not previous.get("stopped")
            and previous.get("pid") != os.getpid()
        ):
            self.totals["restarts"] += 1
            log.warning(
                "flag writer restarted: the previous one (pid %s) stopped without a clean exit; "
                "replaying the spool from its last stored offsets",
                previous.get("pid"),
            )
            self._save_progress()

    def _save_progress(self) -> None:
        write_atomic(
            self.dir / PROGRESS_FILE,
            orjson.dumps({"segments": self._progress, "totals": self.totals}),
        )

    # -- one pass ---------------------------------------------------------------------------

    def _cycle(self) -> bool:
        """One pass over the segments (a batch from each); True when something moved."""
        moved = False
        try:
            if self.sink is None:
                self._open_sink()
            elif self.sink_ok is False:
                # While the sink is down, one cheap round trip asks whether it is back, not a
                # batch read and parsed only to fail.
                self._probe()
            moved = self.step()
            if not moved and time.monotonic() - self._last_io > self.probe_interval_s:
                self._probe()
            self._set_sink(True, None)
        except SinkUnavailable as exc:
            self._set_sink(False, str(exc))
            moved = False
        self._write_status()
        return moved

    def _open_sink(self) -> None:
        try:
            sink = self.sink_factory()
            opener = getattr(sink, "open", None)
            if opener is not None:
                opener()
        except SinkUnavailable:
            raise
        except Exception as exc:
            raise SinkUnavailable(f"could not open the flag sink: {exc!r}") from exc
        self.sink = sink
        log.info("flag writer (pid %d) storing into %s", os.getpid(), self._describe())

    def _describe(self) -> str:
        describe = getattr(self.sink, "describe", None)
        return describe() if describe is not None else type(self.sink).__name__

    def _probe(self) -> None:
        self._last_io = time.monotonic()
        check = getattr(self.sink, "check", None)
        if check is not None:
            check()

    def _set_sink(self, ok: bool, error: str | None) -> None:
        if ok != self.sink_ok:
            self._sink_since = time.time()
            if ok and self.sink_ok is False:
                log.warning("flag sink is back (%s); draining the spool", self._describe())
            elif not ok:
                log.error("flag sink unavailable, flags stay in the spool: %s", error)
            self._write_status(force=True, sink_ok=ok, sink_error=error)
        self.sink_ok, self.sink_error = ok, error
        self._failures = 0 if ok else self._failures + 1

    def step(self) -> bool:
        """Store one batch of each segment that has unstored frames; delete stored sealed
        segments. Raises SinkUnavailable when the sink cannot take anything.

        A sink with `parallel` > 1 (the review store on PostgreSQL) takes that many segments'
        batches at once, each on its own connection: one batch is parsed in Python while
        another is in the database. Each segment's batches stay in order."""
        segments = list_segments(self.dir)
        lanes = max(1, int(getattr(self.sink, "parallel", 1)))
        if lanes == 1 or len(segments) < 2:
            return any([self._step_segment(seg) for seg in segments])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(lanes, thread_name_prefix="flag-writer")
        futures = [self._pool.submit(self._step_segment, seg) for seg in segments]
        moved, error = False, None
        for future in futures:  # all of them finish before an error is raised
            try:
                moved = future.result() or moved
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return moved

    def _step_segment(self, seg: Segment) -> bool:
        """Store the next batch of one segment, or retire it once it is sealed and stored."""
        offset = self._progress.get(seg.stem, 0)
        try:
            frames, partial = read_frames(seg.path, offset, max_items=self.batch_items)
        except FileNotFoundError:  # sealed (renamed) since the listing: next pass
            return False
        except CorruptFrame as exc:
            with self._books:
                self._skip_corrupt(seg, exc)
            return True
        if frames:
            self._store(seg, frames)
            return True
        if seg.sealed:
            with self._books:
                self._retire(seg, offset, partial)
        return False

    def _store(self, seg: Segment, frames: list[Frame]) -> None:
        items: list[FlaggedItem] = []
        where: dict[int, int] = {}  # id(item) -> its frame's offset, for the dead letters
        refused: list[tuple[Refused, int]] = []
        for frame in frames:
            for it in expand_frame(frame):
                if isinstance(it, Refused):
                    refused.append((it, frame.start))
                else:
                    items.append(it)
                    where[id(it)] = frame.start
        by_sink = self._write_isolating(items)
        refused += [(r, where.get(id(r.item), frames[0].start)) for r in by_sink]
        self._last_io = time.monotonic()
        n = sum(f.n for f in frames)
        end = frames[-1].end
        with self._books:
            if refused:
                self._dead_letter(seg.stem, refused)
            self.totals["stored"] += len(items) - len(by_sink)
            self.totals["dead_lettered"] += len(refused)
            self._progress[seg.stem] = end
            self._save_progress()
            scan = self._scan.get(seg.stem)
            if scan is not None:
                if scan[0] >= end:
                    scan[1] -= n
                else:
                    self._scan[seg.stem] = [end, 0]

    def _write_isolating(self, items: list[FlaggedItem]) -> list[Refused]:
        """Write `items`; the ones the sink refuses are found by bisection and returned."""
        if not items:
            return []
        assert self.sink is not None
        try:
            self.sink.write(items)
            return []
        except SinkUnavailable:
            raise
        except Exception as exc:
            if len(items) == 1:
                # Blame the item only if the sink itself answers.
                self._probe()
                log.error("flag sink refused item %r: %s", items[0].item_id, exc)
                return [Refused(f"{type(exc).__name__}: {exc}", item=items[0])]
        mid = len(items) // 2
        return self._write_isolating(items[:mid]) + self._write_isolating(items[mid:])

    def _dead_letter(self, stem: str, refused: list[tuple[Refused, int]]) -> None:
        lines = b"".join(
            orjson.dumps(r.record(stem, off), default=str, option=orjson.OPT_APPEND_NEWLINE)
            for r, off in refused
        )
        with (self.dir / DEAD_LETTERS_FILE).open("ab") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def _skip_corrupt(self, seg: Segment, exc: CorruptFrame) -> None:
        nxt = resync(seg.path, exc.offset)
        raw = seg.path.read_bytes()[exc.offset : nxt]
        log.error("%s in %s: %d bytes moved to the dead letters", exc, seg.path.name, len(raw))
        self._dead_letter(seg.stem, [(Refused(str(exc), raw=raw.hex()), exc.offset)])
        self.totals["lost"] += 1  # how many items the damaged bytes held is unknown
        self._progress[seg.stem] = nxt
        self._save_progress()
        self._scan.pop(seg.stem, None)

    def _retire(self, seg: Segment, offset: int, partial: bool) -> None:
        try:
            size = seg.path.stat().st_size
        except FileNotFoundError:
            return
        if partial:
            # The tail of a worker that died inside a write: that request was never answered.
            log.warning(
                "dropping %d bytes of an unfinished write at the end of %s (never answered)",
                size - offset,
                seg.path.name,
            )
            self.totals["torn"] += 1
        elif offset < size:
            return
        seg.path.unlink(missing_ok=True)
        self._progress.pop(seg.stem, None)
        self._scan.pop(seg.stem, None)
        self._save_progress()

    # -- status -----------------------------------------------------------------------------

    def pending(self) -> tuple[int, int, int]:
        """Items and bytes not stored yet, and the number of segments."""
        items = nbytes = 0
        segments = list_segments(self.dir)
        for seg in segments:
            base = self._progress.get(seg.stem, 0)
            scan = self._scan.setdefault(seg.stem, [base, 0])
            if scan[0] < base:
                scan[:] = [base, 0]
            n, pos = count_items(seg.path, scan[0])
            scan[0] = pos
            scan[1] += n
            items += scan[1]
            with contextlib.suppress(FileNotFoundError):
                nbytes += max(0, seg.path.stat().st_size - base)
        live = {s.stem for s in segments}
        for stem in list(self._scan):
            if stem not in live:
                del self._scan[stem]
        return items, nbytes, len(segments)

    def _write_status(
        self,
        *,
        force: bool = False,
        stopped: bool = False,
        sink_ok: bool | None = None,
        sink_error: str | None = None,
    ) -> None:
        now = time.time()
        if not force and now - self._status_at < self.status_interval_s:
            return
        self._status_at = now
        items, nbytes, segments = self.pending()
        ok = self.sink_ok if sink_ok is None else sink_ok
        status = {
            "pid": os.getpid(),
            "heartbeat": now,
            "started_at": self._started_at,
            "sink": self._describe() if self.sink is not None else None,
            "sink_ok": ok,
            "sink_error": self.sink_error if sink_ok is None else sink_error,
            "sink_since": self._sink_since,
            "pending_items": items,
            "pending_bytes": nbytes,
            "segments": segments,
            "totals": dict(self.totals),
            "stopped": stopped,
        }
        with contextlib.suppress(OSError):
            write_atomic(self.dir / STATUS_FILE, orjson.dumps(status))


# -- the writer process (`surfacer serve` runs one and restarts it if it dies) ---------------


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m serving.flag_writer",
        description="Drain a flag spool into the review store (or a JSON-lines file) until "
        "SIGTERM; settings come from SURFACER_* variables.",
    )
    ap.add_argument("--spool", type=Path, required=True, help="The spool folder to drain.")
    ap.add_argument("--jsonl", type=Path, help="Write to this JSON-lines file, not the store.")
    ap.add_argument("--sample-rate", type=float, help="Inclusion probability of sampled items.")
    ap.add_argument("--parent", type=int, help="Exit when this process is gone.")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s:     [flag writer %(process)d] %(message)s"
    )
    logging.getLogger("serving").setLevel(logging.INFO)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    if args.jsonl is None:
        # Imported before waiting for the lock, so a spare takes over without a cold start.
        import alembic.command
        import alembic.runtime.migration  # noqa: F401

        import serving.review.store  # noqa: F401

    def factory() -> FlagSink:
        if args.jsonl is not None:
            return JsonlFlagSink(args.jsonl)
        from common.settings import get_settings
        from serving.review.ingest import store_sink

        settings = get_settings()
        rate = settings.review_random_share if args.sample_rate is None else args.sample_rate
        return store_sink(settings, rate)

    if args.parent:
        parent = args.parent

        def watch_parent() -> None:
            while not stop.wait(0.5):
                if os.getppid() != parent:
                    log.warning("the server (pid %d) is gone; stopping", parent)
                    stop.set()

        threading.Thread(target=watch_parent, daemon=True).start()
    tune_gc()
    FlagWriter(args.spool, factory).run(stop)
    return 0


def tune_gc() -> None:
    """Garbage collection for the writer process: what was imported is frozen out of the
    collector's scans, and a full collection waits for 50,000 new objects, not 700. A batch
    of thousands of parsed snapshots otherwise triggers collections that each scan all of
    them: a fifth of the writer's CPU time, measured by bench/drain.py."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


if __name__ == "__main__":
    # Run the imported module's code, not this __main__ copy: sinks raise
    # serving.flag_writer.SinkUnavailable, which a FlagWriter of __main__ would not catch (the
    # writer process died at every database outage, and its spare took over).
    from serving.flag_writer import _main as main

    sys.exit(main())
