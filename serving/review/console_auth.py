"""The console's login state: server-side analyst sessions, CSRF tokens and form fields.

Login checks an analyst's name and password (`ReviewStore.authenticate`) and opens a session
in the review database; the cookie (HttpOnly, SameSite=Strict, path /console) carries only
its random token. Every form carries the session's CSRF token; logout revokes the session,
so the cookie is dead even if someone kept a copy. The login form itself is protected by a
double-submit token in a short-lived cookie.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request

from serving.deps import ReviewStoreDep
from serving.limits import NUL

SESSION_COOKIE = "surfacer_console"
LOGIN_COOKIE = "surfacer_login_csrf"


@dataclass(frozen=True)
class Session:
    """A logged-in analyst: who, whether an admin, and the CSRF token of this session."""

    reviewer: str
    admin: bool
    csrf: str
    token: str


def same(a: str, b: str) -> bool:
    """Constant-time string equality that also accepts non-ASCII input (as bytes)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


class LoginRequired(HTTPException):
    """No valid session: the handler redirects to the login page."""

    def __init__(self) -> None:
        super().__init__(303, "login required", headers={"Location": "/console/login"})


def current_session(request: Request, store: ReviewStoreDep) -> Session:
    """The analyst's live session from the cookie, else a redirect to the login page."""
    token = request.cookies.get(SESSION_COOKIE)
    live = store.session(token) if token else None
    if live is None or token is None:
        raise LoginRequired()
    return Session(
        reviewer=live.analyst.name, admin=live.analyst.is_admin, csrf=live.csrf, token=token
    )


SessionDep = Annotated[Session, Depends(current_session)]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body as {field: first value} (the console posts nothing else)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise HTTPException(415, "expected an application/x-www-form-urlencoded form")
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


FormDep = Annotated[dict[str, str], Depends(read_form)]


def field(form: dict[str, str], name: str, max_length: int = 100) -> str:
    """One form field, stripped; 422 if longer than `max_length` or holding NUL."""
    value = form.get(name, "").strip()
    if len(value) > max_length:
        raise HTTPException(422, f"form field {name!r} longer than {max_length} characters")
    if NUL in value:
        raise HTTPException(422, f"form field {name!r} contains a NUL character")
    return value


def check_csrf(session: Session, token: str) -> None:
    if not same(session.csrf, token or ""):
        raise HTTPException(403, "invalid CSRF token")


def cookie_kwargs(request: Request) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/console",
    }
