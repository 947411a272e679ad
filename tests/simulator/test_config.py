"""SimConfig and Incident: sane defaults, clear errors, JSON round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simulator import Incident, SimConfig, default_incidents, load_incidents


@pytest.mark.parametrize("days", [3, 28])
def test_a_config_without_incidents_plants_the_defaults_of_its_window(days: int) -> None:
    cfg = SimConfig(days=days)
    assert cfg.incidents == default_incidents(days)
    assert cfg.end - cfg.start == pd.Timedelta(days=days)
    assert SimConfig(days=days, incidents=()).incidents == ()  # none means none


@pytest.mark.parametrize("days", [2, 3, 5, 7, 14, 28, 90])
def test_default_incidents_fit_any_window(days: int) -> None:
    incidents = default_incidents(days)
    for inc in incidents:
        assert days / 2 <= inc.start_day < days
        assert inc.end_day is None or inc.start_day < inc.end_day <= days
    assert sum(inc.end_day is not None for inc in incidents) >= 1
    SimConfig(days=days, incidents=incidents)  # accepted as a whole


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_items": 10}, "n_items must be an integer >= 50"),
        ({"days": 1}, "days must be an integer >= 2"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"start": pd.Timestamp("2026-01-01")}, "start must be a UTC timestamp"),
        ({"review_rate": 1.5}, "review_rate must be in 0..1"),
        ({"low_quality_rate": 0.9}, "low_quality_rate and harmful_rate"),
    ],
)
def test_bad_config_names_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimConfig(**kwargs)


def test_duplicate_incident_ids_rejected() -> None:
    inc = default_incidents(28)[0]
    with pytest.raises(ValueError, match="incident ids must be unique"):
        SimConfig(incidents=(inc, inc))


def test_incident_json_round_trip(tmp_path: Path) -> None:
    incidents = default_incidents(28)
    path = tmp_path / "incidents.json"
    path.write_text(json.dumps({"incidents": [i.to_dict() for i in incidents]}))
    assert load_incidents(path) == incidents
    path.write_text(json.dumps([i.to_dict() for i in incidents]))
    assert load_incidents(path) == incidents


def test_issue_must_match_kind() -> None:
    with pytest.raises(ValueError, match="moves issue 'harmful_interactions'"):
        Incident.from_dict(
            {
                "id": "x",
                "issue": "low_quality",
                "kind": "abuse_surge",
                "start_day": 1,
                "segment": {"category": "gaming"},
            }
        )
    with pytest.raises(ValueError, match="start_day must be a number"):
        Incident.from_dict(
            {"id": "x", "kind": "abuse_surge", "start_day": "soon", "segment": {"category": "news"}}
        )


def test_incidents_file_must_be_a_list(tmp_path: Path) -> None:
    path = tmp_path / "incidents.json"
    path.write_text(json.dumps({"id": "x"}))
    with pytest.raises(ValueError, match="must hold a JSON list"):
        load_incidents(path)


def test_segment_that_matches_nothing_is_an_error() -> None:
    from simulator import simulate

    incident = Incident.from_dict(
        {"id": "x", "kind": "abuse_surge", "start_day": 1, "segment": {"hashtag": "nosuchtag"}}
    )
    with pytest.raises(ValueError, match="matches no simulated item"):
        simulate(SimConfig(n_items=200, days=3, incidents=(incident,)))
