"""End to end: discover on raw tables and on a small simulation, the report, the CLI."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from discovery.evaluate import match_incidents, scores_from_truth
from discovery.pipeline import DiscoveryConfig, discover
from discovery.report import render_report
from features.io import write_dataset
from simulator import Incident, SimConfig, simulate, write_simulation
from surfacer.cli import run

PLANTED = (
    Incident(
        id="spam-us",
        issue="low_quality",
        kind="spam_campaign",
        start_day=12,
        end_day=None,
        segment={"region": "US"},
        strength=5.0,
    ),
    Incident(
        id="abuse-in",
        issue="harmful_interactions",
        kind="abuse_surge",
        start_day=15,
        end_day=None,
        segment={"region": "IN"},
        strength=6.0,
    ),
    Incident(
        id="misfire-br",
        issue="wrongful_enforcement",
        kind="enforcement_misfire",
        start_day=17,
        end_day=20,
        segment={"region": "BR"},
        strength=10.0,
        policy="adult_content",
    ),
)


@pytest.fixture(scope="module")
def small_sim():
    return simulate(SimConfig(n_items=5000, days=21, seed=3, incidents=PLANTED))


def test_raw_tables_surge_is_found_with_its_segment(raw_tables: dict[str, pd.DataFrame]) -> None:
    result = discover(raw_tables)
    found = [i for i in result.incidents if i.issue == "low_quality"]
    assert found, "the planted removal surge was not detected"
    inc = found[0]
    assert dict(inc.segment) == {"region": "BR", "format": "live"}
    start = pd.Timestamp("2026-01-16", tz="UTC")
    assert start - pd.Timedelta(hours=1) <= inc.start <= start + pd.Timedelta(hours=12)
    assert inc.detected_at <= start + pd.Timedelta(hours=24)
    ev = inc.evidence
    assert ev["observed_rate"] > 4 * ev["baseline_rate"]
    assert ev["p_value"] < 1e-6 and ev["contribution"] > 0.5
    assert len(result.incidents) == 1  # nothing else moved: no false alarm


@pytest.mark.slow
def test_planted_incidents_are_found_on_a_small_simulation(small_sim) -> None:
    scores = scores_from_truth(small_sim.truth, small_sim.tables["items"], random_state=0)
    result = discover(small_sim.tables, scores)
    start, end = result.data_range
    ev = match_incidents(
        result.incidents_json(), small_sim.incidents, data_start=start, data_end=end
    )
    assert ev["planted"] == 3
    assert ev["found"] >= 2, ev["matches"]
    assert ev["false_alarms_per_week"] <= 1.0, ev["false_alarm_list"]
    for d in result.incidents_json():
        assert set(d) == {"issue", "segment", "start", "detected_at", "severity", "evidence"}
        assert pd.Timestamp(d["detected_at"]) >= pd.Timestamp(d["start"])


def test_report_is_self_contained_and_escapes_user_text(
    raw_tables: dict[str, pd.DataFrame],
) -> None:
    result = discover(raw_tables)
    result.signals[0]["description"] = "<img src=x onerror=alert(1)>"
    # A folded spill-over is listed with its segment (hashtag values are user text).
    result.incidents[0].evidence["spillovers"] = [
        {"segment": "hashtag=<b>gamer</b>", "start": "2026-03-12T00:00:00+00:00"}
    ]
    result.clusters = pd.DataFrame(
        [
            {
                "kind": "caption",
                "key": "<script>alert('key')</script>",
                "size": 9,
                "items": 10,
                "flagged_share": 0.9,
                "creators": 2,
                "recent": 5,
                "growth": 3.0,
                "score": 9.0,
                "issues": "low_quality",
                "example": "<script>alert('x')</script> & more",
            }
        ]
    )
    html = render_report(result)
    assert html.startswith("<!doctype html>")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<code>hashtag=&lt;b&gt;gamer&lt;/b&gt;</code> from 2026-03-12 00:00" in html
    assert "data:image/png;base64," in html
    # Self-contained: no external resource is referenced.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "region=BR,format=live" in html
    # Evidence values are printed, never Python object reprs (e.g. a dict's bound methods).
    assert "built-in method" not in html
    assert " object at 0x" not in html


@pytest.mark.slow
def test_cli_discover_and_effect(
    small_sim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_simulation(small_sim, tmp_path / "sim")
    out = tmp_path / "out"
    assert run(["discover", "--data", str(data), "--out", str(out), "--quiet"]) == 0
    incidents = json.loads((out / "incidents.json").read_text())
    assert isinstance(incidents, list)
    assert any(
        i["issue"] == "low_quality" and i["segment"].get("region") == "US" for i in incidents
    )
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    capsys.readouterr()
    code = run(
        [
            "discover",
            "effect",
            "--data",
            str(data),
            "--issue",
            "wrongful_enforcement",
            "--segment",
            "region=BR",
            "--at",
            "2026-10-21T00:00Z",
            "--window-days",
            "3",
        ]
    )
    assert code == 0
    effect = json.loads(capsys.readouterr().out)
    # The misfire was rolled back at day 20: the BR rate falls relative to the rest.
    assert effect["did"] < 0 and effect["ci_high"] < 0
    assert (
        run(
            [
                "discover",
                "effect",
                "--data",
                str(data),
                "--issue",
                "nope",
                "--segment",
                "region=BR",
                "--at",
                "2026-10-21",
            ]
        )
        == 2
    )
    assert run(["discover", "--data", str(data)]) == 2  # --out missing


def test_cli_writes_what_discover_returns(
    raw_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    folder = write_dataset(raw_tables, tmp_path / "data")
    out = tmp_path / "o"
    assert run(["discover", "--data", str(folder), "--out", str(out), "--no-pairs", "--quiet"]) == 0
    incidents = json.loads((out / "incidents.json").read_text())
    assert [i["segment"] for i in incidents if i["issue"] == "low_quality"] == [
        {"region": "BR", "format": "live"}
    ]
    html = (out / "report.html").read_text()
    assert "region=BR,format=live" in html and "data:image/png;base64," in html


@pytest.mark.slow
def test_no_incident_is_reported_on_an_incident_free_simulation() -> None:
    sim = simulate(SimConfig(n_items=8000, days=21, seed=11, incidents=()))
    for scores in (None, scores_from_truth(sim.truth, sim.tables["items"], random_state=11)):
        result = discover(sim.tables, scores)
        assert result.incidents_json() == [], result.incidents_json()


@pytest.mark.slow
def test_a_misfire_on_a_segment_pair_is_found_on_the_pair_within_a_day() -> None:
    misfire = Incident(
        id="misfire-us-video",
        issue="wrongful_enforcement",
        kind="enforcement_misfire",
        start_day=14,
        end_day=18,
        segment={"region": "US", "format": "video"},
        strength=5.0,
        policy="adult_content",
    )
    sim = simulate(SimConfig(n_items=8000, days=21, seed=4, incidents=(misfire,)))
    scores = scores_from_truth(sim.truth, sim.tables["items"], random_state=4)
    result = discover(sim.tables, scores)
    start, end = result.data_range
    ev = match_incidents(result.incidents_json(), sim.incidents, data_start=start, data_end=end)
    hit = ev["matches"]["misfire-us-video"]
    assert hit is not None, result.incidents_json()
    # The pair itself, not region=US (the change is confined to its videos), named by the
    # actions citing the misfiring rule's policy.
    assert hit["segment"] == {"region": "US", "format": "video"}
    assert hit["evidence"]["signal"] == "wrongful_enforcement:flagged:adult_content"
    # Reported no earlier than the evidence allows: at or after the first alarm.
    assert pd.Timestamp(hit["detected_at"]) >= pd.Timestamp(hit["evidence"]["first_alarm"])
    assert ev["false_alarms"] == 0, ev["false_alarm_list"]


def _disable(scores: pd.DataFrame, issue: str, why: str) -> pd.DataFrame:
    """A scores frame as `surfacer score` writes it for a model with `issue` disabled."""
    out = scores.copy()
    out[issue] = float("nan")
    out["disabled"] = issue
    out.attrs["disabled"] = {issue: why}
    return out


def test_discovery_skips_a_disabled_issue_and_says_why(
    small_sim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    why = "constant scores on the holdout (std 0.00e+00)"
    scores = _disable(
        scores_from_truth(small_sim.truth, small_sim.tables["items"], random_state=3),
        "wrongful_enforcement",
        why,
    )
    result = discover(small_sim.tables, scores)
    assert result.skipped == {"wrongful_enforcement": why}
    assert not any(i.issue == "wrongful_enforcement" for i in result.incidents)
    assert not any(s["issue"] == "wrongful_enforcement" for s in result.signals)
    assert any(s["issue"] == "low_quality" for s in result.signals)
    assert "Skipped" in render_report(result) and why in render_report(result)
    # through the CLI, from the Parquet file `surfacer score` would write
    data = write_simulation(small_sim, tmp_path / "sim")
    path = tmp_path / "scores.parquet"
    scores.to_parquet(path, index=False)
    out = tmp_path / "out"
    argv = ["discover", "--data", str(data), "--scores", str(path), "--out", str(out), "--quiet"]
    assert run([*argv, "--no-pairs"]) == 0
    assert (
        f"skipped issue wrongful_enforcement: disabled in the model that scored the data ({why})"
        in (capsys.readouterr().out)
    )
    assert json.loads((out / "skipped.json").read_text()) == {"wrongful_enforcement": why}
    # every issue disabled: a clear error, not an empty report
    reasons = dict(scores.attrs["disabled"])
    for issue in ("low_quality", "harmful_interactions"):
        scores = _disable(scores, issue, "no usable threshold")
        reasons[issue] = "no usable threshold"
    scores["disabled"] = ",".join(reasons)
    scores.attrs["disabled"] = reasons
    with pytest.raises(ValueError, match="every issue of the scores file is disabled"):
        discover(small_sim.tables, scores)


@pytest.mark.slow
def test_a_thin_spam_ring_in_a_drawn_world_is_found_within_a_day() -> None:
    """World 2 at 20k items: the spam ring on one audio leaves 12 flagged items on its first
    day against ~3 expected. The fixed floor (-log10 p >= 6) reports it at 40 h; the floor
    from the size of the scan (the default) within 24 h, with no false alarm in that world."""
    from simulator.worlds import draw_world

    sim = simulate(draw_world(2).config(n_items=20_000, days=28, seed=0))
    scores = scores_from_truth(sim.truth, sim.tables["items"], random_state=0)
    fixed = discover(sim.tables, scores, config=DiscoveryConfig(severity_alpha=None))
    start, end = fixed.data_range
    late = match_incidents(fixed.incidents_json(), sim.incidents, data_start=start, data_end=end)
    assert late["matches"]["spam-audio"] is None
    result = discover(sim.tables, scores)
    start, end = result.data_range
    ev = match_incidents(result.incidents_json(), sim.incidents, data_start=start, data_end=end)
    hit = ev["matches"]["spam-audio"]
    assert hit is not None, result.incidents_json()
    assert ("audio_id", "a00003") in hit["segment"].items()
    assert ev["false_alarms"] == 0, ev["false_alarm_list"]


def test_cli_severity_alpha_reaches_discovery_and_is_range_checked(
    raw_tables: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import discovery.pipeline

    folder = write_dataset(raw_tables, tmp_path / "data")
    seen = []
    real = discovery.pipeline.discover

    def spy(*args, **kwargs):
        seen.append(kwargs["config"].severity_alpha)
        return real(*args, **kwargs)

    monkeypatch.setattr(discovery.pipeline, "discover", spy)
    argv = ["discover", "--data", str(folder), "--out", str(tmp_path / "o"), "--no-pairs"]
    assert run([*argv, "--quiet"]) == 0
    assert run([*argv, "--quiet", "--severity-alpha", "0.01"]) == 0
    assert run([*argv, "--quiet", "--fixed-floor"]) == 0
    assert seen == [DiscoveryConfig().severity_alpha, 0.01, None]
    assert run([*argv, "--severity-alpha", "2"]) == 2  # a level, not a p-value cut


def test_scores_of_another_dataset_are_refused_not_reported_as_nothing_found(
    raw_tables: dict[str, pd.DataFrame],
) -> None:
    # before: every unit lacked a segment and was dropped, so discovery said "0 incidents"
    n = 500
    scores = pd.DataFrame(
        {
            "item_id": [f"v{i}" for i in range(n)],
            "as_of": pd.Timestamp("2026-01-02", tz="UTC") + pd.to_timedelta(range(n), unit="min"),
            "anchor": "post",
            "claim": [0.9] * n,
            "flagged": ["claim"] * n,
            "disabled": "",
        }
    )
    with pytest.raises(ValueError, match=r"none of the scores file's 500 items .* another dataset"):
        discover(raw_tables, scores)


def test_a_dataset_without_a_single_case_says_so(raw_tables: dict[str, pd.DataFrame]) -> None:
    # the old message claimed the dataset had "no events, moderation or scores" whenever no
    # signal counted a case, e.g. with moderation that is all human, or scores flagging nothing
    with pytest.raises(ValueError, match="no issue signal could be built: the raw proxies need"):
        discover({"items": raw_tables["items"]})
    tables = {**raw_tables, "moderation": raw_tables["moderation"].assign(source="human")}
    with pytest.raises(ValueError, match=r"nothing to detect: none of the 2 issue signals"):
        discover(tables)
    items = raw_tables["items"]
    scores = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "as_of": items["created_at"] + pd.Timedelta(hours=1),
            "anchor": "post",
            "low_quality": 0.01,
            "flagged": "",
            "disabled": "",
        }
    )
    with pytest.raises(ValueError, match=r"nothing to detect: none of the \d+ issue signals"):
        discover(raw_tables, scores)


def test_a_failed_report_leaves_the_previous_run_whole(
    raw_tables: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import discovery.report as report

    result = discover(raw_tables)
    out = report.write_discovery(result, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"incidents.json", "skipped.json", "report.html"}

    def broken(_: object) -> str:
        raise RuntimeError("the renderer failed")

    # before: incidents.json and skipped.json were rewritten, then the report failed, so the
    # service showed this run's incidents beside the previous run's report
    monkeypatch.setattr(report, "render_report", broken)
    empty = dataclasses.replace(result, incidents=[])
    with pytest.raises(RuntimeError):
        report.write_discovery(empty, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
