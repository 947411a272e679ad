"""The console in headless Chromium (Debian's /usr/bin/chromium via Playwright) on uvicorn.

Logs in, opens the queue and an item, claims and labels it with the keyboard, checks the
label in the store, and saves a screenshot to test-artifacts/console.png.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from serving.app import create_app
from serving.review.store import ReviewStore
from tests.support.review import HOSTILE, PASSWORD, add_analysts, flagged_item
from tests.support.serving import Registry, free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@contextlib.contextmanager
def uvicorn_server(app, port: int) -> Iterator[str]:  # type: ignore[no-untyped-def]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_login_queue_item_and_one_key_label(champion_v1: Registry, tmp_path: Path) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    settings = champion_v1.settings(tmp_path / "state", review_random_share=0.0)
    store = ReviewStore(settings.review_db_url)
    store.migrate()
    top = flagged_item(1, p=0.97, reach=5000.0, caption=HOSTILE[0] + " free giveaway, click")
    top.snapshot["top_comment"] = HOSTILE[1]
    store.add_flagged(
        [top] + [flagged_item(i, p=0.6 + i / 100, reach=300.0 + i) for i in range(2, 12)]
    )
    (row,) = store.find("it_00001")
    add_analysts(store, "ann")
    ARTIFACTS.mkdir(exist_ok=True)
    dialogs: list[str] = []

    app = create_app(settings)
    with uvicorn_server(app, free_port()) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{base}/console")
            expect(page).to_have_url(f"{base}/console/login")
            page.fill("input[name=name]", "ann")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/console")
            links = page.locator("a.item-link")
            expect(links).to_have_count(11)
            expect(links.first).to_have_text("it_00001")  # highest priority first
            links.first.click()
            expect(page).to_have_url(f"{base}/console/items/{row.id}")
            # The hostile caption is shown as text, not run.
            expect(page.locator("blockquote.caption")).to_contain_text(HOSTILE[0])
            page.keyboard.press("c")  # claim
            expect(page.locator("#status")).to_have_text("claimed")
            page.keyboard.press("y")  # confirm
            expect(page.locator("#status")).to_have_text("labeled")
            expect(page.locator("#labels")).to_contain_text("low_quality = 1")
            page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
            page.goto(f"{base}/console/quality")
            expect(page.locator("table.quality")).to_contain_text("low_quality")
            page.goto(f"{base}/console?status=")
            page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)
        finally:
            browser.close()
    assert dialogs == []  # no injected script ran
    detail = store.get(row.id)
    assert detail.status == "labeled"
    assert [(lab.issue, lab.label, lab.reviewer) for lab in detail.labels] == [
        ("low_quality", 1, "ann")
    ]
    assert (ARTIFACTS / "console.png").stat().st_size > 10_000
    store.close()


def test_incident_pages_in_chromium(champion_v1: Registry, tmp_path: Path) -> None:
    """The incident list and page with hostile segment values, captions and notes: shown as
    text, no dialog; acknowledging queues the sample; the SVG chart is drawn."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    from tests.serving.test_incident_pages import hostile_incident

    settings = champion_v1.settings(tmp_path / "state", review_random_share=0.0)
    store = ReviewStore(settings.review_db_url)
    store.migrate()
    (iid, *_) = store.upsert_incidents([hostile_incident(i) for i in range(len(HOSTILE))]).created
    add_analysts(store, "ann")
    ARTIFACTS.mkdir(exist_ok=True)
    dialogs: list[str] = []

    app = create_app(settings)
    with uvicorn_server(app, free_port()) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{base}/console/login")
            page.fill("input[name=name]", "ann")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/console")
            page.goto(f"{base}/console/incidents")
            expect(page.locator("table.incidents a.item-link")).to_have_count(len(HOSTILE))
            expect(page.locator("table.incidents")).to_contain_text(HOSTILE[0])
            page.screenshot(path=str(ARTIFACTS / "console-incidents.png"), full_page=True)
            page.goto(f"{base}/console/incidents/{iid}")
            expect(page.locator("[data-field=segment]")).to_contain_text(HOSTILE[0])
            expect(page.locator("figure.chart polyline")).to_have_count(2)
            page.fill("input[name=note]", HOSTILE[1])
            page.click("button[value=acknowledged]")
            expect(page.locator("#status")).to_have_text("acknowledged")
            expect(page.locator("[data-field=notes]")).to_have_text(HOSTILE[1])
            expect(page.locator("a.item-link")).to_have_count(3)
            page.screenshot(path=str(ARTIFACTS / "console-incident.png"), full_page=True)
        finally:
            browser.close()
    assert dialogs == []  # no injected script ran
    assert store.get_incident(iid).owner == "ann"
    assert (ARTIFACTS / "console-incident.png").stat().st_size > 10_000
    store.close()
