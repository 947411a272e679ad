"""Background writer that moves flagged items from the request path to a sink in batches.

Requests only `put` into a bounded queue (O(1), never blocks): a single item as a
`FlaggedItem`, a batch request's items as a `ScoredBatch` (its request and response bytes).
One thread flushes batches by size or age to a `FlagSink` (the review store's
`add_flagged`, or a JSON-lines file), retries a failing sink, and on `close()` drains
everything left so no accepted item is lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from serving.schemas import FlaggedItem, SnapshotAdapter

__all__ = [
    "FlagSink",
    "FlagWriter",
    "FlaggedItem",
    "JsonlFlagSink",
    "ProcessSink",
    "ScoredBatch",
    "flagged_item",
    "json_safe",
]

log = logging.getLogger(__name__)


class FlagSink(Protocol):
    """Where flagged items end up (e.g. `ReviewStore`); `write` may raise to ask for a retry."""

    def write(self, items: Sequence[FlaggedItem]) -> None: ...


class CallableSink:
    """Adapts a function such as `ReviewStore.add_flagged` to the `FlagSink` protocol."""

    def __init__(self, fn: Callable[[Sequence[FlaggedItem]], Any]) -> None:
        self.fn = fn

    def write(self, items: Sequence[FlaggedItem]) -> None:
        self.fn(items)


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
    """The review-queue entry of one scored snapshot: flagged, or `sampled` when not."""
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


@dataclass
class ScoredBatch:
    """The flagged and sampled items of one batch request, as the bytes it already has.

    `request` is the request body ({"items": [...]}) and `response` the response body
    (items in the same order); `rows` are the items to persist. Keeping bytes, not
    FlaggedItems, means the serving process spends no CPU (and holds no GIL) serialising
    ~500 snapshots per 1,000-item batch: `ProcessSink` ships the bytes to its child, which
    `expand`s them. The snapshot is the request item validated again by the same schema.
    """

    request: bytes
    response: bytes
    rows: list[int]
    scored_at: datetime

    def __len__(self) -> int:
        return len(self.rows)

    def expand(self) -> list[FlaggedItem]:
        items = orjson.loads(self.request)["items"]
        results = orjson.loads(self.response)["items"]
        out = []
        for i in self.rows:
            res = results[i]
            out.append(
                flagged_item(
                    SnapshotAdapter.validate_python(items[i]),
                    res["probabilities"],
                    res["flagged"],
                    res["reasons"],
                    res["model_version"],
                    self.scored_at,
                )
            )
        return out


Entry = FlaggedItem | ScoredBatch


def _entry_size(entry: Entry) -> int:
    return len(entry) if isinstance(entry, ScoredBatch) else 1


def expand_entries(entries: Sequence[Entry]) -> list[FlaggedItem]:
    """The FlaggedItems of queued entries, in order."""
    out: list[FlaggedItem] = []
    for e in entries:
        if isinstance(e, ScoredBatch):
            out.extend(e.expand())
        else:
            out.append(e)
    return out


class JsonlFlagSink:
    """Appends each flagged item as one JSON line to a file (`surfacer serve --flags-jsonl`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, items: Sequence[FlaggedItem]) -> None:
        # orjson serialises the dataclass itself (fields in order, datetimes as ISO strings,
        # NaN as null) in C: the writer thread holds the GIL for microseconds per item, not
        # for a Python walk of every snapshot, so requests it shares the process with don't wait.
        lines = b"".join(to_json(it, orjson.OPT_APPEND_NEWLINE) for it in items)
        # One write per batch in append mode: lines from one flush stay contiguous.
        with self.path.open("ab") as fh:
            fh.write(lines)

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """The items written so far (for tests and tooling)."""
        p = Path(path)
        if not p.exists():
            return []
        return [orjson.loads(line) for line in p.read_bytes().splitlines() if line.strip()]


class ProcessSink:
    """Runs a sink in a child process, so its Python work does not hold this process's GIL.

    The review store's ORM upserts cost ~0.4 ms of CPU per item: in the serving process
    they would take the GIL from requests for ~200 ms per 500 flags. Here `write_entries`
    ships single items as JSON bytes (orjson, in C) and a `ScoredBatch` as the bytes it
    already is, over a pipe, and waits for the child's answer while the GIL is free; the
    child rebuilds the items (expanding batches) and calls the real sink. The child builds
    its sink from `factory` (picklable, e.g. a `functools.partial` of settings), so nothing
    unpicklable crosses. Errors come back as exceptions of the same kind (TypeError or
    ValueError: the batch cannot be written; anything else: retry), so `FlagWriter`'s retry
    and drain logic is unchanged. `close()` stops the child after the last write.
    """

    def __init__(self, factory: Callable[[], FlagSink], *, start_timeout_s: float = 120.0):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # fork is unsafe with threads running
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_sink_process, args=(factory, child), name="flag-sink", daemon=True
        )
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        # The child answers once its sink is built: fail here, not on the first flag.
        if not self._conn.poll(start_timeout_s):
            self._proc.kill()
            raise RuntimeError(f"flag sink process did not start within {start_timeout_s}s")
        _raise_if_error(self._conn.recv())

    def write(self, items: Sequence[FlaggedItem]) -> None:
        self.write_entries(items)

    def write_entries(self, entries: Sequence[Entry]) -> None:
        """Write queued entries: FlaggedItems as JSON, `ScoredBatch`es as their own bytes
        (the child expands them). One header frame says what the next frames are."""
        parts: list[dict[str, Any]] = []
        frames: list[bytes] = []
        singles: list[FlaggedItem] = []

        def end_singles() -> None:
            if singles:
                parts.append({"items": len(singles)})
                frames.append(to_json(singles))
                singles.clear()

        for e in entries:
            if isinstance(e, ScoredBatch):
                end_singles()
                parts.append({"rows": e.rows, "scored_at": e.scored_at.isoformat()})
                frames += (e.request, e.response)
            else:
                singles.append(e)
        end_singles()
        with self._lock:
            if not self._proc.is_alive():
                raise RuntimeError("flag sink process has exited")
            self._conn.send_bytes(orjson.dumps(parts))
            for frame in frames:
                self._conn.send_bytes(frame)
            try:
                answer = self._conn.recv()
            except EOFError:
                raise RuntimeError("flag sink process died during a write") from None
        _raise_if_error(answer)

    def close(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            if self._proc.is_alive():
                with contextlib.suppress(OSError):
                    self._conn.send_bytes(b"")  # the stop sign
                self._proc.join(timeout_s)
            if self._proc.is_alive():
                log.error("flag sink process did not stop within %.1fs; killing it", timeout_s)
                self._proc.kill()
            self._conn.close()


def _raise_if_error(answer: tuple[str, str]) -> None:
    kind, message = answer
    if kind == "value":
        raise ValueError(message)
    if kind == "error":
        raise RuntimeError(message)


def _sink_process(factory: Callable[[], FlagSink], conn: Any) -> None:
    """The child of `ProcessSink`: build the sink, then write each batch it is sent."""
    try:
        sink = factory()
    except Exception as exc:
        conn.send(("error", f"could not build the flag sink: {exc!r}"))
        return
    conn.send(("ok", ""))
    while True:
        try:
            header = conn.recv_bytes()
            if not header:
                break
            parts = orjson.loads(header)
            # one frame per run of single items, two (request, response) per batch
            frames = iter(
                [conn.recv_bytes() for part in parts for _ in range(1 if "items" in part else 2)]
            )
        except EOFError:  # the parent is gone
            break
        try:
            items: list[FlaggedItem] = []
            for part in parts:
                if "items" in part:
                    items += [_flagged_item(d) for d in orjson.loads(next(frames))]
                else:
                    request, response = next(frames), next(frames)
                    at = datetime.fromisoformat(part["scored_at"])
                    items += ScoredBatch(request, response, part["rows"], at).expand()
            sink.write(items)
        except (TypeError, ValueError) as exc:
            conn.send(("value", repr(exc)))
        except Exception as exc:
            conn.send(("error", repr(exc)))
        else:
            conn.send(("ok", ""))
    close = getattr(sink, "close", None)
    if close is not None:
        close()


def _flagged_item(d: dict[str, Any]) -> FlaggedItem:
    # The JSON of a FlaggedItem back into one: datetimes come as ISO strings.
    for key in ("as_of", "scored_at"):
        if isinstance(d.get(key), str):
            d[key] = datetime.fromisoformat(d[key])
    return FlaggedItem(**d)


class FlagWriter:
    """Bounded buffer + one flushing thread; `submit` is safe to call from the event loop.

    `submit` (one item) and `submit_batch` (a batch request's items, as bytes) append to a
    deque and count under a small lock; the writer is not woken per item (that would make
    the request thread wait for the GIL). It wakes every `flush_interval_s`, or early once
    a full batch is waiting. When the buffer is full the entry is dropped and its items
    counted (`dropped`) rather than blocking a request; size it for bursts. `close()` stops
    intake and drains the rest.
    """

    def __init__(
        self,
        sink: FlagSink | None,
        *,
        max_queue: int = 50_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_retries: int = 5,
        retry_backoff_s: float = 0.2,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.sink = sink
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.on_written = on_written
        self.on_dropped = on_dropped
        self._buffer: deque[Entry] = deque()
        self._queued = 0  # items in the buffer (a ScoredBatch holds several)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()  # the buffer's item count and the counters
        self.written = 0
        self.dropped = 0
        self.failed = 0

    # -- request side --------------------------------------------------------------------------

    def submit(self, item: FlaggedItem) -> bool:
        """Enqueue one item without blocking; False when closed, full or there is no sink."""
        return self._put(item, 1, item.item_id)

    def submit_batch(self, batch: ScoredBatch) -> bool:
        """Enqueue a batch request's items (all or none) without blocking, like `submit`."""
        return self._put(batch, len(batch), f"a batch of {len(batch)}")

    def _put(self, entry: Entry, n: int, what: str) -> bool:
        if self._closed or self.sink is None or n == 0:
            return False
        with self._lock:
            queued = self._queued
            full = queued + n > self.max_queue
            if full:
                self.dropped += n
            else:
                self._queued = queued + n
                self._buffer.append(entry)
        if full:
            if self.on_dropped is not None:
                self.on_dropped(n)
            log.warning("flag buffer full (%d); dropped %s", self.max_queue, what)
            return False
        if queued < self.batch_size <= queued + n:  # once per full batch, not per item
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        return self._queued

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FlagWriter:
        if self._thread is None and self.sink is not None:
            self._thread = threading.Thread(target=self._run, name="flag-writer", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop intake, flush everything buffered, and join the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._wake.set()
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error(
                    "flag writer did not finish within %.1fs; %d pending", timeout_s, self.pending
                )
                return
            # A submit racing with close may have appended after the thread's last look.
            while batch := self._take():
                self._flush(batch)
        close_sink = getattr(self.sink, "close", None)
        if close_sink is not None:
            close_sink()

    # -- worker --------------------------------------------------------------------------------

    def _take(self) -> list[Entry]:
        batch: list[Entry] = []
        taken = 0
        pop = self._buffer.popleft
        while taken < self.batch_size:
            try:
                entry = pop()
            except IndexError:
                break
            batch.append(entry)
            n = _entry_size(entry)
            taken += n
            with self._lock:
                self._queued -= n
        return batch

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            closing = self._closed  # read before draining: items submitted earlier are in
            while True:
                batch = self._take()
                if batch:
                    self._flush(batch)
                # Keep going while full batches wait; a partial one waits for the next tick.
                if not batch or (self._queued < self.batch_size and not closing):
                    break
            if closing and not self._buffer:
                return

    def _flush(self, batch: list[Entry]) -> None:
        assert self.sink is not None
        n = sum(map(_entry_size, batch))
        write_entries = getattr(self.sink, "write_entries", None)
        for attempt in range(self.max_retries + 1):
            try:
                if write_entries is not None:
                    write_entries(batch)  # a ScoredBatch stays bytes until the sink's process
                else:
                    self.sink.write(expand_entries(batch))
            except (TypeError, ValueError) as exc:
                # A value no sink can serialise (snapshots come from JSON, so a bug): retrying
                # cannot help.
                log.error("dropping %d flagged items that cannot be serialised: %s", n, exc)
                with self._lock:
                    self.failed += n
                return
            except Exception:
                if attempt == self.max_retries:
                    log.exception("flag sink failed %d times; lost %d items", attempt + 1, n)
                    with self._lock:
                        self.failed += n
                    return
                log.warning("flag sink failed (attempt %d); retrying", attempt + 1, exc_info=True)
                time.sleep(self.retry_backoff_s * (2**attempt))
                continue
            with self._lock:
                self.written += n
            if self.on_written is not None:
                self.on_written(n)
            return
