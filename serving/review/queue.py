"""The queue: reading it, leases (claim, label, skip, release) and their history.

Claims are race-free on both databases: PostgreSQL picks the next row with
`SELECT ... FOR UPDATE SKIP LOCKED`, SQLite with one conditional `UPDATE ... RETURNING`
inside a `BEGIN IMMEDIATE` transaction (SQLite has one writer at a time). Every state change
appends a row to `review_history` in the same transaction. Only the analyst holding an
item's lease (or an admin) may label, skip or release it; labels and history record the
authenticated analyst who acted.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from serving.review.db import now as _now
from serving.review.db import utc as _utc
from serving.review.models import DECISIONS, HistoryEvent, Label, ReviewFlag, ReviewItem
from serving.review.schemas import (
    Claim,
    HistoryEntry,
    ItemDetail,
    ItemPage,
    ItemSummary,
    LabelOut,
    LabelResult,
)


class LeaseError(Exception):
    """The caller does not hold a valid lease on the item (HTTP 409)."""


class NotLeaseHolder(LeaseError):
    """Another analyst holds the item's lease, and the caller is not an admin (HTTP 403)."""


class NotClaimable(Exception):
    """The item is claimed by someone else, or already reviewed (HTTP 409)."""


class QueueMixin:
    """The queue operations of `ReviewStore`."""

    dialect: str
    lease_seconds: int
    random_share: float
    _tx: Any

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

    def _held(
        self,
        s: Session,
        review_id: int,
        lease: str | None,
        now: datetime,
        actor: str | None,
        admin: bool,
    ) -> ReviewItem:
        """The claimed row, if the caller may act on it: the lease holder presenting the
        lease, or an admin (who needs no lease). `actor` None: the lease holder itself."""
        q = select(ReviewItem).where(ReviewItem.id == review_id)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        row = s.scalars(q).first()
        if row is None:
            raise KeyError(f"no review item with id {review_id}")
        live = row.status == "claimed" and (_utc(row.lease_expires_at) or now) > now
        if not live:
            raise LeaseError(
                f"review item {review_id}: lease not held (status {row.status}); claim it first"
            )
        if admin and lease is None:
            return row
        if actor is not None and actor != row.lease_owner and not admin:
            raise NotLeaseHolder(
                f"review item {review_id} is claimed by another analyst; only they or an "
                "admin may label, skip or release it"
            )
        if (
            lease is None
            or not row.lease_token
            or not secrets.compare_digest(
                row.lease_token.encode(), lease.encode("utf-8", "surrogatepass")
            )
        ):
            raise LeaseError(f"review item {review_id}: that is not the item's lease")
        return row

    def label(
        self,
        review_id: int,
        lease: str | None,
        decision: str,
        *,
        issue: str | None = None,
        note: str | None = None,
        actor: str | None = None,
        admin: bool = False,
        issues: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> LabelResult:
        """Store the labels a decision implies and mark the item labeled (needs the lease).

        Flagged item: confirm -> 1 for its flagged issues (or `issue` only), reject -> 0,
        relabel -> 0 for the flagged issues and 1 for `issue`. Sampled item: confirm -> 0 for
        every issue it was scored for; reject/relabel -> 1 for `issue`, 0 for the others.
        `issue` must be one of `issues` (the serving model's), or of the item's scored issues
        when `issues` is None. `actor` is the authenticated analyst (recorded on the labels;
        None: the lease holder); an `admin` may act on another analyst's claim.
        """
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        now = now or _now()
        with self._tx() as s:
            row = self._held(s, review_id, lease, now, actor, admin)
            known = list(issues) if issues is not None else _scored_issues(row)
            if issue is not None and issue not in known:
                raise ValueError(f"unknown issue {issue!r}; the model's issues are {known}")
            labels = _labels_for(row, decision, issue)
            who = actor if actor is not None else row.lease_owner or ""
            out = []
            for iss, value in labels.items():
                lab = Label(
                    review_item_id=row.id,
                    item_id=row.item_id,
                    issue=iss,
                    label=value,
                    decision=decision,
                    reviewer=who,
                    labeled_at=now,
                    note=note,
                )
                s.add(lab)
                out.append(lab)
            detail: dict[str, Any] = {"decision": decision, "labels": labels, "note": note}
            if who != row.lease_owner:
                detail["lease_owner"] = row.lease_owner
            row.status = "labeled"
            row.lease_token = None
            row.lease_expires_at = None
            row.updated_at = now
            s.add(
                HistoryEvent(
                    review_item_id=row.id, event="labeled", actor=who, at=now, detail=detail
                )
            )
            s.flush()
            result = LabelResult(
                review_id=row.id, status="labeled", labels=[_label_out(x) for x in out]
            )
        return result

    def skip(
        self,
        review_id: int,
        lease: str | None,
        *,
        actor: str | None = None,
        admin: bool = False,
        now: datetime | None = None,
    ) -> ItemSummary:
        """Set the item aside as skipped (needs the lease, or an admin)."""
        return self._end_lease(review_id, lease, "skipped", "skipped", actor, admin, now)

    def release(
        self,
        review_id: int,
        lease: str | None,
        *,
        actor: str | None = None,
        admin: bool = False,
        now: datetime | None = None,
    ) -> ItemSummary:
        """Give the item back to the queue (needs the lease, or an admin)."""
        return self._end_lease(review_id, lease, "pending", "released", actor, admin, now)

    def _end_lease(
        self,
        review_id: int,
        lease: str | None,
        status: str,
        event_name: str,
        actor: str | None,
        admin: bool,
        now: datetime | None,
    ) -> ItemSummary:
        now = now or _now()
        with self._tx() as s:
            row = self._held(s, review_id, lease, now, actor, admin)
            who = actor if actor is not None else row.lease_owner
            detail = {} if who == row.lease_owner else {"lease_owner": row.lease_owner}
            row.status = status
            row.lease_token = None
            row.lease_expires_at = None
            row.updated_at = now
            s.add(
                HistoryEvent(
                    review_item_id=row.id, event=event_name, actor=who, at=now, detail=detail
                )
            )
            s.flush()
            return _summary(row)


def _scored_issues(row: ReviewItem) -> list[str]:
    return list(dict.fromkeys([*(row.scores or {}), *(row.flagged or [])]))


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
