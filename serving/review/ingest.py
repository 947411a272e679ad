"""Ingest: scored items into the queue with one bulk upsert per batch (SQLAlchemy Core).

One `INSERT ... ON CONFLICT (item_id, as_of_key, model_version) DO UPDATE` statement per
batch (the driver's executemany: one statement text, prepared once) writes the items; one
SELECT reads back the rows this transaction touched (`updated_at` is the transaction's own
timestamp); one DELETE and one INSERT replace their flag rows and one INSERT appends their
history. The update applies only when the incoming scoring is newer (`scored_at`), so the flag
writer replaying a spool segment after a crash changes nothing and appends no history.
(RETURNING with executemany would make SQLAlchemy send one many-row statement that psycopg
parses anew each time: half the writer's time, measured.) `StoreSink` is this as the flag
writer's sink.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from serving.flag_writer import SinkUnavailable
from serving.review.db import UNAVAILABLE_ERRORS, now, parse_as_of, utc
from serving.review.models import HistoryEvent, ReviewFlag, ReviewItem
from serving.schemas import FlaggedItem

ITEMS = ReviewItem.__table__
FLAGS = ReviewFlag.__table__
HISTORY = HistoryEvent.__table__
# The columns a rescoring overwrites (status, leases, labels and created_at stay).
_RESCORED = (
    "anchor",
    "as_of",
    "snapshot",
    "scores",
    "flagged",
    "reasons",
    "scored_at",
    "reach",
    "priority",
    "updated_at",
)


def _finite(scores: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in scores.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = float(v)
    return out


def _row(it: FlaggedItem, sample_prob: float, at: Any) -> tuple[dict[str, Any], list[dict]]:
    """The review_items values and the flag rows of one item."""
    scores = _finite(dict(it.scores))
    flagged = [str(i) for i in dict.fromkeys(it.flagged)]
    reach = float(it.reach) if it.reach and math.isfinite(it.reach) else 0.0
    # Unknown reach (flat datasets) counts as 1 so probability still orders.
    weight = max(reach, 1.0)
    flags = [
        {"issue": i, "probability": scores.get(i, 0.0), "priority": scores.get(i, 0.0) * weight}
        for i in flagged
    ]
    if flags:
        priority = max(f["priority"] for f in flags)
    else:
        priority = max(scores.values(), default=0.0) * weight
    is_sample = bool(it.sampled) and not flagged
    as_of = parse_as_of(it.as_of)
    values = {
        "item_id": str(it.item_id),
        "as_of_key": as_of.isoformat() if as_of else "",
        "model_version": str(it.model_version),
        "anchor": str(it.anchor or "post"),
        "as_of": as_of,
        "snapshot": dict(it.snapshot),
        "scores": scores,
        "flagged": flagged,
        "reasons": dict(it.reasons or {}),
        "scored_at": utc(it.scored_at) or at,
        "reach": reach,
        "priority": priority,
        "sampled": is_sample,
        "stratum": "sample" if is_sample else "flagged",
        "sample_prob": sample_prob if is_sample else 1.0,
        "status": "pending",
        "created_at": at,
        "updated_at": at,
    }
    return values, flags


class IngestMixin:
    """`add_flagged` of `ReviewStore`."""

    dialect: str
    engine: Any

    def add_flagged(self, items: Sequence[FlaggedItem], *, sample_prob: float = 1.0) -> int:
        """Upsert scored items: one row per (item, as_of, model version); returns rows touched.

        Flagged items enter with inclusion probability 1; `sampled` unflagged ones with
        `sample_prob` (the scoring path's sampling rate), which the recall estimate needs.
        A re-scored item keeps its status, leases and labels; its scores and flags update,
        unless the stored scoring is as new or newer (a replay, or an older one arriving
        late): then the row is left as it is.
        """
        if not items:
            return 0
        if not 0.0 < sample_prob <= 1.0:
            raise ValueError(f"sample_prob must be within (0, 1], got {sample_prob}")
        at = now()
        latest: dict[tuple[str, str, str], tuple[dict[str, Any], list[dict]]] = {}
        for it in items:
            values, flags = _row(it, sample_prob, at)
            # The last of duplicates in one batch wins (one statement cannot touch a row twice).
            latest[(values["item_id"], values["as_of_key"], values["model_version"])] = (
                values,
                flags,
            )
        rows = [v for v, _ in latest.values()]
        stmt = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(ITEMS)
        excluded = stmt.excluded
        now_flagged = excluded.stratum == "flagged"
        stmt = stmt.on_conflict_do_update(
            index_elements=[ITEMS.c.item_id, ITEMS.c.as_of_key, ITEMS.c.model_version],
            set_={
                **{name: excluded[name] for name in _RESCORED},
                # A sampled item that is now flagged is reviewed for its flags.
                "stratum": case((now_flagged, "flagged"), else_=ITEMS.c.stratum),
                "sampled": case((now_flagged, False), else_=ITEMS.c.sampled),
                "sample_prob": case((now_flagged, 1.0), else_=ITEMS.c.sample_prob),
            },
            where=ITEMS.c.scored_at < excluded.scored_at,
        )
        ids = sorted({k[0] for k in latest})
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)
            touched = []
            for start in range(0, len(ids), 500):
                for r in conn.execute(
                    select(
                        ITEMS.c.id,
                        ITEMS.c.item_id,
                        ITEMS.c.as_of_key,
                        ITEMS.c.model_version,
                        ITEMS.c.created_at,
                        ITEMS.c.stratum,
                        ITEMS.c.priority,
                    ).where(ITEMS.c.item_id.in_(ids[start : start + 500]), ITEMS.c.updated_at == at)
                ):
                    if (r.item_id, r.as_of_key, r.model_version) in latest:
                        touched.append(r)
            if not touched:
                return 0
            rescored = [r.id for r in touched if utc(r.created_at) != at]
            if rescored:
                conn.execute(delete(FLAGS).where(FLAGS.c.review_item_id.in_(rescored)))
            flag_rows = []
            history = []
            for r in touched:
                values, flags = latest[(r.item_id, r.as_of_key, r.model_version)]
                flag_rows += [{"review_item_id": r.id, **f} for f in flags]
                history.append(
                    {
                        "review_item_id": r.id,
                        "event": "ingested" if utc(r.created_at) == at else "rescored",
                        "actor": None,
                        "at": at,
                        "detail": {
                            "model_version": r.model_version,
                            "flagged": values["flagged"],
                            "stratum": r.stratum,
                            "priority": r.priority,
                        },
                    }
                )
            if flag_rows:
                conn.execute(insert(FLAGS), flag_rows)
            conn.execute(insert(HISTORY), history)
        return len(touched)

    def sink(self, sample_prob: float = 1.0) -> StoreSink:
        """This store as a flag writer sink; sampled items get `sample_prob`."""
        return StoreSink(self, sample_prob)  # type: ignore[arg-type]


class StoreSink:
    """`ReviewStore.add_flagged` as the flag writer's sink, with the scoring path's sample rate.

    Database errors that say the store cannot be used now become `SinkUnavailable` (the
    writer keeps the items spooled and retries); any other error means these items were
    refused (the writer isolates and dead-letters them)."""

    def __init__(self, store: Any, sample_prob: float) -> None:
        self.store = store
        self.sample_prob = sample_prob if sample_prob > 0 else 1.0

    def open(self) -> None:
        try:
            self.store.migrate()
        except UNAVAILABLE_ERRORS as exc:
            raise SinkUnavailable(f"{self.describe()}: {exc}") from exc

    def write(self, items: Sequence[FlaggedItem]) -> None:
        # Datetimes, numpy scalars and NaN in a snapshot need no conversion here: the store
        # serialises its JSON columns with orjson (review.db), which writes them as JSON.
        try:
            self.store.add_flagged(items, sample_prob=self.sample_prob)
        except UNAVAILABLE_ERRORS as exc:
            raise SinkUnavailable(f"{self.describe()}: {exc}") from exc

    def check(self) -> None:
        try:
            self.store.ping()
        except UNAVAILABLE_ERRORS as exc:
            raise SinkUnavailable(f"{self.describe()}: {exc}") from exc

    def describe(self) -> str:
        return f"review store {self.store.describe()}"

    def close(self) -> None:
        self.store.close()


def store_sink(settings: Any, sample_prob: float = 1.0) -> StoreSink:
    """A `StoreSink` on the review store of `settings` (what the flag writer process runs)."""
    from serving.review.store import ReviewStore

    return StoreSink(ReviewStore.from_settings(settings), sample_prob)
