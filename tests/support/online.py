"""Replay a dataset through an online store in event-time order and check it against batch.

`features.online.replay.timeline` orders the rows by when the platform knows them;
`Replayer`
applies the rows before an instant and `compare_rows` holds an online snapshot equal to the
batch row of `build_snapshots` at the same as_of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pandas as pd

from features.online import OnlineStore
from features.online.replay import chunks, timeline
from features.pit import to_ns


class Spool:
    """Collects what a re-scorer queues for review (the spool's append_item)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append_item(self, data: bytes) -> None:
        self.entries.append(orjson.loads(data))

    @property
    def items(self) -> list[dict[str, Any]]:
        """The moderation-anchored entries (a pass also scores post snapshots)."""
        return [e for e in self.entries if e["anchor"] == "moderation"]


class FullSpool(Spool):
    """A spool that refuses its first `fail` entries (a full disk), then takes them."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail = fail

    def append_item(self, data: bytes) -> None:
        from serving.spool import SpoolError

        if self.fail:
            self.fail -= 1
            raise SpoolError("spool full")
        super().append_item(data)


def online_service(store: Any, archive: Any = None) -> Any:
    """An `OnlineService` on `store` that re-scores touched items at once (no debounce)."""
    from serving.online import OnlineService

    settings = SimpleNamespace(online_rescore_s=0.0, online_horizon_h=48.0, archive_dir=None)
    return OnlineService(settings, store, archive)


# Float columns that are sums of floats: batch reads them as differences of prefix sums over
# the whole table, online as running sums, so the last bits may differ.
FLOAT_SUM_COLUMNS = frozenset({"mean_watch_frac"})
REL_TOL = 1e-9


class Replayer:
    """Feeds a store the timeline's rows in order, as batches of consecutive same-table rows."""

    def __init__(
        self,
        store: OnlineStore,
        tables: Mapping[str, pd.DataFrame],
        order: pd.DataFrame | None = None,
    ) -> None:
        self.store = store
        self.tables = tables
        self.order = timeline(tables) if order is None else order
        self.pos = 0
        self.batches = 0

    def apply_before(self, t_ns: int) -> None:
        """Apply every not-yet-applied row with time < t, in order."""
        times = self.order["time"].to_numpy()
        end = int(np.searchsorted(times, t_ns, side="left"))
        self.apply_range(self.pos, end)
        self.pos = max(self.pos, end)

    def apply_range(self, start: int, end: int) -> None:
        if end <= start:
            return
        for name, frame in chunks(self.tables, self.order, start, end, 1_000_000):
            self.store.apply({name: frame}, batch_id=f"replay-{self.batches}")
            self.batches += 1


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def compare_rows(batch: Mapping[str, Any], online: Mapping[str, Any]) -> list[str]:
    """Columns where the online snapshot differs from the batch row (empty when equal)."""
    bad = []
    for col, expected in batch.items():
        got = online.get(col, "<absent>")
        if isinstance(expected, np.generic):
            expected = expected.item()
        if _missing(expected) or _missing(got):
            if not (_missing(expected) and _missing(got)):
                bad.append(f"{col}: batch {expected!r} != online {got!r}")
            continue
        if col in FLOAT_SUM_COLUMNS:
            if not math.isclose(float(expected), float(got), rel_tol=REL_TOL, abs_tol=1e-12):
                bad.append(f"{col}: batch {expected!r} != online {got!r}")
        elif isinstance(expected, pd.Timestamp):
            if pd.Timestamp(got) != expected:
                bad.append(f"{col}: batch {expected!r} != online {got!r}")
        elif isinstance(expected, bool | int | float):
            if float(expected) != float(got):
                bad.append(f"{col}: batch {expected!r} != online {got!r}")
        elif expected != got:
            bad.append(f"{col}: batch {expected!r} != online {got!r}")
    extra = set(online) - set(batch)
    if extra:
        bad.append(f"online has columns batch lacks: {sorted(extra)}")
    return bad


def random_horizons(rng: np.random.Generator, n: int, max_h: float) -> tuple[float, ...]:
    """Distinct random horizons in whole seconds (so created_at + h is exact in ns)."""
    seconds = rng.choice(np.arange(60, int(max_h * 3600)), size=n, replace=False)
    return tuple(float(s) / 3600 for s in sorted(seconds))


def check_parity(
    store: OnlineStore,
    tables: Mapping[str, pd.DataFrame],
    batch: pd.DataFrame,
    order: pd.DataFrame | None = None,
) -> tuple[int, list[str]]:
    """Replay `tables` into `store`, reading each post row of `batch` at its as_of.

    Returns (rows compared, mismatch descriptions)."""
    replay = Replayer(store, tables, order)
    rows = batch[batch["anchor"] == "post"].sort_values("as_of", kind="stable")
    as_of = to_ns(rows["as_of"])
    records = rows.to_dict("records")
    problems: list[str] = []
    compared = 0
    i = 0
    while i < len(records):
        j = i
        while j < len(records) and as_of[j] == as_of[i]:
            j += 1
        replay.apply_before(int(as_of[i]))
        ids = [r["item_id"] for r in records[i:j]]
        for rec, snap in zip(records[i:j], store.snapshots(ids, int(as_of[i])), strict=True):
            compared += 1
            if snap is None:
                problems.append(f"{rec['item_id']} @ {rec['as_of']}: no online snapshot")
                continue
            diff = compare_rows(rec, snap)
            if diff:
                problems.append(f"{rec['item_id']} @ {rec['as_of']}: " + "; ".join(diff))
        i = j
    return compared, problems
