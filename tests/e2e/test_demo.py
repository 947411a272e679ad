"""`surfacer demo` at a small size, through the CLI: it leaves what `surfacer serve` shows.

After the demo, a service built from the same settings has a champion, a review queue of
the demo's flagged snapshots (with reason codes) and the demo's discovery report.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest

from common.settings import get_settings
from serving.app import create_app
from serving.review import ReviewStore
from surfacer.cli import run
from surfacer.demo import CONSOLE_URL
from tests.support.review import PASSWORD, login
from tests.support.serving import running

pytestmark = pytest.mark.slow

KEY = "demo-test-key"


def test_demo_leaves_a_working_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SURFACER_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SURFACER_API_KEYS", json.dumps({KEY: ["score", "review", "admin"]}))
    monkeypatch.setenv("SURFACER_RELOAD_INTERVAL_S", "0")
    out = tmp_path / "demo"
    # the smallest size whose test window holds enough labels for the quality gate to pass
    # the post issues (at 1,000 items over 10 days it rightly disables every issue)
    code = run(["demo", "--out", str(out), "--items", "5000", "--days", "14", "--seed", "0"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert CONSOLE_URL in printed.out and "--dev-key" in printed.out

    # its own outputs
    assert (out / "data" / "items.parquet").is_file()
    assert (out / "data" / "incidents.json").is_file()
    scores = pd.read_parquet(out / "scores.parquet")
    flagged = int((scores["flagged"] != "").sum())
    assert flagged > 0

    # the discovery report where the service reads it
    settings = get_settings()
    assert (settings.discovery_path / "report.html").is_file()
    assert (settings.discovery_path / "incidents.json").is_file()

    # every flagged snapshot is in the review queue, flagged ones with their reason codes
    store = ReviewStore.from_settings(settings)
    try:
        assert store.stats().by_stratum == {"flagged": flagged}
        top = store.list_items(limit=5).items
        detail = store.get(top[0].id)
        assert detail.flagged and set(detail.reasons) == set(detail.flagged)
    finally:
        store.close()

    # the incidents are in the store, so the console lists them at once
    store = ReviewStore.from_settings(settings)
    try:
        incidents = store.list_incidents().total
        assert incidents == len(
            json.loads((settings.discovery_path / "incidents.json").read_text())
        )
        store.add_analyst("ann", PASSWORD)
    finally:
        store.close()

    async def console_view() -> tuple[str, str]:
        app = create_app(settings)
        async with running(app) as client:
            await login(client, "ann")
            listing = await client.get("/console/incidents")
            discovery = await client.get("/console/discovery")
            assert listing.status_code == 200 and discovery.status_code == 200
            return listing.text, discovery.text

    listing, discovery = asyncio.run(console_view())
    assert listing.count('href="/console/incidents/') == min(incidents, 50)
    assert "No discovery report yet" not in discovery and "issue discovery report" in discovery

    async def service_view() -> tuple[int, int, int]:
        app = create_app(settings)
        async with running(app) as client:
            headers = {"X-API-Key": KEY}
            model = await client.get("/v1/models", headers=headers)
            queue = await client.get("/v1/review/items", headers=headers)
            report = await client.get("/v1/reports/discovery", headers=headers)
            assert model.json()["alias"] == "champion"
            assert queue.json()["total"] == flagged
            return model.status_code, queue.status_code, report.status_code

    assert asyncio.run(service_view()) == (200, 200, 200)
