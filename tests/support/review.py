"""Helpers for the review tests: FlaggedItem factories, hostile text payloads, analyst accounts
and their logins (console form and review API session)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx

from serving.schemas import FlaggedItem

PASSWORD = "correct horse battery staple"

# Text that breaks out of HTML text, attributes (both quote styles) and script contexts.
HOSTILE = (
    '<script>alert("xss")</script>',
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(2)",
    "</textarea><svg onload=alert(3)>",
)
ISSUES = ("low_quality", "harmful_interactions")


def flagged_item(
    i: int,
    *,
    flagged: tuple[str, ...] = ("low_quality",),
    p: float = 0.9,
    reach: float = 100.0,
    sampled: bool = False,
    model_version: str = "1",
    as_of: datetime | None = datetime(2026, 11, 1, tzinfo=UTC),
    caption: str = "a caption",
    extra: dict[str, Any] | None = None,
) -> FlaggedItem:
    scores = {issue: (p if issue in flagged else 0.05) for issue in ISSUES}
    return FlaggedItem(
        item_id=f"it_{i:05d}",
        as_of=as_of,
        anchor="post",
        snapshot={
            "item_id": f"it_{i:05d}",
            "caption": caption,
            "hashtags": "fyp viral",
            "n_view": reach,
            "n_report": 3.0,
            "mean_watch_frac": 0.4,
            "n_comment": 12.0,
            **(extra or {}),
        },
        scores=scores,
        flagged=list(flagged),
        reasons={
            issue: [{"feature": "n_report", "value": 3.0, "contribution": 0.7}] for issue in flagged
        },
        model_version=model_version,
        reach=reach,
        sampled=sampled,
    )


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def add_analysts(store: Any, *names: str, admin: tuple[str, ...] = ()) -> None:
    """Analyst accounts with the test PASSWORD (`admin` names get the admin flag)."""
    store.migrate()
    for name in names:
        store.add_analyst(name, PASSWORD, admin=name in admin, replace=True)


async def login(
    client: httpx.AsyncClient, name: str = "ann", password: str = PASSWORD
) -> httpx.Response:
    """Log in to the console through its form (the session cookie stays on `client`)."""
    page = await client.get("/console/login")
    assert page.status_code == 200
    return await client.post(
        "/console/login", data={"name": name, "password": password, "csrf": csrf_of(page.text)}
    )


async def session_headers(
    client: httpx.AsyncClient, name: str, password: str = PASSWORD
) -> dict[str, str]:
    """Log in to the review API; the headers that act as that analyst."""
    r = await client.post("/v1/review/sessions", json={"name": name, "password": password})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}
