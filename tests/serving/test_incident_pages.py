"""Incidents over HTTP: console pages (escaping, CSRF, owners) and the /v1/incidents API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.app import create_app
from serving.flag_writer import json_safe
from serving.review.store import ReviewStore
from tests.support.review import (
    HOSTILE,
    add_analysts,
    csrf_of,
    flagged_item,
    login,
    session_headers,
)
from tests.support.serving import ADMIN_KEY, REVIEW_KEY, SCORE_KEY, Registry, running

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 10, 10, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def hostile_incident(i: int) -> dict:
    payload = HOSTILE[i % len(HOSTILE)]
    pool = []
    for k in range(3):
        d = json_safe(flagged_item(100 * i + k, caption=payload, flagged=("low_quality",)))
        d["stratum"] = "flagged"
        pool.append(d)
    times = [(T0 + timedelta(hours=6 * k)).isoformat() for k in range(20)]
    return {
        "issue": "low_quality",
        "segment": {"hashtag": payload, "region": f"R{i}"},
        "start": (T0 + timedelta(days=2)).isoformat(),
        "end": (T0 + timedelta(days=4)).isoformat(),
        "detected_at": (T0 + timedelta(days=2, hours=6)).isoformat(),
        "severity": 9.5,
        "signal": payload,
        "evidence": {
            "rate_ratio": 3.0,
            "p_value": 1e-10,
            "drilldown": [{"key": f"hashtag={payload}", "expected": 1.0, "actual": 4.0}],
        },
        "trend": {
            "times": times,
            "observed": [0.01 * (1 + (k > 8)) for k in range(20)],
            "baseline": [0.01] * 20,
            "marked": [times[8], times[9]],
        },
        "sample_pool": pool,
    }


@pytest.fixture
def settings(champion_v1: Registry, tmp_path: Path):  # type: ignore[no-untyped-def]
    s = champion_v1.settings(tmp_path / "state", review_random_share=0.0)
    store = ReviewStore(s.review_db_url)
    store.migrate()
    store.upsert_incidents([hostile_incident(i) for i in range(len(HOSTILE))])
    add_analysts(store, "ann", "bob", '<b>"ann"</b>', "boss", admin=("boss",))
    store.close()
    return s


async def test_incident_pages_escape_hostile_segments_and_text(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    async with running(app) as client:
        assert (await client.get("/console/incidents")).status_code == 303  # login first
        await login(client, name='<b>"ann"</b>')
        listing = await client.get("/console/incidents")
        assert listing.status_code == 200
        ids = re.findall(r'href="/console/incidents/(\d+)"', listing.text)
        assert len(ids) == len(HOSTILE)
        pages = [listing.text]
        for iid in ids:
            page = await client.get(f"/console/incidents/{iid}")
            assert "acknowledging queues a sample of the 3 scored items" in page.text
            token = csrf_of(page.text)
            # Acknowledge with a hostile note: the sample is queued and shown, escaped.
            r = await client.post(
                f"/console/incidents/{iid}/transition",
                data={"csrf": token, "to": "acknowledged", "note": HOSTILE[0]},
            )
            assert r.status_code == 303 and "msg=moved" in r.headers["location"]
            page = await client.get(f"/console/incidents/{iid}")
            assert "<svg" in page.text and "<polyline" in page.text
            assert page.text.count('href="/console/items/') == 3
            rid = re.findall(r'href="/console/items/(\d+)"', page.text)[0]
            item = await client.get(f"/console/items/{rid}")
            assert f'href="/console/incidents/{iid}"' in item.text
            pages.append(item.text)
            pages.append(page.text)
        html = "\n".join(pages)
        for payload in HOSTILE:
            assert payload not in html
        assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in html
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
        assert re.findall(r"<script[^>]*>", html) == [
            '<script src="/console/static/console.js" defer>'
        ] * len(pages)
        # Filters: by segment text (hostile too) and by status.
        r = await client.get("/console/incidents", params={"segment": HOSTILE[3]})
        assert len(re.findall(r'href="/console/incidents/(\d+)"', r.text)) == 1
        r = await client.get("/console/incidents", params={"status": "new"})
        assert "No incidents for this filter" in r.text


async def test_transitions_need_session_csrf_and_ownership(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    async with running(app) as client:
        # No session: the form post is sent to the login page, nothing moves.
        r = await client.post("/console/incidents/1/transition", data={"to": "acknowledged"})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        await login(client, name="ann")
        page = await client.get("/console/incidents/1")
        token = csrf_of(page.text)
        r = await client.post(
            "/console/incidents/1/transition", data={"csrf": "forged", "to": "acknowledged"}
        )
        assert r.status_code == 403
        r = await client.post(
            "/console/incidents/1/transition", data={"csrf": token, "to": "resolved"}
        )
        assert "msg=transition" in r.headers["location"]
        r = await client.post(
            "/console/incidents/1/transition", data={"csrf": token, "to": "acknowledged"}
        )
        assert "msg=moved" in r.headers["location"]
        # API: reading with a review key or a session; moving needs an analyst session.
        r = await client.get("/v1/incidents", headers={"X-API-Key": REVIEW_KEY})
        assert r.status_code == 200 and r.json()["total"] == len(HOSTILE)
        assert (
            await client.get("/v1/incidents", headers={"X-API-Key": SCORE_KEY})
        ).status_code == 403
        assert (await client.get("/v1/incidents")).status_code == 401
        body = {
            "to": "mitigating",
            "fix_at": "2026-10-15T00:00:00Z",
            "fix_description": "fixed",
            "true_start": "2026-10-11T12:00:00Z",
        }
        r = await client.post(
            "/v1/incidents/1/transitions", json=body, headers={"X-API-Key": REVIEW_KEY}
        )
        assert r.status_code == 401
        bob = await session_headers(client, "bob")
        r = await client.post("/v1/incidents/1/transitions", json=body, headers=bob)
        assert r.status_code == 403 and "owned by ann" in r.json()["detail"]
        ann = await session_headers(client, "ann")
        r = await client.post("/v1/incidents/1/transitions", json=body, headers=ann)
        assert r.status_code == 200
        assert r.json()["status"] == "mitigating" and r.json()["effect"]["status"] == "scheduled"
        assert r.json()["true_start"] == "2026-10-11T12:00:00Z"
        r = await client.post("/v1/incidents/1/transitions", json={"to": "verified"}, headers=ann)
        assert r.status_code == 422  # the effect measurement verifies, never an analyst
        r = await client.post("/v1/incidents/1/transitions", json={"to": "mitigating"}, headers=ann)
        assert r.status_code == 409
        boss = await session_headers(client, "boss")
        r = await client.post("/v1/incidents/1/transitions", json={"to": "resolved"}, headers=boss)
        assert r.status_code == 200 and r.json()["owner"] == "ann"
        history = (await client.get("/v1/incidents/1/history", headers=ann)).json()
        assert [(h["to_status"], h["actor"]) for h in history if h["event"] == "transition"] == [
            ("acknowledged", "ann"),
            ("mitigating", "ann"),
            ("resolved", "boss"),
        ]
        evidence = (await client.get("/v1/incidents/1/evidence", headers=ann)).json()
        assert {e["stratum"]: e["queued"] for e in evidence}["flagged"] == 3
        ops = (await client.get("/v1/incidents/metrics", headers=ann)).json()
        assert ops[0]["issue"] == "low_quality" and ops[0]["triaged"] == 1
        assert (await client.get("/v1/incidents/999", headers=ann)).status_code == 404
        page = await client.get("/console/incidents/1")
        assert page.status_code == 200 and "scheduled" in page.text
        days = [(T0 + timedelta(days=k)).isoformat() for k in range(10)]
        store = ReviewStore(settings.review_db_url)
        store.set_effect(
            1,
            {
                "status": "measured",
                "did": -0.02,
                "ci_low": -0.03,
                "ci_high": -0.01,
                "verdict": "the rate fell: -0.02",
                "series": {
                    "times": days,
                    "treated": [0.05] * 5 + [0.01] * 5,
                    "control": [0.01] * 10,
                },
            },
        )
        store.close()
        page = await client.get("/console/incidents/1")
        assert 'id="status">verified<' in page.text and "the rate fell" in page.text
        assert 'class="line treated"' in page.text and 'class="mark"' in page.text
        metrics = (await client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})).text
        assert 'surfacer_incidents{issue="low_quality",status="verified"} 1.0' in metrics
        assert 'surfacer_incident_alert_precision{issue="low_quality"} 1.0' in metrics


async def test_model_health_incident_page_names_the_drifting_features(settings) -> None:  # type: ignore[no-untyped-def]
    store = ReviewStore(settings.review_db_url)
    record = {
        "issue": "model_inputs",
        "segment": {},
        "start": T0.isoformat(),
        "end": (T0 + timedelta(days=7)).isoformat(),
        "detected_at": (T0 + timedelta(days=7)).isoformat(),
        "severity": 50.0,
        "signal": "feature_drift",
        "evidence": {
            "drifting": ["hashtags"],
            "features": [
                {
                    "name": "hashtags",
                    "kind": "text",
                    "psi": 0.3,
                    "p_value": 1e-50,
                    "new_tokens": [HOSTILE[0]],
                    "segments": [{"segment": {"region": HOSTILE[1]}, "psi": 0.5}],
                }
            ],
        },
    }
    (iid,) = store.upsert_incidents([record], kind="model_health").created
    store.close()
    app = create_app(settings)
    async with running(app) as client:
        await login(client, name="ann")
        page = await client.get(f"/console/incidents/{iid}")
        assert page.status_code == 200
        assert "Drifting features" in page.text and "hashtags" in page.text
        assert HOSTILE[0] not in page.text and HOSTILE[1] not in page.text
        listing = await client.get(
            "/v1/incidents", params={"kind": "model_health"}, headers={"X-API-Key": REVIEW_KEY}
        )
        assert [i["issue"] for i in listing.json()["items"]] == ["model_inputs"]
