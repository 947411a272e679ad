"""Incidents in the review store: upsert without duplicates, lifecycle, cool-down, evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from serving.review.store import InvalidTransition, NotIncidentOwner, ReviewStore
from tests.support.review import flagged_item

T0 = datetime(2026, 10, 10, tzinfo=UTC)


def detected(
    segment: dict[str, str] | None = None,
    *,
    issue: str = "low_quality",
    start_h: float = 0,
    end_h: float = 48,
    severity: float = 12.0,
    ratio: float = 3.0,
) -> dict:
    return {
        "issue": issue,
        "segment": segment if segment is not None else {"hashtag": "lifehack"},
        "start": (T0 + timedelta(hours=start_h)).isoformat(),
        "end": (T0 + timedelta(hours=end_h)).isoformat(),
        "detected_at": (T0 + timedelta(hours=start_h + 6)).isoformat(),
        "severity": severity,
        "evidence": {"rate_ratio": ratio, "p_value": 1e-12, "nan": float("nan"), "w": (1, 2)},
        "signal": "low_quality:removed",
        "trend": {"times": [T0.isoformat()], "observed": [0.1], "baseline": [0.05]},
    }


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    s = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}", random_share=0.0)
    s.migrate()
    yield s
    s.close()


def test_rerun_over_same_data_changes_nothing(store: ReviewStore) -> None:
    run = [detected(), detected({"region": "US", "format": "video"}, issue="wrongful_enforcement")]
    first = store.upsert_incidents(run)
    assert len(first.created) == 2
    before = store.list_incidents().model_dump()
    history = [store.incident_history(i) for i in first.created]
    for _ in range(3):
        again = store.upsert_incidents(run)
        assert (
            again.created == []
            and again.updated == []
            and sorted(again.unchanged) == sorted(first.created)
        )
    assert store.list_incidents().model_dump() == before
    assert [store.incident_history(i) for i in first.created] == history


def test_overlapping_nested_detection_updates_the_open_incident(store: ReviewStore) -> None:
    (iid,) = store.upsert_incidents([detected()]).created
    # A later, overlapping window sees the same incident in a nested segment, running longer.
    out = store.upsert_incidents(
        [detected({"hashtag": "lifehack", "region": "US"}, start_h=24, end_h=96, severity=20)]
    )
    assert out.updated == [iid] and out.created == []
    inc = store.get_incident(iid)
    assert inc.segment == {"hashtag": "lifehack"}  # the segment analysts know stays
    assert inc.start == T0 and inc.end == T0 + timedelta(hours=96)
    assert inc.severity == 20 and inc.runs == 2
    events = [h.event for h in store.incident_history(iid)]
    assert events == ["detected", "updated"]
    # Another issue, a disjoint segment, or a later non-overlapping window is another incident.
    other = store.upsert_incidents(
        [
            detected(issue="harmful_interactions"),
            detected({"hashtag": "cooking"}),
            detected(start_h=300, end_h=340),
        ]
    )
    assert len(other.created) == 3
    assert store.list_incidents().total == 4


def test_lifecycle_owner_and_invalid_transitions(store: ReviewStore) -> None:
    (iid,) = store.upsert_incidents([detected()]).created
    with pytest.raises(InvalidTransition):
        store.transition(iid, "resolved", actor="ana")
    with pytest.raises(InvalidTransition, match="effect measurement"):
        store.transition(iid, "verified", actor="ana")
    inc = store.transition(iid, "acknowledged", actor="ana", note="looking")
    assert inc.owner == "ana" and inc.acknowledged_at is not None
    with pytest.raises(NotIncidentOwner):
        store.transition(iid, "mitigating", actor="bob")
    fix = T0 + timedelta(days=5)
    inc = store.transition(
        iid, "mitigating", actor="bob", admin=True, fix_at=fix, fix_description="ring banned"
    )
    assert inc.fix_at == fix and inc.effect == {"status": "scheduled", **inc.effect}
    assert [p.id for p in store.pending_effects()] == [iid]
    inc = store.transition(iid, "resolved", actor="ana")
    assert inc.status == "resolved" and inc.resolved_at is not None
    # The effect verifies it only when the interval lies below zero.
    inc = store.set_effect(
        iid, {"status": "measured", "did": 0.01, "ci_low": -0.01, "ci_high": 0.02}
    )
    assert inc.status == "resolved"
    inc = store.set_effect(
        iid, {"status": "measured", "did": -0.03, "ci_low": -0.05, "ci_high": -0.01}
    )
    assert inc.status == "verified" and inc.closed_at is not None
    with pytest.raises(InvalidTransition):
        store.transition(iid, "false_alarm", actor="ana")
    trail = [(h.event, h.from_status, h.to_status, h.actor) for h in store.incident_history(iid)]
    assert trail[-1] == ("transition", "resolved", "verified", "surfacer")
    assert ("transition", "new", "acknowledged", "ana") in trail
    with store.engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("UPDATE incident_history SET actor = 'forged'"))


def test_false_alarm_cool_down_and_alert_precision(store: ReviewStore) -> None:
    (iid,) = store.upsert_incidents([detected()]).created
    now = datetime(2026, 12, 1, tzinfo=UTC)
    store.transition(iid, "false_alarm", actor="ana", note="seasonal", now=now)
    later = detected(start_h=400, end_h=450)
    # Within the cool-down (default 7 days) a new episode on the issue x segment is suppressed...
    out = store.upsert_incidents([later], now=now + timedelta(days=2))
    assert out.suppressed == 1 and out.created == []
    # ... the overlapping one belongs to the false alarm and does not reopen it ...
    assert store.upsert_incidents([detected()], now=now).unchanged == [iid]
    assert store.get_incident(iid).status == "false_alarm"
    # ... and after it, alerts come again.
    out = store.upsert_incidents([later], now=now + timedelta(days=8))
    assert len(out.created) == 1
    (real,) = store.upsert_incidents(
        [detected({"category": "gaming"}, issue="low_quality")]
    ).created
    store.transition(real, "acknowledged", actor="ana")
    ops = {o.issue: o for o in store.incident_metrics()}["low_quality"]
    assert ops.triaged == 2 and ops.false_alarms == 1 and ops.precision == 0.5
    assert ops.time_to_detect_h == 6.0
    store.set_true_start(real, T0 - timedelta(hours=4))
    ops = {o.issue: o for o in store.incident_metrics()}["low_quality"]
    assert ops.detect_from_true_start == 1


def test_acknowledging_queues_tagged_evidence_with_wilson_share(store: ReviewStore) -> None:
    from serving.flag_writer import json_safe

    pool = []
    for i in range(6):
        d = json_safe(flagged_item(i, flagged=("low_quality",) if i < 4 else ()))
        d["stratum"] = "flagged" if i < 4 else "unflagged"
        pool.append(d)
    run = detected()
    run["sample_pool"] = pool
    (iid,) = store.upsert_incidents([run]).created
    store.transition(iid, "acknowledged", actor="ana")
    strata, items = store.incident_evidence(iid)
    assert {s.stratum: s.queued for s in strata} == {"flagged": 4, "unflagged": 2, "all": 6}
    assert all(s.labeled == 0 and s.ci is None for s in strata)
    # Label three flagged items: two confirmed, one rejected.
    for it, decision in zip(items[:3], ("confirm", "confirm", "reject"), strict=True):
        claim = store.claim(it["review_id"], "ana")
        store.label(it["review_id"], claim.lease, decision)
    flagged = {s.stratum: s for s in store.incident_evidence(iid)[0]}["flagged"]
    assert (flagged.labeled, flagged.confirmed) == (3, 2)
    assert flagged.ci is not None and flagged.ci[0] < 2 / 3 < flagged.ci[1]
    # Unflagged evidence does not enter the random sample (the recall estimate stays unbiased).
    assert store.stats().by_stratum.get("sample", 0) == 0


@pytest.mark.postgres
def test_incidents_on_postgres() -> None:
    from tests.support.postgres import temp_database, url

    with temp_database("w16_test") as name:
        s = ReviewStore(url(name), random_share=0.0)
        try:
            s.migrate()
            test_rerun_over_same_data_changes_nothing(s)
            with s.engine.begin() as conn:  # TRUNCATE fires no row trigger
                conn.execute(text("TRUNCATE incident_history, incidents CASCADE"))
            test_lifecycle_owner_and_invalid_transitions(s)
        finally:
            s.close()
