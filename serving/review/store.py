"""`ReviewStore`: the review queue on SQLAlchemy 2 (SQLite by default, PostgreSQL by URL).

Claims are race-free on both databases: PostgreSQL picks the next row with
`SELECT ... FOR UPDATE SKIP LOCKED`, SQLite with one conditional `UPDATE ... RETURNING`
inside a `BEGIN IMMEDIATE` transaction (SQLite has one writer at a time). Every state change
appends a row to `review_history` in the same transaction.
"""

from __future__ import annotations

import fcntl
import math
import secrets
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from serving.flag_writer import json_safe
from serving.review.models import DECISIONS, HistoryEvent, Label, ReviewFlag, ReviewItem
from serving.review.quality import IssueCounts, quality
from serving.review.schemas import (
    Claim,
    HistoryEntry,
    IssueQuality,
    ItemDetail,
    ItemPage,
    ItemSummary,
    LabelOut,
    LabelResult,
    Stats,
)
from serving.schemas import FlaggedItem

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LABEL_COLUMNS = ["item_id", "issue", "label", "labeled_at", "source"]


class LeaseError(Exception):
    """The caller does not hold a valid lease on the item (HTTP 409)."""


class NotClaimable(Exception):
    """The item is claimed by someone else, or already reviewed (HTTP 409)."""


def _utc(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _as_of(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _utc(value)
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").to_pydatetime()


def _finite(scores: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in scores.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = float(v)
    return out


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration for the review store's migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@dataclass(frozen=True)
class _Keys:
    item_id: str
    as_of_key: str
    model_version: str


class ReviewStore:
    """The review queue: flagged and sampled items, leases, labels and their history."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: int = 600,
        random_share: float = 0.1,
        echo: bool = False,
    ) -> None:
        if lease_seconds < 1:
            raise ValueError(f"lease_seconds must be >= 1, got {lease_seconds}")
        if not 0.0 <= random_share <= 1.0:
            raise ValueError(f"random_share must be within [0, 1], got {random_share}")
        self.url = url
        self.lease_seconds = lease_seconds
        self.random_share = random_share
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                self._sqlite_path = Path(db)
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False}
            )
            _sqlite_pragmas(self.engine)
        else:
            self.engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> ReviewStore:
        """The store at `settings.review_db_url` with the settings' lease and sample share."""
        return cls(
            settings.review_db_url,
            lease_seconds=settings.lease_seconds,
            random_share=settings.review_random_share,
        )

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self):  # type: ignore[no-untyped-def]
        with self._sessions() as s, s.begin():
            yield s

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> str:
        """Upgrade the schema to the latest migration (idempotent); returns the revision."""
        with self._migration_lock(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Two processes starting at once must not both create the tables.
                conn.execute(text("SELECT pg_advisory_xact_lock(7212345)"))
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return self.revision() or ""

    @contextmanager
    def _migration_lock(self):  # type: ignore[no-untyped-def]
        if self._sqlite_path is None:
            yield
            return
        lock = self._sqlite_path.with_name(self._sqlite_path.name + ".migrate.lock")
        with lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def revision(self) -> str | None:
        """The schema revision the database is at (None before `migrate`)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head() -> str:
        """The latest migration shipped with the code."""
        return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""

    # -- ingest -----------------------------------------------------------------------------

    def add_flagged(self, items: Sequence[FlaggedItem], *, sample_prob: float = 1.0) -> int:
        """Upsert scored items: one row per (item, as_of, model version); returns rows touched.

        Flagged items enter with inclusion probability 1; `sampled` unflagged ones with
        `sample_prob` (the scoring path's sampling rate), which the recall estimate needs.
        A re-scored item keeps its status, leases and labels; its scores and flags update.
        """
        if not items:
            return 0
        if not 0.0 < sample_prob <= 1.0:
            raise ValueError(f"sample_prob must be within (0, 1], got {sample_prob}")
        latest: dict[_Keys, FlaggedItem] = {}
        for it in items:
            as_of = _as_of(it.as_of)
            key = _Keys(str(it.item_id), as_of.isoformat() if as_of else "", str(it.model_version))
            latest[key] = it  # the last of duplicates in one batch wins
        for attempt in range(3):
            try:
                return self._upsert(latest, sample_prob)
            except IntegrityError:
                # A concurrent writer inserted one of these keys first: retry as an update.
                if attempt == 2:
                    raise
        return 0

    def _upsert(self, latest: dict[_Keys, FlaggedItem], sample_prob: float) -> int:
        now = _now()
        ids = sorted({k.item_id for k in latest})
        with self._tx() as s:
            existing: dict[_Keys, ReviewItem] = {}
            for chunk in range(0, len(ids), 500):
                rows = s.scalars(
                    select(ReviewItem).where(ReviewItem.item_id.in_(ids[chunk : chunk + 500]))
                )
                for row in rows:
                    existing[_Keys(row.item_id, row.as_of_key, row.model_version)] = row
            fresh: list[tuple[ReviewItem, dict[str, Any]]] = []
            for key, it in latest.items():
                scores = _finite(dict(it.scores))
                flagged = [str(i) for i in it.flagged]
                reach = float(it.reach) if it.reach and math.isfinite(it.reach) else 0.0
                # Unknown reach (flat datasets) counts as 1 so probability still orders.
                weight = max(reach, 1.0)
                flag_rows = [
                    ReviewFlag(
                        issue=i,
                        probability=scores.get(i, 0.0),
                        priority=scores.get(i, 0.0) * weight,
                    )
                    for i in dict.fromkeys(flagged)
                ]
                if flag_rows:
                    priority = max(f.priority for f in flag_rows)
                else:
                    priority = max(scores.values(), default=0.0) * weight
                is_sample = bool(it.sampled) and not flagged
                values: dict[str, Any] = {
                    "anchor": str(it.anchor or "post"),
                    "as_of": _as_of(it.as_of),
                    "snapshot": dict(it.snapshot),
                    "scores": scores,
                    "flagged": flagged,
                    "reasons": dict(it.reasons or {}),
                    "scored_at": _utc(it.scored_at) or now,
                    "reach": reach,
                    "priority": priority,
                    "updated_at": now,
                }
                row = existing.get(key)
                if row is None:
                    row = ReviewItem(
                        item_id=key.item_id,
                        as_of_key=key.as_of_key,
                        model_version=key.model_version,
                        sampled=is_sample,
                        stratum="sample" if is_sample else "flagged",
                        sample_prob=sample_prob if is_sample else 1.0,
                        status="pending",
                        created_at=now,
                        **values,
                    )
                    row.flags = flag_rows
                    s.add(row)
                    fresh.append((row, {"event": "ingested"}))
                else:
                    for name, value in values.items():
                        setattr(row, name, value)
                    if flagged and row.stratum == "sample":
                        # Now flagged: it is reviewed for its flags, inclusion probability 1.
                        row.stratum, row.sampled, row.sample_prob = "flagged", False, 1.0
                    row.flags = flag_rows
                    fresh.append((row, {"event": "rescored"}))
            s.flush()
            for row, info in fresh:
                s.add(
                    HistoryEvent(
                        review_item_id=row.id,
                        event=info["event"],
                        actor=None,
                        at=now,
                        detail={
                            "model_version": row.model_version,
                            "flagged": row.flagged,
                            "stratum": row.stratum,
                            "priority": row.priority,
                        },
                    )
                )
        return len(latest)

    def sink(self, sample_prob: float = 1.0) -> StoreSink:
        """This store as a flag writer sink; sampled items get `sample_prob`."""
        return StoreSink(self, sample_prob)

    # -- reading ----------------------------------------------------------------------------

    def list_items(
        self,
        *,
        issue: str | None = None,
        status: str | None = None,
        stratum: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> ItemPage:
        """A page of the queue, highest priority (for `issue`, that issue's) first."""
        if limit < 1 or offset < 0:
            raise ValueError(f"need limit >= 1 and offset >= 0, got limit={limit} offset={offset}")
        self.expire_leases()
        with self._tx() as s:
            q = select(ReviewItem)
            if issue is not None:
                q = q.join(
                    ReviewFlag,
                    (ReviewFlag.review_item_id == ReviewItem.id) & (ReviewFlag.issue == issue),
                )
            if status is not None:
                q = q.where(ReviewItem.status == status)
            if stratum is not None:
                q = q.where(ReviewItem.stratum == stratum)
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            order = ReviewFlag.priority if issue is not None else ReviewItem.priority
            rows = s.scalars(q.order_by(order.desc(), ReviewItem.id).limit(limit).offset(offset))
            items = [_summary(r) for r in rows]
        return ItemPage(items=items, total=total, limit=limit, offset=offset)

    def get(self, review_id: int) -> ItemDetail:
        """One review item with snapshot, reason codes and labels; KeyError if unknown."""
        with self._tx() as s:
            row = s.get(ReviewItem, review_id)
            if row is None:
                raise KeyError(f"no review item with id {review_id}")
            labels = s.scalars(
                select(Label).where(Label.review_item_id == review_id).order_by(Label.id)
            ).all()
            return _detail(row, labels)

    def find(self, item_id: str) -> list[ItemSummary]:
        """All review rows of one item id (several as_of or model versions)."""
        with self._tx() as s:
            rows = s.scalars(
                select(ReviewItem).where(ReviewItem.item_id == item_id).order_by(ReviewItem.id)
            )
            return [_summary(r) for r in rows]

    def history(self, review_id: int) -> list[HistoryEntry]:
        """The audit trail of one item, oldest first; KeyError if the item is unknown."""
        with self._tx() as s:
            if s.get(ReviewItem, review_id) is None:
                raise KeyError(f"no review item with id {review_id}")
            rows = s.scalars(
                select(HistoryEvent)
                .where(HistoryEvent.review_item_id == review_id)
                .order_by(HistoryEvent.id)
            )
            return [
                HistoryEntry(
                    id=h.id,
                    review_id=h.review_item_id,
                    event=h.event,
                    actor=h.actor,
                    at=_utc(h.at),
                    detail=h.detail or {},
                )
                for h in rows
            ]

    def stats(self) -> Stats:
        """Queue size by status and stratum, and the number of labels."""
        self.expire_leases()
        with self._tx() as s:
            by_status = dict(
                s.execute(select(ReviewItem.status, func.count()).group_by(ReviewItem.status)).all()
            )
            by_stratum = dict(
                s.execute(
                    select(ReviewItem.stratum, func.count()).group_by(ReviewItem.stratum)
                ).all()
            )
            n_labels = s.scalar(select(func.count()).select_from(Label)) or 0
        return Stats(
            by_status=by_status, by_stratum=by_stratum, labels=n_labels, revision=self.revision()
        )

    # -- leases -----------------------------------------------------------------------------

    def _claimable(self, now: datetime):  # type: ignore[no-untyped-def]
        return (ReviewItem.status == "pending") | (
            (ReviewItem.status == "claimed") & (ReviewItem.lease_expires_at < now)
        )

    def expire_leases(self, now: datetime | None = None) -> int:
        """Return items whose lease ran out to the queue (recorded in history)."""
        now = now or _now()
        with self._tx() as s:
            expired = s.execute(
                update(ReviewItem)
                .where(ReviewItem.status == "claimed", ReviewItem.lease_expires_at < now)
                .values(status="pending", lease_token=None, lease_expires_at=None, updated_at=now)
                .returning(ReviewItem.id, ReviewItem.lease_owner)
            ).all()
            for rid, owner in expired:
                s.add(
                    HistoryEvent(
                        review_item_id=rid, event="lease_expired", actor=owner, at=now, detail={}
                    )
                )
        return len(expired)

    def _preferred_strata(self, s: Session) -> tuple[str, str]:
        """Which stratum to serve first so that about `random_share` of reviews are samples."""
        if self.random_share <= 0:
            return ("flagged", "sample")
        if self.random_share >= 1:
            return ("sample", "flagged")
        rows = dict(
            s.execute(
                select(ReviewItem.stratum, func.count())
                .where(ReviewItem.status != "pending")
                .group_by(ReviewItem.stratum)
            ).all()
        )
        reviewed = rows.get("flagged", 0) + rows.get("sample", 0)
        # Deterministic interleave: a sample whenever samples are behind their share.
        if rows.get("sample", 0) < self.random_share * (reviewed + 1):
            return ("sample", "flagged")
        return ("flagged", "sample")

    def claim_next(
        self, reviewer: str, *, issue: str | None = None, now: datetime | None = None
    ) -> Claim | None:
        """Lease the next item to `reviewer`: highest priority, with `random_share` samples.

        `issue` narrows flagged items to that issue (samples apply to every issue). Returns
        None when nothing is claimable.
        """
        now = now or _now()
        token = secrets.token_urlsafe(24)
        expires = now + timedelta(seconds=self.lease_seconds)
        with self._tx() as s:
            for stratum in self._preferred_strata(s):
                rid = self._claim_one(s, stratum, issue, reviewer, token, now, expires)
                if rid is not None:
                    s.add(
                        HistoryEvent(
                            review_item_id=rid,
                            event="claimed",
                            actor=reviewer,
                            at=now,
                            detail={"expires_at": expires.isoformat(), "next": True},
                        )
                    )
                    break
            else:
                return None
        return Claim(item=self.get(rid), lease=token, lease_expires_at=expires)

    def _claim_one(
        self,
        s: Session,
        stratum: str,
        issue: str | None,
        reviewer: str,
        token: str,
        now: datetime,
        expires: datetime,
    ) -> int | None:
        q = select(ReviewItem.id).where(self._claimable(now), ReviewItem.stratum == stratum)
        order = [ReviewItem.priority.desc(), ReviewItem.id]
        if issue is not None and stratum == "flagged":
            q = q.join(
                ReviewFlag,
                (ReviewFlag.review_item_id == ReviewItem.id) & (ReviewFlag.issue == issue),
            )
            order = [ReviewFlag.priority.desc(), ReviewItem.id]
        q = q.order_by(*order).limit(1)
        values = {
            "status": "claimed",
            "lease_owner": reviewer,
            "lease_token": token,
            "lease_expires_at": expires,
            "updated_at": now,
        }
        if self.dialect == "postgresql":
            # Rows other analysts are claiming right now are skipped, not waited for.
            rid = s.scalar(q.with_for_update(skip_locked=True, of=ReviewItem))
            if rid is None:
                return None
            s.execute(update(ReviewItem).where(ReviewItem.id == rid).values(**values))
            return int(rid)
        # SQLite: one conditional UPDATE; the transaction holds the write lock (IMMEDIATE).
        return s.scalar(
            update(ReviewItem)
            .where(ReviewItem.id == q.scalar_subquery(), self._claimable(now))
            .values(**values)
            .returning(ReviewItem.id)
        )

    def claim(self, review_id: int, reviewer: str, *, now: datetime | None = None) -> Claim:
        """Lease one given item; NotClaimable if someone holds it or it was reviewed."""
        now = now or _now()
        token = secrets.token_urlsafe(24)
        expires = now + timedelta(seconds=self.lease_seconds)
        with self._tx() as s:
            if s.get(ReviewItem, review_id) is None:
                raise KeyError(f"no review item with id {review_id}")
            got = s.scalar(
                update(ReviewItem)
                .where(ReviewItem.id == review_id, self._claimable(now))
                .values(
                    status="claimed",
                    lease_owner=reviewer,
                    lease_token=token,
                    lease_expires_at=expires,
                    updated_at=now,
                )
                .returning(ReviewItem.id)
            )
            if got is None:
                raise NotClaimable(f"review item {review_id} is claimed or already reviewed")
            s.add(
                HistoryEvent(
                    review_item_id=review_id,
                    event="claimed",
                    actor=reviewer,
                    at=now,
                    detail={"expires_at": expires.isoformat(), "next": False},
                )
            )
        return Claim(item=self.get(review_id), lease=token, lease_expires_at=expires)

    def lease_of(self, review_id: int, reviewer: str) -> str | None:
        """The live lease token `reviewer` holds on the item, if any (for the console)."""
        with self._tx() as s:
            row = s.get(ReviewItem, review_id)
            if (
                row is None
                or row.status != "claimed"
                or row.lease_owner != reviewer
                or (_utc(row.lease_expires_at) or _now()) <= _now()
            ):
                return None
            return row.lease_token

    def _held(self, s: Session, review_id: int, lease: str, now: datetime) -> ReviewItem:
        q = select(ReviewItem).where(ReviewItem.id == review_id)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        row = s.scalars(q).first()
        if row is None:
            raise KeyError(f"no review item with id {review_id}")
        if (
            row.status != "claimed"
            or not row.lease_token
            or not secrets.compare_digest(
                row.lease_token.encode(), lease.encode("utf-8", "surrogatepass")
            )
            or (_utc(row.lease_expires_at) or now) <= now
        ):
            raise LeaseError(
                f"review item {review_id}: lease not held (status {row.status}); claim it first"
            )
        return row

    def label(
        self,
        review_id: int,
        lease: str,
        decision: str,
        *,
        issue: str | None = None,
        note: str | None = None,
        now: datetime | None = None,
    ) -> LabelResult:
        """Store the labels a decision implies and mark the item labeled (needs the lease).

        Flagged item: confirm -> 1 for its flagged issues (or `issue` only), reject -> 0,
        relabel -> 0 for the flagged issues and 1 for `issue`. Sampled item: confirm -> 0 for
        every issue it was scored for; reject/relabel -> 1 for `issue`, 0 for the others.
        """
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        now = now or _now()
        with self._tx() as s:
            row = self._held(s, review_id, lease, now)
            labels = _labels_for(row, decision, issue)
            out = []
            for iss, value in labels.items():
                lab = Label(
                    review_item_id=row.id,
                    item_id=row.item_id,
                    issue=iss,
                    label=value,
                    decision=decision,
                    reviewer=row.lease_owner or "",
                    labeled_at=now,
                    note=note,
                )
                s.add(lab)
                out.append(lab)
            row.status = "labeled"
            row.lease_token = None
            row.lease_expires_at = None
            row.updated_at = now
            s.add(
                HistoryEvent(
                    review_item_id=row.id,
                    event="labeled",
                    actor=row.lease_owner,
                    at=now,
                    detail={"decision": decision, "labels": labels, "note": note},
                )
            )
            s.flush()
            result = LabelResult(
                review_id=row.id, status="labeled", labels=[_label_out(x) for x in out]
            )
        return result

    def skip(self, review_id: int, lease: str, *, now: datetime | None = None) -> ItemSummary:
        """Set the item aside as skipped (needs the lease)."""
        return self._end_lease(review_id, lease, "skipped", "skipped", now)

    def release(self, review_id: int, lease: str, *, now: datetime | None = None) -> ItemSummary:
        """Give the item back to the queue (needs the lease)."""
        return self._end_lease(review_id, lease, "pending", "released", now)

    def _end_lease(
        self, review_id: int, lease: str, status: str, event_name: str, now: datetime | None
    ) -> ItemSummary:
        now = now or _now()
        with self._tx() as s:
            row = self._held(s, review_id, lease, now)
            row.status = status
            row.lease_token = None
            row.lease_expires_at = None
            row.updated_at = now
            s.add(
                HistoryEvent(
                    review_item_id=row.id,
                    event=event_name,
                    actor=row.lease_owner,
                    at=now,
                    detail={},
                )
            )
            s.flush()
            return _summary(row)

    # -- labels out -------------------------------------------------------------------------

    def labels_frame(self) -> pd.DataFrame:
        """All labels as the contract's `labels` table (source "review")."""
        with self._tx() as s:
            rows = s.execute(
                select(Label.item_id, Label.issue, Label.label, Label.labeled_at).order_by(Label.id)
            ).all()
        frame = pd.DataFrame(
            {
                "item_id": pd.Series([r[0] for r in rows], dtype="str"),
                "issue": pd.Series([r[1] for r in rows], dtype="str"),
                "label": pd.Series([int(r[2]) for r in rows], dtype="int64"),
                "labeled_at": pd.to_datetime([_utc(r[3]) for r in rows], utc=True),
                "source": pd.Series(["review"] * len(rows), dtype="str"),
            }
        )
        return frame[LABEL_COLUMNS]

    def quality(
        self, issues: Sequence[str] | None = None, *, model_version: str | None = None
    ) -> list[IssueQuality]:
        """Live precision and estimated recall per issue from the labels so far."""
        with self._tx() as s:
            q = select(
                ReviewItem.id,
                ReviewItem.stratum,
                ReviewItem.sample_prob,
                ReviewItem.flagged,
                ReviewItem.scores,
            )
            if model_version is not None:
                q = q.where(ReviewItem.model_version == model_version)
            items = s.execute(q).all()
            # The latest label per (item, issue) counts.
            latest = (
                select(func.max(Label.id))
                .group_by(Label.review_item_id, Label.issue)
                .scalar_subquery()
            )
            labs = s.execute(
                select(Label.review_item_id, Label.issue, Label.label).where(Label.id.in_(latest))
            ).all()
        label_of = {(rid, iss): int(v) for rid, iss, v in labs}
        names = list(issues) if issues is not None else _issue_names(items, labs)
        counts = []
        for iss in names:
            f = fl = fp = sn = sl = sp = 0
            weight = 0.0
            for rid, stratum, prob, flagged, scores in items:
                lab = label_of.get((rid, iss))
                if iss in (flagged or []):
                    f += 1
                    if lab is not None:
                        fl += 1
                        fp += lab
                elif stratum == "sample" and iss in (scores or {}):
                    sn += 1
                    weight += 1.0 / (prob or 1.0)
                    if lab is not None:
                        sl += 1
                        sp += lab
            counts.append(IssueCounts(iss, f, fl, fp, sn, weight, sl, sp))
        return quality(counts)


class StoreSink:
    """`ReviewStore.add_flagged` as a flag-writer sink, with the scoring path's sample rate."""

    def __init__(self, store: ReviewStore, sample_prob: float) -> None:
        self.store = store
        self.sample_prob = sample_prob if sample_prob > 0 else 1.0

    def write(self, items: Sequence[FlaggedItem]) -> None:
        # The store's JSON column takes JSON types only: datetimes, numpy scalars and NaN in
        # a snapshot are normalised here, off the request path.
        ready = [replace(it, snapshot=json_safe(it.snapshot)) for it in items]
        self.store.add_flagged(ready, sample_prob=self.sample_prob)


def store_sink(settings: Any, sample_prob: float = 1.0) -> StoreSink:
    """A `StoreSink` on the review store of `settings`: the factory `ProcessSink` runs in its
    child process (settings pickle; an engine does not)."""
    return StoreSink(ReviewStore.from_settings(settings), sample_prob)


def _issue_names(items: Sequence[Any], labs: Sequence[Any]) -> list[str]:
    names: dict[str, None] = {}
    for _, _, _, flagged, scores in items:
        for i in flagged or []:
            names[i] = None
        for i in scores or {}:
            names[i] = None
    for _, iss, _ in labs:
        names[iss] = None
    return list(names)


def _labels_for(row: ReviewItem, decision: str, issue: str | None) -> dict[str, int]:
    flagged = list(row.flagged or [])
    applicable = list((row.scores or {}).keys())
    if decision == "relabel" and not issue:
        raise ValueError("relabel needs the issue the item has instead (field 'issue')")
    if row.stratum == "sample" or not flagged:
        if decision == "confirm":
            if issue:
                return {issue: 0}
            if not applicable:
                raise ValueError(f"review item {row.id} has no scored issues to confirm")
            return dict.fromkeys(applicable, 0)
        if not issue:
            raise ValueError(
                "rejecting a sampled (unflagged) item needs the issue it has (field 'issue')"
            )
        out = dict.fromkeys(applicable, 0)
        out[issue] = 1
        return out
    if decision == "confirm":
        if issue and issue not in flagged:
            raise ValueError(f"issue {issue!r} is not flagged on this item; flagged: {flagged}")
        return {issue: 1} if issue else dict.fromkeys(flagged, 1)
    if decision == "reject":
        if issue and issue not in flagged:
            raise ValueError(f"issue {issue!r} is not flagged on this item; flagged: {flagged}")
        return {issue: 0} if issue else dict.fromkeys(flagged, 0)
    out = dict.fromkeys(flagged, 0)
    out[str(issue)] = 1
    return out


def _summary(r: ReviewItem) -> ItemSummary:
    return ItemSummary(
        id=r.id,
        item_id=r.item_id,
        as_of=_utc(r.as_of),
        anchor=r.anchor,
        flagged=list(r.flagged or []),
        scores=dict(r.scores or {}),
        model_version=r.model_version,
        priority=r.priority,
        reach=r.reach,
        stratum=r.stratum,  # type: ignore[arg-type]
        sampled=r.sampled,
        sample_prob=r.sample_prob,
        status=r.status,  # type: ignore[arg-type]
        lease_owner=r.lease_owner if r.status == "claimed" else None,
        lease_expires_at=_utc(r.lease_expires_at),
        scored_at=_utc(r.scored_at),
    )


def _label_out(lab: Label) -> LabelOut:
    return LabelOut(
        id=lab.id,
        review_id=lab.review_item_id,
        item_id=lab.item_id,
        issue=lab.issue,
        label=lab.label,
        decision=lab.decision,  # type: ignore[arg-type]
        reviewer=lab.reviewer,
        labeled_at=_utc(lab.labeled_at),
        note=lab.note,
    )


def _detail(r: ReviewItem, labels: Sequence[Label]) -> ItemDetail:
    base = _summary(r).model_dump()
    reasons = {
        k: [rc for rc in v if isinstance(rc, dict) and "feature" in rc]
        for k, v in (r.reasons or {}).items()
    }
    return ItemDetail(
        **base,
        snapshot=dict(r.snapshot or {}),
        reasons=reasons,
        labels=[_label_out(x) for x in labels],
    )


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL (readers never block the writer), a busy timeout, and IMMEDIATE transactions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, open transactions (pysqlite's own are DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Take the write lock up front: a read-then-write transaction can then never fail
        # with SQLITE_BUSY_SNAPSHOT, and claims see the latest committed state.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
