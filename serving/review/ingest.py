"""Ingest: scored items into the queue, one transaction per batch, replay-safe.

Semantics (both paths): one review_items row per (item_id, as_of, model_version), upserted by
`INSERT ... ON CONFLICT DO UPDATE ... WHERE stored scored_at < incoming scored_at`, so a replay
of a spool segment (same scoring time) or an older scoring arriving late changes nothing and
appends no history. A touched row gets its flag rows replaced (deleted and inserted when it was
rescored) and one history event ("ingested" or "rescored"); status, leases, labels and
created_at stay. The last of duplicates in one batch wins.

- PostgreSQL ("copy"): the items and their flags are COPYed into temporary tables (per
  connection, emptied at commit); one `INSERT ... SELECT ... ON CONFLICT` upserts them and
  writes what it touched (RETURNING) into a third; three set-based statements replace the flag
  rows and append the history: about twice the flags per CPU-second of executemany
  (bench/drain.py), which is what drains a spool backlog after an outage.
- SQLite ("executemany"): the upsert by executemany (one statement text, prepared once), the
  touched rows read back by `updated_at` (the transaction's own timestamp), flag rows and
  history by executemany. The ON CONFLICT statements are built once per process.

An over-long value or a NUL fails its whole batch on either path; the flag writer bisects the
batch and dead-letters the refused items. `StoreSink` is this as the flag writer's sink.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Column, Integer, MetaData, Table, case, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from serving.flag_writer import SinkUnavailable
from serving.review.db import UNAVAILABLE_ERRORS, now, parse_as_of, utc
from serving.review.models import HistoryEvent, ReviewFlag, ReviewItem
from serving.schemas import FlaggedItem

# Batches stored at once into PostgreSQL by the flag writer (see StoreSink).
PG_WRITE_LANES = 2
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
    scores = _finite(it.scores)
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
        "snapshot": it.snapshot,
        "scores": scores,
        "flagged": flagged,
        "reasons": it.reasons or {},
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


def _upsert(dialect: str, source: Any = None) -> Any:
    """The items upsert for `dialect`: of bound rows (executemany), or of `source`, a SELECT
    of the staged rows (then it RETURNs the rows it touched)."""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(ITEMS)
    if source is not None:
        stmt = stmt.from_select(_STAGED, source)
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
    if source is not None:
        stmt = stmt.returning(*(ITEMS.c[name] for name in _TOUCHED[:-1]))
    return stmt


# -- PostgreSQL: COPY into temporary tables, then set-based statements ------------------------

# The review_items columns staged by COPY, in order.
_STAGED = (
    "item_id",
    "as_of_key",
    "model_version",
    "anchor",
    "as_of",
    "snapshot",
    "scores",
    "flagged",
    "reasons",
    "scored_at",
    "reach",
    "priority",
    "sampled",
    "stratum",
    "sample_prob",
    "status",
    "created_at",
    "updated_at",
)
_JSON_COLUMNS = frozenset({"snapshot", "scores", "flagged", "reasons"})
# What the upsert touched; `rescored`: the row existed before (it was not created now).
_TOUCHED = (
    "id",
    "item_id",
    "as_of_key",
    "model_version",
    "flagged",
    "stratum",
    "priority",
    "updated_at",
    "created_at",
    "rescored",
)
_PG_TYPES = {
    "seq": "integer",
    "id": "integer",
    "as_of": "timestamptz",
    "scored_at": "timestamptz",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "reach": "double precision",
    "priority": "double precision",
    "probability": "double precision",
    "sample_prob": "double precision",
    "sampled": "boolean",
    "rescored": "boolean",
    **dict.fromkeys(_JSON_COLUMNS, "json"),
}


def _temp_table(name: str, columns: Sequence[str]) -> tuple[Table, str]:
    """A temporary table emptied at each commit, and its CREATE IF NOT EXISTS (each
    connection has its own). Text columns are unbounded, so an over-long value fails in the
    INSERT into the real table ("value too long"): a refused item, as on the executemany path."""
    ddl = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ("
        + ", ".join(f"{c} {_PG_TYPES.get(c, 'text')}" for c in columns)
        + ") ON COMMIT DELETE ROWS"
    )
    table = Table(
        name,
        MetaData(),
        *(Column(c, ITEMS.c[c].type if c in ITEMS.c else Integer) for c in columns),
        prefixes=["TEMPORARY"],
    )
    return table, ddl


STAGE, _STAGE_DDL = _temp_table("review_ingest_stage", ("seq", *_STAGED))
STAGE_FLAGS, _STAGE_FLAGS_DDL = _temp_table(
    "review_ingest_flags", ("seq", "issue", "probability", "priority")
)
TOUCHED, _TOUCHED_DDL = _temp_table("review_ingest_touched", _TOUCHED)
# After the upsert: the flag rows of rescored items replaced, then every touched item's flag
# rows and its one history event ("ingested" or "rescored") inserted.
_APPLY = (
    "DELETE FROM review_flags f USING review_ingest_touched t "
    "WHERE f.review_item_id = t.id AND t.rescored",
    "INSERT INTO review_flags (review_item_id, issue, probability, priority) "
    "SELECT t.id, f.issue, f.probability, f.priority FROM review_ingest_touched t "
    "JOIN review_ingest_stage s USING (item_id, as_of_key, model_version) "
    "JOIN review_ingest_flags f ON f.seq = s.seq",
    "INSERT INTO review_history (review_item_id, event, actor, at, detail) "
    "SELECT t.id, CASE WHEN t.rescored THEN 'rescored' ELSE 'ingested' END, NULL, "
    "t.updated_at, json_build_object('model_version', t.model_version, 'flagged', t.flagged, "
    "'stratum', t.stratum, 'priority', t.priority) FROM review_ingest_touched t ORDER BY t.id",
)


def _staged_upsert() -> Any:
    """INSERT INTO the touched table the rows that the upsert of the staged rows RETURNs."""
    # In key order: two batches upserting the same items at once (the writer stores two
    # segments at a time) then lock them in the same order and cannot deadlock.
    source = select(*(STAGE.c[name] for name in _STAGED)).order_by(
        STAGE.c.item_id, STAGE.c.as_of_key, STAGE.c.model_version
    )
    up = _upsert("postgresql", source).cte("up")
    stmt = insert(TOUCHED).from_select(
        _TOUCHED,
        select(
            *(up.c[name] for name in _TOUCHED[:-1]),
            (up.c.created_at != up.c.updated_at).label("rescored"),
        ),
    )
    # SQLAlchemy keeps the row count of INSERTs only when asked.
    return stmt.execution_options(preserve_rowcount=True)


# Built once: building an ON CONFLICT statement costs ~40 ms (its `excluded` proxies), more
# than storing a small batch.
_STATEMENTS: dict[str, Any] = {}


def _statement(key: str) -> Any:
    if key not in _STATEMENTS:
        _STATEMENTS[key] = _staged_upsert() if key == "copy" else _upsert(key)
    return _STATEMENTS[key]


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _copy(conn: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY `rows` into `table` within the connection's transaction (psycopg's COPY)."""
    import psycopg

    driver = conn.connection.driver_connection
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    try:
        with driver.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        if driver.broken or driver.closed:
            conn.invalidate()
        # As SQLAlchemy reports its own statements' errors: OperationalError (unreachable),
        # DataError (a value the column cannot hold), and so on.
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


class IngestMixin:
    """`add_flagged` of `ReviewStore`."""

    dialect: str
    engine: Any

    def add_flagged(
        self,
        items: Sequence[FlaggedItem],
        *,
        sample_prob: float = 1.0,
        method: str | None = None,
    ) -> int:
        """Upsert scored items: one row per (item, as_of, model version); returns rows touched.

        Flagged items enter with inclusion probability 1; `sampled` unflagged ones with
        `sample_prob` (the scoring path's sampling rate), which the recall estimate needs.
        A re-scored item keeps its status, leases and labels; its scores and flags update,
        unless the stored scoring is as new or newer (a replay, or an older one arriving
        late): then the row is left as it is. `method`: "copy" (PostgreSQL only, its default)
        or "executemany" (any database, SQLite's default).
        """
        if not items:
            return 0
        if not 0.0 < sample_prob <= 1.0:
            raise ValueError(f"sample_prob must be within (0, 1], got {sample_prob}")
        method = method or ("copy" if self.dialect == "postgresql" else "executemany")
        if method not in ("copy", "executemany"):
            raise ValueError(f"unknown ingest method {method!r}; use copy or executemany")
        if method == "copy" and self.dialect != "postgresql":
            raise ValueError(f"the copy method needs PostgreSQL, not {self.dialect}")
        at = now()
        latest: dict[tuple[str, str, str], tuple[dict[str, Any], list[dict]]] = {}
        for it in items:
            values, flags = _row(it, sample_prob, at)
            # The last of duplicates in one batch wins (one statement cannot touch a row twice).
            latest[(values["item_id"], values["as_of_key"], values["model_version"])] = (
                values,
                flags,
            )
        if method == "copy":
            return self._ingest_copy(latest)
        return self._ingest_many(latest, at)

    def _ingest_copy(self, latest: dict) -> int:
        """COPY the items and their flags into temporary tables; one INSERT ... SELECT ... ON
        CONFLICT upserts them, and three set-based statements replace flags and add history."""
        staged = [(seq, v, flags) for seq, (v, flags) in enumerate(latest.values())]
        with self.engine.begin() as conn:
            for ddl in (_STAGE_DDL, _STAGE_FLAGS_DDL, _TOUCHED_DDL):
                conn.exec_driver_sql(ddl)
            _copy(
                conn,
                "review_ingest_stage",
                ("seq", *_STAGED),
                (
                    (
                        seq,
                        *(
                            _json_text(v[name]) if name in _JSON_COLUMNS else v[name]
                            for name in _STAGED
                        ),
                    )
                    for seq, v, _ in staged
                ),
            )
            _copy(
                conn,
                "review_ingest_flags",
                ("seq", "issue", "probability", "priority"),
                (
                    (seq, f["issue"], f["probability"], f["priority"])
                    for seq, _, flags in staged
                    for f in flags
                ),
            )
            touched = conn.execute(_statement("copy")).rowcount
            if touched:
                for sql in _APPLY:
                    conn.exec_driver_sql(sql)
        return touched

    def _ingest_many(self, latest: dict, at: Any) -> int:
        """The items by executemany; the rows this transaction touched read back; their flag
        rows replaced and history appended by executemany."""
        with self.engine.begin() as conn:
            conn.execute(_statement(self.dialect), [v for v, _ in latest.values()])
            ids = sorted({k[0] for k in latest})
            touched = []
            for start in range(0, len(ids), 500):
                for r in conn.execute(
                    select(
                        *(ITEMS.c[name] for name in _TOUCHED[:-1] if name != "updated_at")
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

    def __init__(self, store: Any, sample_prob: float, *, method: str | None = None) -> None:
        self.store = store
        self.sample_prob = sample_prob if sample_prob > 0 else 1.0
        self.method = method  # None: the store's default (`add_flagged`)
        # Batches the flag writer may store at once (each on its own pooled connection):
        # PostgreSQL works on one while the writer parses the next; SQLite has one writer.
        self.parallel = PG_WRITE_LANES if store.dialect == "postgresql" else 1

    def open(self) -> None:
        try:
            self.store.migrate()
        except UNAVAILABLE_ERRORS as exc:
            raise SinkUnavailable(f"{self.describe()}: {exc}") from exc

    def write(self, items: Sequence[FlaggedItem]) -> None:
        # Datetimes, numpy scalars and NaN in a snapshot need no conversion here: the store
        # serialises its JSON columns with orjson (review.db), which writes them as JSON.
        try:
            self.store.add_flagged(items, sample_prob=self.sample_prob, method=self.method)
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
