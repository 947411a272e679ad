"""The flag spool: an append-only, checksummed log on local disk between the API and the store.

A scoring worker appends the flagged (and sampled) items of a request to its own segment
before it answers: one `writev` per request, so once the API has answered, the items survive
a crash of the worker, of the flag writer and an outage of the review database. A thread
fsyncs the segment every `fsync_interval_s` (0: before every answer), which bounds what a
power loss could take. The flag writer (`serving.flag_writer`) reads the segments, stores
their items, records how far it got and deletes a segment once it is sealed and stored.

Files in the spool folder:

    <ns>-<pid>-<rand>.open   the segment a live worker appends to (it holds an flock on it)
    <ns>-<pid>-<rand>.seg    a sealed segment (rotated by size or age, or its worker stopped)
    progress.json            per segment, the offset up to which everything is stored
    dead-letters.jsonl       items the store refused, each with the error
    status.json              the flag writer's heartbeat, health and counters
    writer.lock              held by the one running flag writer

A segment is a sequence of frames: a 16-byte header (magic b"SFL1", meta length, body length,
CRC-32 of meta and body), the meta (JSON) and the body. An item frame's meta is
{"k": "item", "n": 1} and its body one FlaggedItem as JSON; a batch frame's meta is
{"k": "batch", "n": len(rows), "rows": [...], "at": ISO time, "req": len(request)} and its body
the request bytes followed by the response bytes (`ScoredBatch`): the serving process
serialises nothing per item.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

MAGIC = b"SFL1"
HEADER = struct.Struct("<4sIII")  # magic, meta length, body length, crc32(meta + body)
OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".seg"
TMP_SUFFIX = ".tmp"
PROGRESS_FILE = "progress.json"
STATUS_FILE = "status.json"
DEAD_LETTERS_FILE = "dead-letters.jsonl"
WRITER_LOCK_FILE = "writer.lock"
# A segment is sealed once this big or this old, so stored segments can be deleted.
SEGMENT_BYTES = 16 * 1024 * 1024
SEGMENT_AGE_S = 60.0
# How often a writer re-measures the spool folder against its size limit.
SIZE_CHECK_S = 1.0


class SpoolError(Exception):
    """The spool cannot take this write (disk full, over its size limit, or closed); the
    request that needed it must not be answered as accepted."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader sees the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class SpoolWriter:
    """One worker's appender: its own segment, an flock on it, and a syncing thread.

    `append_item` / `append_batch` are called on the request path: they take a small lock,
    `writev` the frame and return; SpoolError means the items are not durable and the request
    must fail. Thread-safe.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 1024**3,
        fsync_interval_s: float = 0.2,
        segment_bytes: int = SEGMENT_BYTES,
        segment_age_s: float = SEGMENT_AGE_S,
        on_append: Any = None,
    ) -> None:
        if fsync_interval_s < 0:
            raise ValueError(f"fsync_interval_s must be >= 0, got {fsync_interval_s}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync_interval_s = fsync_interval_s
        self.segment_bytes = segment_bytes
        self.segment_age_s = segment_age_s
        self.on_append = on_append  # called with the number of items of each append
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._dirty = False
        self._over_limit: str | None = None
        self._checked_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> SpoolWriter:
        """Open a fresh segment and start the syncing thread (SpoolError if the folder is not
        writable)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._open_segment()
        except OSError as exc:
            raise SpoolError(
                f"cannot open a flag spool segment in {self.directory}: {exc}"
            ) from exc
        self._measure()
        self._thread = threading.Thread(target=self._sync_loop, name="spool-sync", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Sync and seal the segment; later appends raise SpoolError."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            self._seal()

    @property
    def path(self) -> Path | None:
        """The segment being appended to."""
        return self._path

    @property
    def problem(self) -> str | None:
        """Why appends would fail now (over the size limit, a failed write), else None."""
        return self._over_limit or self.last_error

    # -- request side -----------------------------------------------------------------------

    def append_item(self, item_json: bytes) -> None:
        """One FlaggedItem (as JSON bytes)."""
        self._append(b'{"k":"item","n":1}', (item_json,), 1)

    def append_batch(
        self, request: bytes, response: bytes, rows: Sequence[int], scored_at: str
    ) -> None:
        """The flagged and sampled rows of a batch request, as its request and response bytes."""
        meta = orjson.dumps(
            {"k": "batch", "n": len(rows), "rows": rows, "at": scored_at, "req": len(request)}
        )
        self._append(meta, (request, response), len(rows))

    def _append(self, meta: bytes, body: Sequence[bytes], n: int) -> None:
        crc = zlib.crc32(meta)
        blen = 0
        for part in body:
            crc = zlib.crc32(part, crc)
            blen += len(part)
        parts = [HEADER.pack(MAGIC, len(meta), blen, crc), meta, *body]
        total = HEADER.size + len(meta) + blen
        with self._lock:
            if self._fd is None:
                raise SpoolError("the flag spool is closed")
            if self._over_limit:
                raise SpoolError(self._over_limit)
            start = self._size
            try:
                written = os.writev(self._fd, parts)
                if written != total:  # a short write: only the rest of the frame is missing
                    rest = b"".join(parts)[written:]
                    written += os.write(self._fd, rest)
                if written != total:
                    raise OSError(f"short write ({written} of {total} bytes)")
                if self.fsync_interval_s == 0:
                    os.fdatasync(self._fd)
            except OSError as exc:
                # Take the partial frame back out so the segment stays readable.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                self.last_error = f"flag spool write failed: {exc}"
                raise SpoolError(self.last_error) from exc
            self.last_error = None
            self._size = start + total
            self._dirty = True
            if self._size >= self.segment_bytes:
                self._rotate()
        if self.on_append is not None:
            self.on_append(n)

    # -- segments ---------------------------------------------------------------------------

    def _open_segment(self) -> None:
        stem = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}"
        tmp = self.directory / (stem + TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        # Locked before it gets its .open name: the flag writer takes an unlocked .open
        # segment for one whose worker has died.
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.directory / (stem + OPEN_SUFFIX)
        os.rename(tmp, path)
        self._fd, self._path, self._size = fd, path, 0
        self._opened_at = time.monotonic()
        self._dirty = False

    def _seal(self) -> None:
        # Under self._lock. Renamed while still locked, then synced and closed.
        fd, path = self._fd, self._path
        if fd is None or path is None:
            return
        self._fd = self._path = None
        try:
            if self._size == 0:
                path.unlink(missing_ok=True)
            else:
                os.rename(path, path.with_suffix(SEALED_SUFFIX))
                os.fdatasync(fd)
        except OSError as exc:
            log.error("could not seal flag spool segment %s: %s", path, exc)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        self._seal()
        try:
            self._open_segment()
        except OSError as exc:
            self.last_error = f"cannot open a new flag spool segment: {exc}"
            log.error("%s", self.last_error)

    # -- background ------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        interval = self.fsync_interval_s or 0.2
        while not self._stop.wait(interval):
            try:
                self.sync()
            except Exception:  # the thread must outlive a bad moment of the disk
                log.exception("flag spool sync failed")

    def sync(self) -> None:
        """fsync what was appended since the last sync; rotate an old segment; re-measure."""
        fd = None
        with self._lock:
            if self._fd is None:
                if self.last_error:  # a failed rotation: try again
                    with contextlib.suppress(OSError):
                        self._open_segment()
                        self.last_error = None
                return
            if self._size and time.monotonic() - self._opened_at > self.segment_age_s:
                self._rotate()
            elif self._dirty:
                fd = os.dup(self._fd)
                self._dirty = False
        if fd is not None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        if time.monotonic() - self._checked_at >= SIZE_CHECK_S:
            self._measure()

    def _measure(self) -> None:
        self._checked_at = time.monotonic()
        total = spool_bytes(self.directory)
        self._over_limit = (
            f"the flag spool {self.directory} holds {total} bytes, over its limit of "
            f"{self.max_bytes} (is the flag writer storing? see /readyz)"
            if total > self.max_bytes
            else None
        )


def spool_bytes(directory: Path) -> int:
    """Bytes in the spool's segments."""
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.endswith((OPEN_SUFFIX, SEALED_SUFFIX)):
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
    return total


# -- reading (the flag writer) ---------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A segment file; `stem` names it across the rename from .open to .seg."""

    stem: str
    path: Path
    sealed: bool  # no more frames will come (.seg, or .open whose worker is gone)


def owner_alive(path: Path) -> bool:
    """Whether a live worker still holds the flock of an .open segment."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock if it was taken
    return False


def list_segments(directory: Path) -> list[Segment]:
    """The segments in the spool, oldest first."""
    out = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if name.endswith(SEALED_SUFFIX):
            out.append(Segment(name[: -len(SEALED_SUFFIX)], Path(entry.path), True))
        elif name.endswith(OPEN_SUFFIX):
            path = Path(entry.path)
            out.append(Segment(name[: -len(OPEN_SUFFIX)], path, not owner_alive(path)))
    return out


@dataclass(frozen=True)
class Frame:
    """One appended request's items: where it sits in its segment, its meta and body."""

    start: int
    end: int
    meta: dict[str, Any]
    body: bytes

    @property
    def n(self) -> int:
        return int(self.meta.get("n", 0))


class CorruptFrame(Exception):
    """Bytes at an offset that are not a whole, intact frame (bad magic, checksum or meta)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt spool frame at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


def read_frames(
    path: Path, offset: int, *, max_items: int, max_bytes: int = 64 * 1024 * 1024
) -> tuple[list[Frame], bool]:
    """Whole frames from `offset` until `max_items` items or `max_bytes` are read.

    Returns the frames and whether a partial frame follows them (still being written, or torn
    by a crash). Damaged bytes end the read after the frames before them; a read that starts
    at damaged bytes raises CorruptFrame.
    """
    frames: list[Frame] = []
    items = 0
    size = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        pos = offset
        while items < max_items and size < max_bytes:
            head = fh.read(HEADER.size)
            if not head:
                return frames, False
            if len(head) < HEADER.size:
                return frames, True
            magic, mlen, blen, crc = HEADER.unpack(head)
            problem = None
            if magic != MAGIC:
                problem = "bad magic"
            else:
                payload = fh.read(mlen + blen)
                if len(payload) < mlen + blen:
                    return frames, True
                if zlib.crc32(payload) != crc:
                    problem = "checksum mismatch"
                else:
                    try:
                        meta = orjson.loads(payload[:mlen])
                    except orjson.JSONDecodeError:
                        problem = "unreadable meta"
            if problem is not None:
                if frames:  # hand over the good frames; the next read starts at the damage
                    return frames, False
                raise CorruptFrame(pos, problem)
            end = pos + HEADER.size + mlen + blen
            frame = Frame(pos, end, meta, payload[mlen:])
            frames.append(frame)
            items += frame.n
            size += end - pos
            pos = end
    return frames, False


def count_items(path: Path, offset: int) -> tuple[int, int]:
    """Items in the whole frames from `offset` (reading headers and metas only), and the offset
    after the last whole frame."""
    items = 0
    pos = offset
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(offset)
            while pos + HEADER.size <= size:
                magic, mlen, blen, _ = HEADER.unpack(fh.read(HEADER.size))
                end = pos + HEADER.size + mlen + blen
                if magic != MAGIC or end > size:
                    break
                try:
                    items += int(orjson.loads(fh.read(mlen)).get("n", 0))
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    break
                fh.seek(end)
                pos = end
    except OSError:
        pass
    return items, pos


def resync(path: Path, offset: int) -> int:
    """The offset of the next intact frame after damaged bytes at `offset` (the file size when
    there is none): the next magic whose frame reads whole and checks out."""
    data = path.read_bytes()
    pos = offset + 1
    while True:
        pos = data.find(MAGIC, pos)
        if pos < 0 or pos + HEADER.size > len(data):
            return len(data)
        _, mlen, blen, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + mlen + blen
        if end <= len(data) and zlib.crc32(data[pos + HEADER.size : end]) == crc:
            return pos
        pos += 1
