"""Rows in (JSON records or columns), contract-checked, applied to the online store.

The HTTP API and the stream consumer both call `ingest`: the rows of a batch are checked
with the same contract code as files (`features.validate.coerce_table` /
`validate_table`), and a batch with any problem is rejected whole (`BatchRejected` lists
every problem with its table, column and rows) before anything is applied.

Idempotence rule: a batch carries an id (the API's ``batch_id`` field or
``Idempotency-Key`` header; the stream's message id). A batch whose id was applied within
`OnlineConfig.batch_ttl_s` is acknowledged and not applied again. Rows of the contract carry
no row id, so a batch sent without an id is applied every time it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.contract import ITEM_ID_MAX, TABLES
from features.online.archive import LiveArchive
from features.online.errors import Batch, BatchRejected
from features.online.ops import ONLINE_TABLES, OnlineConfig
from features.online.store import ApplyResult, OnlineStore
from features.validate import Problem, coerce_table, validate_table

MAX_BATCH_ID = 200
# The span the store's int64-nanosecond clock can represent (pandas' ns Timestamp bounds).
EARLIEST = pd.Timestamp.min.tz_localize("UTC")
LATEST = pd.Timestamp.max.tz_localize("UTC")


def to_frame(
    batch: Batch, max_future_s: float | None = None, now_ns: int | None = None
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """The rows as a contract-typed frame, or the problems that stop it. With
    `max_future_s`, a timestamp later than the wall clock (`now_ns`, default: now) plus
    that bound is a problem of its column and rows."""
    name = batch.table
    if name not in ONLINE_TABLES:
        return None, [
            Problem(
                name,
                None,
                f"not a table the online store takes; expected one of {', '.join(ONLINE_TABLES)}",
            )
        ]
    spec = TABLES[name]
    if batch.columns is not None:
        lengths = {len(v) for v in batch.columns.values() if isinstance(v, list | tuple)}
        bad = [k for k, v in batch.columns.items() if not isinstance(v, list | tuple)]
        if bad or len(lengths) > 1:
            return None, [Problem(name, None, "columns must be lists of equal length")]
        frame = pd.DataFrame({k: list(v) for k, v in batch.columns.items()})
    else:
        rows = list(batch.rows or [])
        bad = [i for i, r in enumerate(rows) if not isinstance(r, Mapping)]
        if bad:
            return None, [Problem(name, None, "each row must be an object", bad[:5], len(bad))]
        frame = pd.DataFrame.from_records(rows, columns=_columns(rows, spec.column_names))
    problems: list[Problem] = []
    unknown = [c for c in frame.columns if c not in spec.column_names]
    for c in unknown:
        problems.append(
            Problem(name, str(c), f"unknown column (expected: {', '.join(spec.column_names)})")
        )
    frame = coerce_table(name, frame.drop(columns=unknown))
    problems += validate_table(name, frame)
    if not problems:
        problems += store_problems(name, frame)
    if max_future_s is not None and not problems:
        problems += future_problems(name, frame, max_future_s, now_ns)
    return frame, problems


def store_problems(name: str, frame: pd.DataFrame) -> list[Problem]:
    """Values the contract allows but the online path cannot keep: item ids longer than
    ITEM_ID_MAX or holding NUL, and timestamps outside the store clock's nanosecond span
    (years 1677..2262). Every batch of the ingest path passes here, so each check runs on
    the column's Arrow or int64 values, building a per-row mask only when a value is bad."""
    problems = []
    if "item_id" in frame.columns:
        ids = _arrow_strings(frame["item_id"])
        for mask, message in (
            (_long_ids(ids), f"item ids longer than {ITEM_ID_MAX} characters"),
            (_nul_ids(ids), "item ids with NUL (\\u0000) characters"),
        ):
            if mask is not None:
                rows = np.flatnonzero(mask)
                problems.append(
                    Problem(name, "item_id", message, rows[:5].tolist(), int(rows.size))
                )
    for col in TABLES[name].columns:
        if col.kind != "timestamp" or col.name not in frame.columns:
            continue
        s = frame[col.name]
        bad = _outside_span(s)
        if bad is not None:
            rows = np.flatnonzero(bad)
            problems.append(
                Problem(
                    name,
                    col.name,
                    f"timestamps outside {EARLIEST.isoformat()} .. {LATEST.isoformat()}, the "
                    f"span the online store can hold, e.g. {s.iloc[int(rows[0])].isoformat()}",
                    rows[:5].tolist(),
                    int(rows.size),
                )
            )
    return problems


def _arrow_strings(s: pd.Series) -> Any:
    """The column as a pyarrow array of strings (zero-copy for Arrow-backed columns)."""
    import pyarrow as pa

    to_arrow = getattr(s.array, "__arrow_array__", None)
    if to_arrow is not None:
        return to_arrow()
    return pa.array(s.astype(object).to_numpy(), type=pa.string(), from_pandas=True)


def _any_mask(bad: Any) -> np.ndarray | None:
    import pyarrow.compute as pc

    if not pc.any(bad).as_py():
        return None
    return bad.to_numpy(zero_copy_only=False)


def _long_ids(ids: Any) -> np.ndarray | None:
    """Mask of the ids (a pyarrow string array) longer than ITEM_ID_MAX, or None."""
    import pyarrow.compute as pc

    return _any_mask(pc.fill_null(pc.greater(pc.utf8_length(ids), ITEM_ID_MAX), False))


def _nul_ids(ids: Any) -> np.ndarray | None:
    """Mask of the ids (a pyarrow string array) holding NUL, or None."""
    import pyarrow.compute as pc

    return _any_mask(pc.fill_null(pc.match_substring(ids, "\x00"), False))


_NAT = np.iinfo(np.int64).min
_PER_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _outside_span(s: pd.Series) -> np.ndarray | None:
    """Mask of the timestamps outside EARLIEST..LATEST, or None when there is none."""
    arr = s.array
    unit = getattr(arr, "unit", None)
    if unit not in _PER_NS or not hasattr(arr, "asi8"):  # not a datetime column: compare
        bad = ((s < EARLIEST) | (s > LATEST)).fillna(False).to_numpy(dtype=bool)
        return bad if bad.any() else None
    v = arr.asi8
    per = _PER_NS[unit]
    lo, hi = -(-EARLIEST.value // per), LATEST.value // per  # the bounds in the column's unit
    bad = (v != _NAT) & ((v < lo) | (v > hi))
    return bad if bad.any() else None


def future_problems(
    name: str, frame: pd.DataFrame, max_future_s: float, now_ns: int | None = None
) -> list[Problem]:
    """Timestamps further ahead of the wall clock than the skew bound, per column."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    limit = pd.Timestamp(now_ns + round(max_future_s * 1e9), tz="UTC")
    problems = []
    for col in TABLES[name].columns:
        if col.kind != "timestamp" or col.name not in frame.columns:
            continue
        ahead = (frame[col.name] > limit).fillna(False).to_numpy(dtype=bool)
        if ahead.any():
            rows = np.flatnonzero(ahead)
            problems.append(
                Problem(
                    name,
                    col.name,
                    f"event time more than {max_future_s:g} s ahead of the service clock "
                    f"(latest allowed {limit.isoformat()}; setting "
                    "SURFACER_ONLINE_MAX_FUTURE_S)",
                    rows[:5].tolist(),
                    int(rows.size),
                )
            )
    return problems


def _columns(rows: list[Mapping[str, Any]], expected: Sequence[str]) -> list[str]:
    """The spec's columns first, then any other key the rows use (to report it)."""
    seen = dict.fromkeys(expected)
    for r in rows[:1000]:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def check_batch_id(batch_id: str | None) -> str | None:
    if batch_id is None:
        return None
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= MAX_BATCH_ID:
        raise BatchRejected(
            [Problem("batch", "batch_id", f"must be a string of 1..{MAX_BATCH_ID} characters")]
        )
    return batch_id


def ingest(
    store: OnlineStore,
    batches: Sequence[Batch],
    batch_id: str | None = None,
    *,
    archive: LiveArchive | None = None,
    redelivered: bool = False,
) -> ApplyResult:
    """Check every batch against the contract, then apply them all as one store batch
    (atomic in the in-process store; in atomic, idempotent parts in Redis, `Plan.parts`).

    `archive`: the rows the store newly applied are buffered there too (`archive_applied`);
    `redelivered` says the message may have been applied before a crash (a stream's
    redelivery)."""
    batch_id = check_batch_id(batch_id)
    frames = _frames(batches, store.config)
    result = store.apply(frames, batch_id=batch_id)
    if archive is not None:
        archive_applied(archive, frames, batch_id, result, redelivered)
    return result


def archive_applied(
    archive: LiveArchive,
    frames: list[tuple[str, pd.DataFrame]],
    batch_id: str | None,
    result: ApplyResult,
    redelivered: bool,
) -> bool:
    """Archive a batch's rows when the store newly applied them; a duplicate only when it is
    a redelivery no archived part holds (applied, then a crash before its part was written).
    Returns whether the rows were archived."""
    if result.duplicate and not (
        redelivered and batch_id is not None and not archive.has_batch(batch_id)
    ):
        return False
    archive.record(frames, batch_id)
    return True


def _frames(batches: Sequence[Batch], cfg: OnlineConfig) -> list[tuple[str, pd.DataFrame]]:
    """The contract-checked frames of one batch, or BatchRejected with every problem
    (contract problems, and rows dated beyond the clock-skew bound)."""
    frames: list[tuple[str, pd.DataFrame]] = []
    problems: list[Problem] = []
    now_ns = time.time_ns()
    for b in batches:
        frame, found = to_frame(b, cfg.max_future_s, now_ns)
        problems += found
        if frame is not None and not found:
            frames.append((b.table, frame))
    if problems:
        raise BatchRejected(problems)
    return frames


def ingest_many(
    store: OnlineStore,
    messages: Sequence[tuple[Sequence[Batch], str | None]],
    *,
    archive: LiveArchive | None = None,
    redelivered: bool = False,
) -> list[ApplyResult | BatchRejected]:
    """`ingest` for several messages in one round trip to the store: each is checked and
    applied on its own (atomic, idempotent under its own batch id), so one bad message is
    rejected alone and a re-delivered one is a no-op alone. Per message: its ApplyResult,
    or the BatchRejected that kept it out. StoreUnavailable: nothing was acknowledged by
    the store for any of them (some may have been applied; their ids make a retry a no-op).
    `archive` and `redelivered`: as for `ingest`, per message.
    """
    out: list[ApplyResult | BatchRejected | None] = [None] * len(messages)
    todo: list[int] = []
    planned: list[tuple[list[tuple[str, pd.DataFrame]], str | None]] = []
    checked = _check_together(messages, store.config)
    for k, (batches, batch_id) in enumerate(messages):
        try:
            frames = checked[k] if k in checked else _frames(batches, store.config)
            planned.append((frames, check_batch_id(batch_id)))
            todo.append(k)
        except BatchRejected as exc:
            out[k] = exc
    for k, (frames, batch_id), result in zip(todo, planned, store.apply_many(planned), strict=True):
        out[k] = result
        if archive is not None:
            archive_applied(archive, frames, batch_id, result, redelivered)
    return out  # type: ignore[return-value]


def _check_together(
    messages: Sequence[tuple[Sequence[Batch], str | None]], cfg: OnlineConfig
) -> dict[int, list[tuple[str, pd.DataFrame]]]:
    """Contract-check the one-table, column-shaped messages of a read table by table in one
    frame (the checks' fixed cost per call dominated reads of small messages), then cut
    the frame back into the messages' rows. A table whose combined check finds any problem
    is left out (its messages are then checked one by one, so a bad message is rejected
    alone with its own row numbers); the checks are per row except uniqueness, which a
    combined frame can only make stricter."""
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for k, (batches, _) in enumerate(messages):
        if len(batches) != 1 or batches[0].columns is None or batches[0].rows is not None:
            continue
        cols = batches[0].columns
        lengths = {len(v) for v in cols.values() if isinstance(v, list | tuple)}
        if len(lengths) != 1 or len(cols) != len([v for v in cols.values() if v is not None]):
            continue
        groups.setdefault((batches[0].table, tuple(cols)), []).append(k)
    out: dict[int, list[tuple[str, pd.DataFrame]]] = {}
    now_ns = time.time_ns()
    for (table, names), members in groups.items():
        if len(members) < 2:
            continue
        sizes = [len(next(iter(messages[k][0][0].columns.values()))) for k in members]
        joined = {c: [v for k in members for v in messages[k][0][0].columns[c]] for c in names}
        frame, problems = to_frame(Batch(table, columns=joined), cfg.max_future_s, now_ns)
        if problems or frame is None:
            continue
        bounds = np.cumsum([0, *sizes])
        for k, lo, hi in zip(members, bounds[:-1], bounds[1:], strict=True):
            out[k] = [(table, frame.iloc[lo:hi].reset_index(drop=True))]
    return out


def json_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A contract frame as JSON-ready columns (ISO timestamps, null for missing): the
    ``columns`` body of the ingest API and of stream messages."""
    out: dict[str, list[Any]] = {}
    for col in frame.columns:
        s = frame[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype) or s.dtype.kind == "M":
            iso = s.dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
            values = iso.astype(object).where(s.notna(), None).tolist()
        else:
            values = s.astype(object).where(s.notna(), None).tolist()
        out[str(col)] = values
    return out


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A contract frame as JSON-ready row objects (the ``rows`` body)."""
    cols = json_columns(frame)
    names = list(cols)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
