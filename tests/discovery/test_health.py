"""Model health: a planted vocabulary shift in a drawn world opens a model_health incident
naming the drifting features; the same world later in time (nothing changed) opens none."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discovery.health import health_records, psi, score_drift
from discovery.record import window_tables
from features.io import write_dataset
from features.snapshot import build_snapshots
from simulator import SimConfig, simulate
from simulator.worlds import draw_world
from surfacer.cli import run

BASE = SimConfig(n_items=3000, days=28, seed=0, incidents=())
SPLIT = pd.Timestamp("2026-10-15", tz="UTC")
END = pd.Timestamp("2026-10-29", tz="UTC")


@pytest.fixture(scope="module")
def worlds() -> dict[str, dict[str, pd.DataFrame]]:
    start = pd.Timestamp("2026-10-01", tz="UTC")
    same = simulate(BASE).tables
    # The same ecosystem, but its spam and abuse vocabulary is a drawn world's.
    shifted = simulate(dataclasses.replace(BASE, banks=draw_world(3).banks)).tables
    return {
        "reference": window_tables(same, start, SPLIT),
        "unshifted": window_tables(same, SPLIT, END),
        "shifted": window_tables(shifted, SPLIT, END),
    }


def test_vocabulary_shift_opens_one_incident_and_no_shift_none(worlds) -> None:  # type: ignore[no-untyped-def]
    ref = build_snapshots(worlds["reference"])
    records, drifts = health_records(ref, build_snapshots(worlds["unshifted"]))
    assert records == [], [d for d in drifts if d.drifted]
    records, drifts = health_records(ref, build_snapshots(worlds["shifted"]))
    (rec,) = records
    assert rec["issue"] == "model_inputs" and rec["segment"] == {}
    drifting = rec["evidence"]["drifting"]
    assert drifting and set(drifting) <= {"caption", "hashtags", "n_comment_toxic"}
    feature = rec["evidence"]["features"][0]
    assert feature["new_tokens"] and feature["segments"]


def test_score_shift_needs_a_large_enough_change() -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {"low_quality": rng.beta(2, 8, 5000), "harmful_interactions": rng.beta(1, 20, 5000)}
    )
    cur = pd.DataFrame(
        {"low_quality": rng.beta(4, 6, 5000), "harmful_interactions": rng.beta(1, 20, 5000)}
    )
    by = {d.name: d for d in score_drift(ref, cur, ["low_quality", "harmful_interactions"])}
    assert by["low_quality"].drifted and not by["harmful_interactions"].drifted
    assert psi(np.array([10, 10]), np.array([10, 10])) == 0.0


def test_health_command_upserts_model_health_incidents(worlds, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    write_dataset(worlds["reference"], tmp_path / "ref")
    write_dataset(worlds["shifted"], tmp_path / "now")
    url = f"sqlite:///{tmp_path / 'review.db'}"
    argv = [
        "discover",
        "health",
        "--reference",
        str(tmp_path / "ref"),
        "--data",
        str(tmp_path / "now"),
    ]
    assert run([*argv, "--store", url]) == 0
    out = capsys.readouterr().out
    assert "DRIFT" in out and "1 new" in out
    assert run([*argv, "--store", url]) == 0
    assert "0 new, 0 updated, 1 unchanged" in capsys.readouterr().out
    from serving.review.store import ReviewStore

    store = ReviewStore(url)
    try:
        (inc,) = store.list_incidents(kind="model_health").items
        assert inc.issue == "model_inputs" and inc.evidence["drifting"]
    finally:
        store.close()
