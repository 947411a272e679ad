"""The analyst console over ASGI: login, sessions, CSRF, escaping of hostile text, labelling."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serving.app import create_app
from serving.review.console_auth import SESSION_COOKIE
from serving.review.store import ReviewStore
from tests.support.review import HOSTILE, PASSWORD, add_analysts, csrf_of, flagged_item, login
from tests.support.serving import Registry, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(champion_v1: Registry, tmp_path: Path):  # type: ignore[no-untyped-def]
    s = champion_v1.settings(tmp_path / "state", review_random_share=0.0)
    store = ReviewStore(s.review_db_url)
    store.migrate()
    items = [flagged_item(i, caption=HOSTILE[i % len(HOSTILE)]) for i in range(4)]
    items.append(
        flagged_item(
            9,
            caption="fine",
            extra={"top_comment": HOSTILE[1], HOSTILE[2]: "key is hostile too"},
        )
    )
    items[0].snapshot["hashtags"] = HOSTILE[2]
    items[0].reasons["low_quality"][0]["feature"] = HOSTILE[0]
    store.add_flagged(items)
    add_analysts(store, "ann", "bob", '<b>"ann"</b>')
    store.close()
    return s


async def test_pages_need_login_and_cookie_is_strict(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    async with running(app) as client:
        for path in ("/console", "/console/items/1", "/console/quality"):
            r = await client.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/console/login"
        # A wrong password, an unknown analyst and a typed name alone are refused.
        for name, password in (("ann", "wrong password"), ("mallory", PASSWORD), ("ann", "")):
            r = await login(client, name, password)
            assert r.status_code == 303 and "msg=login" in r.headers["location"]
            assert SESSION_COOKIE not in client.cookies
        # A login post without the form's token is refused.
        r = await client.post("/console/login", data={"name": "ann", "password": PASSWORD})
        assert r.status_code == 303 and "msg=csrf" in r.headers["location"]
        r = await login(client)
        assert r.status_code == 303 and r.headers["location"] == "/console"
        cookie = r.headers["set-cookie"]
        assert SESSION_COOKIE in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert PASSWORD not in cookie
        page = await client.get("/console")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # A tampered cookie is no session.
        token = cookie.split(";")[0].split("=", 1)[1]
        client.cookies.set(SESSION_COOKIE, token[:-3] + "AAA", path="/console")
        assert (await client.get("/console")).status_code == 303


async def test_logout_revokes_the_session_server_side(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    async with running(app) as client:
        r = await login(client)
        token = r.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        page = await client.get("/console")
        r = await client.post("/console/logout", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303 and "msg=logout" in r.headers["location"]
        # A copy of the cookie taken before logout no longer works, in the console or the API.
        client.cookies.set(SESSION_COOKIE, token, path="/console")
        assert (await client.get("/console")).status_code == 303
        api = await client.get("/v1/review/items", headers={"Authorization": f"Bearer {token}"})
        assert api.status_code == 401


async def test_hostile_text_is_escaped_everywhere(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    async with running(app) as client:
        await login(client, name='<b>"ann"</b>')
        queue = await client.get("/console", params={"status": ""})
        pages = [queue.text]
        ids = re.findall(r'href="/console/items/(\d+)"', queue.text)
        assert len(ids) == 5
        for rid in ids:
            pages.append((await client.get(f"/console/items/{rid}")).text)
        html = "\n".join(pages)
        for payload in HOSTILE:
            assert payload not in html
        assert "<script>alert" not in html and "onerror=alert(1)>" not in html
        assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in html
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
        assert "&#39; onmouseover=&#39;alert(2)" in html
        assert "&lt;b&gt;&#34;ann&#34;&lt;/b&gt;" in html
        # The only scripts are the console's own file.
        assert re.findall(r"<script[^>]*>", html) == [
            '<script src="/console/static/console.js" defer>'
        ] * len(pages)


async def test_claim_and_label_with_forms(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    async with running(app) as client:
        await login(client)
        queue = await client.get("/console")
        token = csrf_of(queue.text)
        # Without the CSRF token a state change is refused.
        r = await client.post("/console/next", data={"issue": ""})
        assert r.status_code == 403
        r = await client.post("/console/next", data={"csrf": token, "issue": ""})
        assert r.status_code == 303
        item_url = r.headers["location"].split("?")[0]
        rid = int(item_url.rsplit("/", 1)[1])
        page = await client.get(item_url)
        assert 'data-key="y"' in page.text and 'data-key="n"' in page.text
        r = await client.post(f"{item_url}/decide", data={"csrf": token, "action": "confirm"})
        assert r.status_code == 303 and "msg=labeled" in r.headers["location"]
        page = await client.get(item_url)
        assert 'id="status">labeled<' in page.text
        # Labelling again without a lease is refused and stores nothing.
        r = await client.post(f"{item_url}/decide", data={"csrf": token, "action": "reject"})
        assert "msg=lease" in r.headers["location"]
        quality = await client.get("/console/quality")
        assert quality.status_code == 200 and "low_quality" in quality.text
        assert (await client.get("/console/static/console.js")).status_code == 200
        assert (await client.get("/console/static/..%2Fstore.py")).status_code == 404
    store = ReviewStore(settings.review_db_url)
    detail = store.get(rid)
    assert [(lab.issue, lab.label, lab.reviewer) for lab in detail.labels] == [
        ("low_quality", 1, "ann")
    ]
    store.close()


async def test_another_analyst_cannot_act_on_my_claim(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    async with running(app) as ann, running(app) as bob:
        await login(ann, "ann")
        await login(bob, "bob")
        token = csrf_of((await ann.get("/console")).text)
        r = await ann.post("/console/next", data={"csrf": token, "issue": ""})
        item_url = r.headers["location"].split("?")[0]
        bob_token = csrf_of((await bob.get(item_url)).text)
        for action in ("release", "confirm"):
            r = await bob.post(f"{item_url}/decide", data={"csrf": bob_token, "action": action})
            assert "msg=lease" in r.headers["location"]
        page = await bob.get(item_url)
        assert 'id="status">claimed<' in page.text
        # A relabel to an issue the model does not know is refused.
        r = await ann.post(
            f"{item_url}/decide",
            data={"csrf": token, "action": "relabel", "issue": "made_up_issue"},
        )
        assert "msg=invalid" in r.headers["location"]
        r = await ann.post(f"{item_url}/decide", data={"csrf": token, "action": "release"})
        assert "msg=released" in r.headers["location"]
        # NUL or oversized form fields are a 422, never a database error.
        r = await ann.post(f"{item_url}/decide", data={"csrf": token, "action": "a\x00"})
        assert r.status_code == 422
        r = await ann.post(f"{item_url}/decide", data={"csrf": token, "note": "n" * 3000})
        assert r.status_code == 422
