"""The discovery report served by the app: API endpoints (review scope) and the console page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from discovery.pipeline import discover
from discovery.report import write_discovery
from serving.app import create_app
from simulator import Incident, SimConfig, simulate
from tests.support.review import add_analysts, login
from tests.support.serving import REVIEW_KEY, SCORE_KEY, Registry, running

pytestmark = pytest.mark.anyio

# One strong planted surge, so the tiny simulation yields a non-empty incidents list.
PLANTED = (
    Incident(
        id="spam-us",
        issue="low_quality",
        kind="spam_campaign",
        start_day=6,
        end_day=None,
        segment={"region": "US"},
        strength=8.0,
    ),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def discovery_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `write_discovery` folder from `discover` on a tiny simulation."""
    sim = simulate(SimConfig(n_items=1500, days=10, seed=1, incidents=PLANTED))
    result = discover(sim.tables)
    assert result.incidents, "the planted surge should give the endpoint something to return"
    return write_discovery(result, tmp_path_factory.mktemp("discovery"))


async def test_incidents_and_report_match_the_written_files(
    champion_v1: Registry, tmp_path: Path, discovery_out: Path
) -> None:
    settings = champion_v1.settings(tmp_path / "state", discovery_dir=discovery_out)
    expected = json.loads((discovery_out / "incidents.json").read_text())
    async with running(create_app(settings)) as client:
        r = await client.get("/v1/reports/incidents", headers={"X-API-Key": REVIEW_KEY})
        assert r.status_code == 200, r.text
        assert r.json() == expected
        assert expected[0]["issue"] == "low_quality"

        r = await client.get("/v1/reports/discovery", headers={"X-API-Key": REVIEW_KEY})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "issue discovery report" in r.text
        assert r.text == (discovery_out / "report.html").read_text(encoding="utf-8")
        # Inline style and data: charts only; no script may run in the report.
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp

        spec = (await client.get("/openapi.json")).json()
        assert "/v1/reports/incidents" in spec["paths"] and "/v1/reports/discovery" in spec["paths"]


async def test_reports_need_the_review_scope(
    champion_v1: Registry, tmp_path: Path, discovery_out: Path
) -> None:
    settings = champion_v1.settings(tmp_path / "state", discovery_dir=discovery_out)
    async with running(create_app(settings)) as client:
        for path in ("/v1/reports/incidents", "/v1/reports/discovery"):
            assert (await client.get(path)).status_code == 401
            r = await client.get(path, headers={"X-API-Key": "not-a-key"})
            assert r.status_code == 401
            r = await client.get(path, headers={"X-API-Key": SCORE_KEY})
            assert r.status_code == 403
            assert "issue discovery report" not in r.text


async def test_default_folder_404_until_a_report_is_written(
    champion_v1: Registry, tmp_path: Path, discovery_out: Path
) -> None:
    state = tmp_path / "state"
    settings = champion_v1.settings(state)  # discovery_dir unset: data_dir/discovery
    folder = (state / "discovery").resolve()
    assert settings.discovery_path == folder
    headers = {"X-API-Key": REVIEW_KEY}
    async with running(create_app(settings)) as client:
        for path in ("/v1/reports/incidents", "/v1/reports/discovery"):
            r = await client.get(path, headers=headers)
            assert r.status_code == 404
            assert str(folder) in r.json()["detail"]
        # A run written there later is served without a restart.
        shutil.copytree(discovery_out, folder)
        r = await client.get("/v1/reports/incidents", headers=headers)
        assert r.status_code == 200
        assert r.json() == json.loads((folder / "incidents.json").read_text())


async def test_console_discovery_page_after_login(
    champion_v1: Registry, tmp_path: Path, discovery_out: Path
) -> None:
    empty = tmp_path / "no-report"
    empty.mkdir()
    settings = champion_v1.settings(tmp_path / "state", discovery_dir=empty)
    app = create_app(settings)
    add_analysts(app.state.review_store, "ann")
    async with running(app) as client:
        r = await client.get("/console/discovery")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert (await login(client)).status_code == 303
        queue = await client.get("/console")
        assert 'href="/console/discovery">Discovery</a>' in queue.text
        # No report yet: a console page (with the nav) that names the folder.
        r = await client.get("/console/discovery")
        assert r.status_code == 404
        assert str(empty.resolve()) in r.text and 'href="/console/quality"' in r.text
        # The report written into the folder is served to the logged-in analyst.
        shutil.copytree(discovery_out, empty, dirs_exist_ok=True)
        r = await client.get("/console/discovery")
        assert r.status_code == 200
        assert "issue discovery report" in r.text
        assert r.text == (discovery_out / "report.html").read_text(encoding="utf-8")
        assert "img-src data:" in r.headers["content-security-policy"]
