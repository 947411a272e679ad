"""The live archive: every row the online path newly applied, kept as a dataset folder.

The online store keeps per-item state only until the item's last horizon and no raw events,
so discovery (`surfacer watch --live`) cannot read history from it. `LiveArchive` appends
the contract rows of each newly applied batch to ``<root>/<table>/part-*.parquet`` (the
partitioned layout `features.io` reads: every command that takes ``--data`` reads the
archive unchanged) and the re-scorer's scores to ``<root>/scores/part-*.parquet`` (the
columns `surfacer score` writes, plus ``model_version``).

Rules:
- Idempotence: callers archive a batch only when the store applied it (`ApplyResult.
  duplicate` false), so a re-sent batch id or a redelivered stream message is archived
  once. The one exception is a message the consumer knows to be a redelivery whose store
  application was not followed by an archived part (a crash between the two): the store
  calls it a duplicate, and the archive takes it again only when no part holds its batch
  id (`has_batch`, from the ``surfacer.batch_ids`` key of each part's Parquet metadata).
- Atomic parts: a part is written to a hidden temp file in its table folder (readers skip
  names starting with "."), fsynced, then renamed into place; a table's first part is
  published with its folder (a temp folder renamed), so a reader never sees an empty table
  folder or half a part.
- Buffering: rows wait in memory until a table holds `flush_rows` rows or its oldest rows
  are `flush_s` old; a background thread writes them. `flush()` writes everything now:
  the stream consumers call it before they acknowledge a read, so an acknowledged message
  is in the archive. Rows taken over HTTP are answered before they are written: a crash
  of the service loses at most `flush_s` seconds (or `flush_rows` rows per table) of them
  from the archive (the online store has them; a client re-send is a store duplicate).
- Several processes may write one archive (serve workers, `surfacer ingest`, the
  re-scorer): part names carry the wall time, the process id and a sequence number.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from features.online.errors import StoreUnavailable

log = logging.getLogger("features.online.archive")

SCORES = "scores"
BATCH_IDS_KEY = b"surfacer.batch_ids"


class ArchiveUnavailable(StoreUnavailable):
    """The archive could not be written (disk full, permissions): consumers do not
    acknowledge and retry, as while the store is unreachable."""


def _write_synced(arrow: Any, path: Path) -> None:
    """Write a Parquet file and fsync it (before it is renamed into place)."""
    import pyarrow.parquet as pq

    with path.open("wb") as fh:
        pq.write_table(arrow, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LiveArchive:
    """Buffered, atomic, append-only Parquet parts of the live rows (see the module doc)."""

    def __init__(
        self,
        root: str | Path,
        *,
        flush_rows: int = 50_000,
        flush_s: float = 5.0,
        batch_ttl_s: float = 86_400.0,
        background: bool = True,
    ) -> None:
        self.root = Path(root)
        self.flush_rows = int(flush_rows)
        self.flush_s = float(flush_s)
        self.batch_ttl_s = float(batch_ttl_s)
        self._lock = threading.Lock()  # the buffers
        self._write_lock = threading.Lock()  # one writer at a time (part sequence, index)
        self._buf: dict[str, list[pd.DataFrame]] = {}
        self._ids: dict[str, list[str]] = {}
        self._rows: dict[str, int] = {}
        self._since: dict[str, float] = {}
        self._seq = 0
        self._index_ids: dict[Path, frozenset[str]] = {}  # part -> its batch ids
        # Why the last write failed, until a write succeeds again: while it is set, the
        # online path takes no new batch (`serving.online.OnlineService.ingest`).
        self.problem: str | None = None
        self.rows_written = 0
        self.parts_written = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._loop, name="live-archive-flush", daemon=True
            )
            self._thread.start()

    # -- appending
    def record(self, frames: Iterable[tuple[str, pd.DataFrame]], batch_id: str | None) -> None:
        """Buffer one applied batch's contract frames (written by the next flush)."""
        full = False
        with self._lock:
            for table, frame in frames:
                if not len(frame):
                    continue
                self._append(table, frame, batch_id)
                full = full or self._rows[table] >= self.flush_rows
        if full:
            self._wake.set()

    def record_scores(self, frame: pd.DataFrame) -> None:
        """Buffer re-scorer scores (item_id, as_of, anchor, horizon_h, one column per issue,
        flagged, disabled, model_version)."""
        self.record([(SCORES, frame)], None)

    def _append(self, table: str, frame: pd.DataFrame, batch_id: str | None) -> None:
        self._buf.setdefault(table, []).append(frame)
        if batch_id is not None:
            self._ids.setdefault(table, []).append(batch_id)
        self._rows[table] = self._rows.get(table, 0) + len(frame)
        self._since.setdefault(table, time.monotonic())

    @property
    def buffered_rows(self) -> int:
        with self._lock:
            return sum(self._rows.values())

    # -- writing
    def flush(self, *, only_due: bool = False) -> list[Path]:
        """Write the buffered rows as parts now (`only_due`: only tables past a bound).
        Raises ArchiveUnavailable when a part cannot be written; its rows stay buffered."""
        with self._write_lock:
            now = time.monotonic()
            with self._lock:
                tables = [
                    t
                    for t in self._buf
                    if not only_due
                    or self._rows[t] >= self.flush_rows
                    or now - self._since[t] >= self.flush_s
                ]
                taken = {
                    t: (self._buf.pop(t), self._ids.pop(t, []), self._rows.pop(t)) for t in tables
                }
                for t in tables:
                    self._since.pop(t)
            written: list[Path] = []
            for k, (table, (frames, ids, rows)) in enumerate(taken.items()):
                try:
                    written.append(self._write(table, frames, ids))
                except Exception as exc:
                    with self._lock:  # put back (ahead of anything buffered since)
                        for t, (fr, bi, n) in list(taken.items())[k:]:
                            self._buf[t] = fr + self._buf.get(t, [])
                            self._ids[t] = bi + self._ids.get(t, [])
                            self._rows[t] = n + self._rows.get(t, 0)
                            self._since[t] = min(self._since.get(t, now), now)
                    self.problem = (
                        f"live archive {str(self.root)!r}: cannot write a {table} part: {exc}"
                    )
                    raise ArchiveUnavailable(self.problem) from exc
                self.rows_written += rows
            if taken:  # every table taken was written, the ones that failed before included
                self.problem = None
            return written

    def _write(self, table: str, frames: list[pd.DataFrame], batch_ids: list[str]) -> Path:
        import pyarrow as pa

        from features.validate import coerce_table

        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        if table != SCORES and len({tuple(f.dtypes) for f in frames}) > 1:
            # batches are coerced on their own (an all-null column may hold another null
            # dtype): again, only when their dtypes differ (the check cost 15 % of a part)
            frame = coerce_table(table, frame)
        # one thread: pyarrow's pool costs more than it saves on parts of a few 10k rows
        arrow = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
        if batch_ids:
            meta = dict(arrow.schema.metadata or {})
            meta[BATCH_IDS_KEY] = json.dumps(batch_ids).encode()
            arrow = arrow.replace_schema_metadata(meta)
        self._seq += 1
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.parquet"
        folder = self.root / table
        self.root.mkdir(parents=True, exist_ok=True)
        if folder.is_dir():
            tmp = folder / f".{name}.tmp"
            try:
                _write_synced(arrow, tmp)
                os.replace(tmp, folder / name)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(folder)
        else:
            # the table's first part: publish it together with its folder
            staging = Path(tempfile.mkdtemp(prefix=f".{table}.tmp-", dir=self.root))
            try:
                staging.chmod(0o755)
                _write_synced(arrow, staging / name)
                try:
                    os.rename(staging, folder)
                except OSError:  # another writer published the folder meanwhile
                    os.replace(staging / name, folder / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            _fsync_dir(self.root)
        self.parts_written += 1
        return folder / name

    def _loop(self) -> None:
        tick = max(0.05, min(self.flush_s / 4, 1.0))
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            try:
                self.flush(only_due=True)
            except ArchiveUnavailable as exc:
                log.warning("%s (retrying)", exc)
                self._stop.wait(1.0)

    # -- idempotence after a crash
    def has_batch(self, batch_id: str) -> bool:
        """Whether the buffer or a part written within `batch_ttl_s` (by any process) holds
        `batch_id`. Only redeliveries ask (rarely: after a crash); an older part cannot
        matter, since the store forgets batch ids after the same time and then applies, and
        archives, the batch as new."""
        with self._lock:
            if any(batch_id in ids for ids in self._ids.values()):
                return True
        with self._write_lock:
            self._index()
            return any(batch_id in ids for ids in self._index_ids.values())

    def _index(self) -> None:
        """Read the batch ids of recent parts not read yet (footers only); forget old ones."""
        import pyarrow.parquet as pq

        if not self.root.is_dir():
            return
        oldest = time.time_ns() - round(self.batch_ttl_s * 1e9)
        self._index_ids = {p: ids for p, ids in self._index_ids.items() if _part_ns(p) >= oldest}
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.name.startswith((".", "_")) or folder.name == SCORES:
                continue
            for part in folder.glob("part-*.parquet"):
                if part in self._index_ids or _part_ns(part) < oldest:
                    continue
                meta = pq.read_schema(part).metadata or {}
                raw = meta.get(BATCH_IDS_KEY)
                self._index_ids[part] = frozenset(json.loads(raw)) if raw else frozenset()

    def close(self) -> None:
        """Stop the background writer and write what is buffered."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        self.flush()


def _part_ns(part: Path) -> int:
    """The wall time (ns) in a part's name (`part-<ns>-<pid>-<seq>`; 0 when it has none)."""
    stamp = part.name.split("-")[1] if part.name.count("-") >= 3 else ""
    return int(stamp) if stamp.isdigit() else 0


def archive_from_settings(settings: object) -> LiveArchive | None:
    """The archive settings.archive_dir names (None: archiving is off)."""
    root = getattr(settings, "archive_dir", None)
    if root is None:
        return None
    return LiveArchive(
        root,
        flush_rows=settings.archive_flush_rows,  # type: ignore[attr-defined]
        flush_s=settings.archive_flush_s,  # type: ignore[attr-defined]
        batch_ttl_s=settings.online_batch_ttl_s,  # type: ignore[attr-defined]
    )


def read_scores(root: str | Path) -> pd.DataFrame | None:
    """The archive's re-scorer scores (all parts), or None when there are none."""
    from features.io import part_files

    folder = Path(root) / SCORES
    if not folder.is_dir():
        return None
    frames = [pd.read_parquet(p) for p in part_files(folder)]
    return pd.concat(frames, ignore_index=True) if frames else None


def from_first_horizon(scores: pd.DataFrame, first_h: float) -> pd.DataFrame:
    """The archive's post scores from each item's first horizon on, for discovery.

    The re-scorer scores an item whenever it is touched, first within minutes of posting,
    and again as the store's clock crosses each horizon (`DEFAULT_HORIZONS_H`), with
    `horizon_h` = the item's age then. Discovery counts an item at its first scoring: from
    the archive as it is, that is a score at an age the models never saw in training
    (their post snapshots start at the first horizon) and with little of the item's
    evidence in yet, where `surfacer score` counts it at the first horizon. So post rows
    scored before `first_h` are dropped for items that have one at or after it (with a
    1-minute tolerance: the crossing is scored at the clock, which may be a little past);
    an item never scored that late keeps its rows. Moderation rows are kept as they are."""
    if scores.empty or "horizon_h" not in scores.columns:
        return scores
    post = (scores["anchor"] == "post").to_numpy()
    early = post & (scores["horizon_h"].to_numpy(dtype=float) < first_h - 1 / 60)
    mature_items = pd.unique(scores.loc[post & ~early, "item_id"])
    drop = early & scores["item_id"].isin(mature_items).to_numpy()
    return scores[~drop].reset_index(drop=True)
