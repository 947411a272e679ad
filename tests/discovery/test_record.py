"""Discovery into the incident store: reruns add nothing, a planted fix is measured and verified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discovery.pipeline import discover
from discovery.record import incident_records, measure_effects, record_run, window_tables
from serving.review.store import ReviewStore

START = pd.Timestamp("2026-01-01", tz="UTC")


def fixed_at(tables: dict[str, pd.DataFrame], day: float) -> dict[str, pd.DataFrame]:
    """The raw_tables surge (region=BR, format=live from day 15) switched off at `day`: the
    extra removals of items posted after it are dropped (the baseline share is kept)."""
    items, mod = tables["items"], tables["moderation"]
    seg = items.set_index("item_id")
    rows = mod.join(seg[["region", "format", "created_at"]], on="item_id")
    after = (
        (rows["region"] == "BR")
        & (rows["format"] == "live")
        & (rows["created_at"] >= START + pd.Timedelta(days=day))
    ).to_numpy()
    rng = np.random.default_rng(1)
    keep = ~after | (rng.random(len(mod)) < 0.04 / 0.5)
    return {**tables, "moderation": mod[keep].reset_index(drop=True)}


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    s = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}", random_share=0.0)
    s.migrate()
    yield s
    s.close()


def test_three_overlapping_reruns_add_no_duplicate(
    raw_tables: dict[str, pd.DataFrame], store: ReviewStore
) -> None:
    result = discover(raw_tables)
    records = incident_records(result, raw_tables)
    assert records and all("end" in r and "trend" in r for r in records)
    first = store.upsert_incidents(records)
    assert len(first.created) == len(result.incidents)
    again = store.upsert_incidents(incident_records(discover(raw_tables), raw_tables))
    assert again.created == [] and again.updated == []
    # Sliding windows that each still hold the surge match the stored incident.
    for lo in (2, 4):
        cut = window_tables(
            raw_tables, START + pd.Timedelta(days=lo), START + pd.Timedelta(days=21)
        )
        out = store.upsert_incidents(incident_records(discover(cut), cut))
        assert out.created == [], f"window from day {lo} duplicated an incident"
    surge = [
        i
        for i in store.list_incidents(issue="low_quality").items
        if i.segment.get("region") == "BR"
    ]
    assert len(surge) == 1


def test_planted_fix_is_measured_and_verifies_the_incident(
    raw_tables: dict[str, pd.DataFrame], store: ReviewStore
) -> None:
    tables = fixed_at(raw_tables, 18)
    # Detection from data up to day 18, as it was seen while the incident ran.
    seen = window_tables(tables, START, START + pd.Timedelta(days=18))
    summary, _ = record_run(store, discover(seen), seen)
    (iid,) = [
        i.id
        for i in store.list_incidents(issue="low_quality").items
        if i.segment.get("region") == "BR"
    ]
    assert iid in summary.created
    store.transition(iid, "acknowledged", actor="ana")
    fix = START + pd.Timedelta(days=18)
    store.transition(
        iid, "mitigating", actor="ana", fix_at=fix.to_pydatetime(), fix_description="rule fixed"
    )
    # One day of data after the fix: the measurement waits and says until when.
    early = window_tables(tables, START, fix + pd.Timedelta(days=1))
    ((_, effect),) = measure_effects(store, early)
    assert effect["status"] == "waiting" and "2026-01-22" in effect["verdict"]
    assert store.get_incident(iid).status == "mitigating"
    ((_, effect),) = measure_effects(store, tables, min_days=2.5)
    assert effect["status"] == "measured" and effect["ci_high"] < 0
    assert effect["verdict"].startswith("the rate fell")
    assert len(effect["series"]["treated"]) == 2 * effect["window_days"]
    inc = store.get_incident(iid)
    assert inc.status == "verified" and inc.effect["did"] == effect["did"]
    assert store.pending_effects() == []


def test_no_fall_is_said_plainly(raw_tables: dict[str, pd.DataFrame], store: ReviewStore) -> None:
    # The surge never stops: a "fix" at day 18 did nothing.
    summary, _ = record_run(store, discover(raw_tables), raw_tables)
    iid = summary.created[0]
    store.transition(iid, "acknowledged", actor="ana")
    store.transition(
        iid, "mitigating", actor="ana", fix_at=(START + pd.Timedelta(days=18)).to_pydatetime()
    )
    ((_, effect),) = measure_effects(store, raw_tables, min_days=2.5)
    assert effect["status"] == "measured"
    assert effect["verdict"].startswith("no measurable fall")
    assert store.get_incident(iid).status == "mitigating"


def test_discover_store_and_watch_commands(
    raw_tables: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from features.io import write_dataset
    from surfacer.cli import run

    data = tmp_path / "data"
    write_dataset(raw_tables, data)
    url = f"sqlite:///{tmp_path / 'review.db'}"
    assert run(["discover", "--data", str(data), "--store", url, "--quiet"]) == 0
    assert "new, 0 updated" in capsys.readouterr().out
    assert run(["discover", "--data", str(data), "--store", url, "--quiet"]) == 0
    assert " 0 new, 0 updated" in capsys.readouterr().out
    argv = ["watch", "--data", str(data), "--store", url, "--every", "0s", "--window", "30d"]
    assert run([*argv, "--max-runs", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("run ")]
    assert len(lines) == 2 and all(" 0 new, 0 updated" in ln for ln in lines)
    assert run([*argv, "--every", "soon", "--max-runs", "1"]) == 2
    assert "error: duration 'soon'" in capsys.readouterr().err
    assert run(["discover", "--data", str(data), "--store", "nonsense://", "--quiet"]) == 2
    assert "is not a usable database URL" in capsys.readouterr().err
