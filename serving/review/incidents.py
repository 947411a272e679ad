"""Incidents in the review database: upsert from discovery, lifecycle, evidence, effect, metrics.

Discovery hands over detected incidents as plain dicts (`issue`, `segment`, `start`, `end`,
`detected_at`, `severity`, `evidence`, optional `signal`, `trend`, `sample_pool`); the store
matches each to a stored incident of the same issue whose segment is the same or nested and
whose window overlaps, and changes a row only when the values differ, so a rerun over the
same data writes nothing. A detection that overlaps a closed incident (resolved, verified,
false alarm) belongs to it and does not reopen it; a new one on the issue x segment of a
false alarm is suppressed for the cool-down.

Lifecycle: new -> acknowledged -> mitigating -> resolved -> verified, or false_alarm from
any open state. Acknowledging makes the analyst the owner; later moves need the owner or an
admin. `verified` is set only by the effect measurement, when the difference-in-differences
interval lies below zero. Every move is appended to `incident_history` (append-only).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.review.db import now as _now
from serving.review.db import parse_as_of
from serving.review.db import utc as _utc
from serving.review.incident_schemas import (
    EvidenceStratum,
    IncidentEventOut,
    IncidentOut,
    IncidentPage,
    IssueOps,
)
from serving.review.models import (
    INCIDENT_STATUSES,
    IncidentEvent,
    IncidentItem,
    IncidentRow,
    Label,
    ReviewItem,
)
from serving.review.quality import wilson

OPEN = ("new", "acknowledged", "mitigating")
CLOSED = ("resolved", "verified", "false_alarm")
# Where an analyst may move an incident from each status (`verified`: the effect only).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("acknowledged", "false_alarm"),
    "acknowledged": ("mitigating", "resolved", "false_alarm"),
    "mitigating": ("resolved", "false_alarm"),
    "resolved": ("mitigating",),
    "verified": (),
    "false_alarm": (),
}
SYSTEM_ACTOR = "surfacer"
# Items of an incident's sample pool queued per stratum when it is acknowledged.
EVIDENCE_PER_STRATUM = 20


class InvalidTransition(Exception):
    """The incident cannot move to that status from where it is (HTTP 409)."""


class NotIncidentOwner(Exception):
    """Another analyst owns the incident (HTTP 403)."""


@dataclass
class UpsertSummary:
    """What one discovery run did to the store."""

    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    suppressed: int = 0
    # For each detection, in input order: the incident it went to (None: suppressed).
    matched: list[int | None] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{len(self.created)} new, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {self.suppressed} suppressed (false-alarm cool-down)"
        )


def _norm(value: Any) -> Any:
    """JSON as the database hands it back (NaN -> null, tuples -> lists, numpy -> numbers)."""
    if value is None:
        return None
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def segment_key(segment: Mapping[str, str]) -> str:
    """`region=BR,format=live` in the order given (discovery's canonical order); `all` if empty."""
    return ",".join(f"{d}={v}" for d, v in segment.items()) or "all"


def related(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Same or nested segments: one holds every dimension=value of the other."""
    sa, sb = set(a.items()), set(b.items())
    return sa <= sb or sb <= sa


def _ts(value: Any) -> datetime:
    out = parse_as_of(value)
    if out is None:
        raise ValueError(f"incident time {value!r} is not a timestamp")
    return out


def _out(row: IncidentRow) -> IncidentOut:
    return IncidentOut(
        id=row.id,
        kind=row.kind,
        issue=row.issue,
        segment={str(k): str(v) for k, v in (row.segment or {}).items()},
        segment_key=row.segment_key,
        signal=row.signal,
        start=_utc(row.start),
        end=_utc(row.end),
        detected_at=_utc(row.detected_at),
        true_start=_utc(row.true_start),
        severity=row.severity,
        evidence=row.evidence or {},
        status=row.status,  # type: ignore[arg-type]
        owner=row.owner,
        notes=row.notes,
        fix_at=_utc(row.fix_at),
        fix_description=row.fix_description,
        effect=row.effect,
        runs=row.runs,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        acknowledged_at=_utc(row.acknowledged_at),
        resolved_at=_utc(row.resolved_at),
        closed_at=_utc(row.closed_at),
    )


def effect_fell(effect: Mapping[str, Any] | None) -> bool:
    """Whether a measured effect shows the rate fell: the whole interval below zero."""
    if not effect or effect.get("status") != "measured":
        return False
    hi = effect.get("ci_high")
    return isinstance(hi, int | float) and hi == hi and hi < 0


class IncidentsMixin:
    """The incident operations of `ReviewStore`."""

    _tx: Any
    add_flagged: Any
    incident_cooldown_s: float

    # -- discovery in ------------------------------------------------------------------------

    def upsert_incidents(
        self,
        detected: Iterable[Mapping[str, Any]],
        *,
        kind: str = "rate",
        now: datetime | None = None,
        slack: timedelta = timedelta(hours=24),
    ) -> UpsertSummary:
        """Match each detected incident to a stored one and update it, or store it as new.

        Match: same kind and issue, same or nested segment, windows overlapping (within
        `slack`). An open match takes the union of the windows, the earliest detection, the
        strongest severity and the latest evidence; a closed match is left as it is. No match:
        a new incident, unless a false alarm on the same issue and a related segment was
        declared less than the cool-down ago.
        """
        now = now or _now()
        summary = UpsertSummary()
        with self._tx() as s:
            for d in detected:
                self._upsert_one(s, d, kind, now, slack, summary)
        return summary

    def _upsert_one(
        self,
        s: Session,
        d: Mapping[str, Any],
        kind: str,
        now: datetime,
        slack: timedelta,
        summary: UpsertSummary,
    ) -> None:
        issue = str(d["issue"])
        segment = {str(k): str(v) for k, v in dict(d.get("segment") or {}).items()}
        start, detected_at = _ts(d["start"]), _ts(d["detected_at"])
        end = _ts(d.get("end") or d["detected_at"])
        severity = round(float(d.get("severity", 0.0)), 3)
        evidence = _norm(d.get("evidence") or {})
        same = (IncidentRow.kind == kind, IncidentRow.issue == issue)
        # Only incidents whose window overlaps this one's (the index narrows by issue first).
        rows = s.scalars(
            select(IncidentRow).where(
                *same, IncidentRow.end >= start - slack, IncidentRow.start <= end + slack
            )
        ).all()
        matches = [r for r in rows if related(r.segment or {}, segment)]
        open_ = [r for r in matches if r.status in OPEN]
        if open_:
            row = max(open_, key=lambda r: (_utc(r.end), r.id))
            self._refresh(s, row, d, start, end, detected_at, severity, evidence, now, summary)
            summary.matched.append(row.id)
            return
        if matches:  # a closed incident's own episode: it stays closed
            summary.unchanged.append(min(r.id for r in matches))
            summary.matched.append(min(r.id for r in matches))
            return
        cooldown = timedelta(seconds=self.incident_cooldown_s)
        recent_false = s.execute(
            select(IncidentRow.segment).where(
                *same,
                IncidentRow.status == "false_alarm",
                IncidentRow.closed_at > now - cooldown,
            )
        ).all()
        for (false_segment,) in recent_false:
            if related(false_segment or {}, segment):
                summary.suppressed += 1
                summary.matched.append(None)
                return
        row = IncidentRow(
            kind=kind,
            issue=issue,
            segment=segment,
            segment_key=segment_key(segment),
            signal=d.get("signal"),
            start=start,
            end=end,
            detected_at=detected_at,
            severity=severity,
            evidence=evidence,
            trend=_norm(d.get("trend")),
            sample_pool=_norm(d.get("sample_pool")),
            status="new",
            runs=1,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        s.flush()
        s.add(
            IncidentEvent(
                incident_id=row.id,
                event="detected",
                to_status="new",
                actor=None,
                at=now,
                detail={"segment": row.segment_key, "severity": severity},
            )
        )
        summary.created.append(row.id)
        summary.matched.append(row.id)

    def _refresh(self, s, row, d, start, end, detected_at, severity, evidence, now, summary):
        latest = end >= _utc(row.end)
        proposed: dict[str, Any] = {
            "start": min(start, _utc(row.start)),
            "end": max(end, _utc(row.end)),
            "detected_at": min(detected_at, _utc(row.detected_at)),
            "severity": max(severity, row.severity),
        }
        if latest:
            proposed["evidence"] = evidence
            if d.get("signal") is not None:
                proposed["signal"] = d.get("signal")
            if d.get("trend") is not None:
                proposed["trend"] = _norm(d.get("trend"))
            if d.get("sample_pool") is not None and row.status == "new":
                proposed["sample_pool"] = _norm(d.get("sample_pool"))
        changed = {}
        for name, value in proposed.items():
            old = getattr(row, name)
            old = _utc(old) if isinstance(old, datetime) else old
            if old != value:
                changed[name] = value
        if not changed:
            summary.unchanged.append(row.id)
            return
        for name, value in changed.items():
            setattr(row, name, value)
        row.runs += 1
        row.updated_at = now
        shown = {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in changed.items()
            if k in ("start", "end", "detected_at", "severity", "signal")
        }
        s.add(
            IncidentEvent(
                incident_id=row.id,
                event="updated",
                actor=None,
                at=now,
                detail={"changed": sorted(changed), **shown},
            )
        )
        summary.updated.append(row.id)

    def set_true_start(self, incident_id: int, when: Any) -> None:
        """Record the known true start (planted or labelled): time to detect counts from it."""
        with self._tx() as s:
            row = self._incident(s, incident_id)
            value = _ts(when)
            if _utc(row.true_start) != value:
                row.true_start = value
                s.add(
                    IncidentEvent(
                        incident_id=row.id,
                        event="true_start",
                        at=_now(),
                        detail={"true_start": value.isoformat()},
                    )
                )

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def _incident(s: Session, incident_id: int) -> IncidentRow:
        row = s.get(IncidentRow, incident_id)
        if row is None:
            raise KeyError(f"no incident {incident_id}")
        return row

    def list_incidents(
        self,
        *,
        status: str | None = None,
        issue: str | None = None,
        segment: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> IncidentPage:
        """Incidents, newest detection first; `segment` matches part of the segment key."""
        with self._tx() as s:
            q = select(IncidentRow)
            if status:
                q = q.where(IncidentRow.status == status)
            if issue:
                q = q.where(IncidentRow.issue == issue)
            if kind:
                q = q.where(IncidentRow.kind == kind)
            if segment:
                q = q.where(IncidentRow.segment_key.contains(segment, autoescape=True))
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(
                q.order_by(IncidentRow.detected_at.desc(), IncidentRow.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return IncidentPage(total=total, items=[_out(r) for r in rows])

    def get_incident(self, incident_id: int) -> IncidentOut:
        with self._tx() as s:
            return _out(self._incident(s, incident_id))

    def incident_trend(self, incident_id: int) -> dict[str, Any] | None:
        """The chart series stored with the incident (times, observed, baseline), if any."""
        with self._tx() as s:
            return self._incident(s, incident_id).trend

    def incident_pool_size(self, incident_id: int) -> int:
        """How many scored items the incident's evidence pool holds (0: discovery had no scores)."""
        with self._tx() as s:
            return len(self._incident(s, incident_id).sample_pool or [])

    def incident_history(self, incident_id: int) -> list[IncidentEventOut]:
        with self._tx() as s:
            self._incident(s, incident_id)
            rows = s.scalars(
                select(IncidentEvent)
                .where(IncidentEvent.incident_id == incident_id)
                .order_by(IncidentEvent.id)
            ).all()
            return [
                IncidentEventOut(
                    id=r.id,
                    event=r.event,
                    from_status=r.from_status,
                    to_status=r.to_status,
                    actor=r.actor,
                    at=_utc(r.at),
                    note=r.note,
                    detail=r.detail or {},
                )
                for r in rows
            ]

    # -- lifecycle ---------------------------------------------------------------------------

    def transition(
        self,
        incident_id: int,
        to: str,
        *,
        actor: str,
        admin: bool = False,
        note: str | None = None,
        fix_at: datetime | None = None,
        fix_description: str | None = None,
        now: datetime | None = None,
    ) -> IncidentOut:
        """Move an incident to `to` as analyst `actor` (InvalidTransition, NotIncidentOwner).

        Moving to `mitigating` records the fix (`fix_at`, default now, and what was done) and
        schedules the effect measurement. Acknowledging queues the sample pool for review.
        """
        if to not in INCIDENT_STATUSES:
            raise ValueError(f"unknown incident status {to!r}; expected one of {INCIDENT_STATUSES}")
        if not actor:
            raise ValueError("a transition needs the analyst making it")
        now = now or _now()
        with self._tx() as s:
            row = self._incident(s, incident_id)
            before = row.status
            if to not in TRANSITIONS.get(before, ()):
                allowed = ", ".join(TRANSITIONS.get(before, ())) or "nothing (final)"
                hint = " (verified is set by the effect measurement)" if to == "verified" else ""
                raise InvalidTransition(
                    f"incident {incident_id} is {before}: it can move to {allowed}, not {to}{hint}"
                )
            if row.owner and row.owner != actor and not admin:
                raise NotIncidentOwner(
                    f"incident {incident_id} is owned by {row.owner}; only they or an admin "
                    "may move it"
                )
            detail: dict[str, Any] = {}
            if row.owner is None:
                row.owner = actor
                detail["owner"] = actor
            if to == "acknowledged":
                row.acknowledged_at = now
            if to == "mitigating":
                row.fix_at = _utc(fix_at) or now
                row.fix_description = fix_description or note
                row.effect = {"status": "scheduled", "scheduled_at": now.isoformat()}
                detail["fix_at"] = row.fix_at.isoformat()
                detail["fix_description"] = row.fix_description
            if to in ("resolved",):
                row.resolved_at = now
            if to == "false_alarm":
                row.closed_at = now
            if note:
                row.notes = f"{row.notes}\n{note}" if row.notes else note
            row.status = to
            row.updated_at = now
            s.add(
                IncidentEvent(
                    incident_id=row.id,
                    event="transition",
                    from_status=before,
                    to_status=to,
                    actor=actor,
                    at=now,
                    note=note,
                    detail=detail,
                )
            )
            pool = list(row.sample_pool or []) if to == "acknowledged" else []
            result = _out(row)
        if pool:
            self.queue_evidence(incident_id, pool, actor=actor)
        return result

    # -- evidence from the queue -------------------------------------------------------------

    def queue_evidence(
        self,
        incident_id: int,
        pool: Sequence[Mapping[str, Any]],
        *,
        actor: str | None = None,
        per_stratum: int = EVIDENCE_PER_STRATUM,
    ) -> int:
        """Queue up to `per_stratum` flagged and unflagged items of the pool, tagged with the
        incident. Unflagged ones enter as unsampled (not the random sample), so they do not
        bias the queue's recall estimate. Returns how many were linked."""
        from serving.flag_writer import item_from_json

        chosen: list[dict[str, Any]] = []
        for stratum in ("flagged", "unflagged"):
            chosen += [dict(p) for p in pool if p.get("stratum") == stratum][:per_stratum]
        if not chosen:
            return 0
        items = []
        for p in chosen:
            d = {k: v for k, v in p.items() if k != "stratum"}
            d["sampled"] = False
            items.append(item_from_json(d))
        self.add_flagged(items)
        keys = {
            (
                str(it.item_id),
                (parse_as_of(it.as_of).isoformat() if it.as_of else ""),
                it.model_version,
            ): p["stratum"]
            for it, p in zip(items, chosen, strict=True)
        }
        linked = 0
        with self._tx() as s:
            rows = s.execute(
                select(
                    ReviewItem.id,
                    ReviewItem.item_id,
                    ReviewItem.as_of_key,
                    ReviewItem.model_version,
                ).where(ReviewItem.item_id.in_(sorted({k[0] for k in keys})))
            ).all()
            have = set(
                s.scalars(
                    select(IncidentItem.review_item_id).where(
                        IncidentItem.incident_id == incident_id
                    )
                ).all()
            )
            for rid, item_id, as_of_key, version in rows:
                stratum = keys.get((item_id, as_of_key, version))
                if stratum is None or rid in have:
                    continue
                s.add(IncidentItem(incident_id=incident_id, review_item_id=rid, stratum=stratum))
                have.add(rid)
                linked += 1
            s.add(
                IncidentEvent(
                    incident_id=incident_id,
                    event="evidence_queued",
                    actor=actor,
                    at=_now(),
                    detail={"items": linked},
                )
            )
        return linked

    def incident_evidence(self, incident_id: int) -> tuple[list[EvidenceStratum], list[Any]]:
        """Confirmed share of the incident's issue among its queued items, per stratum and in
        all (95% Wilson), and the queued items (review id, item id, stratum, status, label)."""
        with self._tx() as s:
            row = self._incident(s, incident_id)
            issue = row.issue
            linked = s.execute(
                select(
                    IncidentItem.review_item_id,
                    IncidentItem.stratum,
                    ReviewItem.item_id,
                    ReviewItem.status,
                    ReviewItem.scores,
                )
                .join(ReviewItem, ReviewItem.id == IncidentItem.review_item_id)
                .where(IncidentItem.incident_id == incident_id)
                .order_by(IncidentItem.stratum, IncidentItem.review_item_id)
            ).all()
            ids = [r[0] for r in linked]
            labels: dict[int, int] = {}
            if ids:
                for rid, value in s.execute(
                    select(Label.review_item_id, Label.label)
                    .where(Label.review_item_id.in_(ids), Label.issue == issue)
                    .order_by(Label.id)
                ):
                    labels[rid] = int(value)  # the latest label counts
        strata = []
        for name in ("flagged", "unflagged", "all"):
            rows = [r for r in linked if name == "all" or r[1] == name]
            lab = [labels[r[0]] for r in rows if r[0] in labels]
            k, n = sum(lab), len(lab)
            strata.append(
                EvidenceStratum(
                    stratum=name,
                    queued=len(rows),
                    labeled=n,
                    confirmed=k,
                    share=k / n if n else None,
                    ci=wilson(k, n),
                )
            )
        items = [
            {
                "review_id": rid,
                "stratum": stratum,
                "item_id": item_id,
                "status": status,
                "probability": (scores or {}).get(issue),
                "label": labels.get(rid),
            }
            for rid, stratum, item_id, status, scores in linked
        ]
        return strata, items

    def incidents_of_item(self, review_id: int) -> list[tuple[int, str, str]]:
        """The incidents a review item was queued for: (id, issue, segment key)."""
        with self._tx() as s:
            return [
                (int(i), str(issue), str(key))
                for i, issue, key in s.execute(
                    select(IncidentRow.id, IncidentRow.issue, IncidentRow.segment_key)
                    .join(IncidentItem, IncidentItem.incident_id == IncidentRow.id)
                    .where(IncidentItem.review_item_id == review_id)
                    .order_by(IncidentRow.id)
                )
            ]

    # -- effect of the fix -------------------------------------------------------------------

    def pending_effects(self) -> list[IncidentOut]:
        """Incidents with a recorded fix whose effect is not measured yet."""
        with self._tx() as s:
            rows = s.scalars(
                select(IncidentRow).where(IncidentRow.fix_at.is_not(None)).order_by(IncidentRow.id)
            ).all()
            return [
                _out(r)
                for r in rows
                if (r.effect or {}).get("status") in (None, "scheduled", "waiting")
            ]

    def set_effect(
        self, incident_id: int, effect: Mapping[str, Any], *, now: datetime | None = None
    ) -> IncidentOut:
        """Store an effect measurement; a fall (interval below zero) verifies the incident.

        Unchanged values write nothing (watch re-checks waiting effects every run)."""
        now = now or _now()
        effect = _norm(dict(effect))
        with self._tx() as s:
            row = self._incident(s, incident_id)
            if row.effect == effect:
                return _out(row)
            row.effect = effect
            row.updated_at = now
            s.add(
                IncidentEvent(
                    incident_id=row.id,
                    event="effect",
                    actor=SYSTEM_ACTOR,
                    at=now,
                    note=effect.get("verdict"),
                    detail={k: v for k, v in effect.items() if k != "chart"},
                )
            )
            if effect_fell(effect) and row.status in ("mitigating", "resolved"):
                before = row.status
                row.status = "verified"
                row.closed_at = now
                if row.resolved_at is None:
                    row.resolved_at = now
                s.add(
                    IncidentEvent(
                        incident_id=row.id,
                        event="transition",
                        from_status=before,
                        to_status="verified",
                        actor=SYSTEM_ACTOR,
                        at=now,
                        note="the effect interval lies below zero: the rate fell",
                        detail={},
                    )
                )
            return _out(row)

    # -- operational metrics -----------------------------------------------------------------

    def incident_metrics(self, kind: str | None = None) -> list[IssueOps]:
        """Per issue: counts by status, alert precision, and median time to detect (true or
        estimated start -> detected), to acknowledge and to resolve (from when the store
        first recorded the incident), in hours."""
        with self._tx() as s:
            q = select(
                IncidentRow.issue,
                IncidentRow.status,
                IncidentRow.start,
                IncidentRow.true_start,
                IncidentRow.detected_at,
                IncidentRow.created_at,
                IncidentRow.acknowledged_at,
                IncidentRow.resolved_at,
            )
            if kind:
                q = q.where(IncidentRow.kind == kind)
            rows = s.execute(q).all()
            by_issue: dict[str, list[Any]] = {}
            for r in rows:
                by_issue.setdefault(r.issue, []).append(r)
            out = []
            for issue in sorted(by_issue):
                rs = by_issue[issue]
                statuses: dict[str, int] = {}
                for r in rs:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                triaged = sum(1 for r in rs if r.status != "new")
                false = statuses.get("false_alarm", 0)

                def hours(pairs: Iterable[tuple[Any, Any]]) -> float | None:
                    xs = [
                        (_utc(b) - _utc(a)).total_seconds() / 3600
                        for a, b in pairs
                        if a is not None and b is not None
                    ]
                    return round(statistics.median(xs), 3) if xs else None

                real = [r for r in rs if r.status != "false_alarm"]
                out.append(
                    IssueOps(
                        issue=issue,
                        incidents=len(rs),
                        by_status=statuses,
                        triaged=triaged,
                        false_alarms=false,
                        precision=round(1 - false / triaged, 4) if triaged else None,
                        time_to_detect_h=hours(
                            (r.true_start or r.start, r.detected_at) for r in real
                        ),
                        detect_from_true_start=sum(1 for r in real if r.true_start is not None),
                        time_to_acknowledge_h=hours((r.created_at, r.acknowledged_at) for r in rs),
                        time_to_resolve_h=hours((r.created_at, r.resolved_at) for r in real),
                    )
                )
            return out
