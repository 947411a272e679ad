"""The analyst console: server-rendered HTML over the review store (no build step).

Login takes an API key with the review scope and sets a signed session cookie (HttpOnly,
SameSite=Strict); every form carries a CSRF token bound to that session. Templates are
Jinja2 with autoescape on and no `|safe`: captions, hashtags and comments are hostile text.
A strict Content-Security-Policy allows only this app's own script and stylesheet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from serving.auth import AuthError
from serving.deps import ReviewStoreDep, Service, ServiceDep
from serving.review.routers.items import ReviewId
from serving.review.routers.quality import issue_names
from serving.review.store import LeaseError, NotClaimable, ReviewStore
from serving.routers.reports import REPORT_HEADERS, read_report_html

router = APIRouter(prefix="/console", include_in_schema=False)

HERE = Path(__file__).resolve().parent.parent
STATIC = {
    "console.css": (HERE / "static" / "console.css", "text/css"),
    "console.js": (HERE / "static" / "console.js", "text/javascript"),
}
SESSION_COOKIE = "surfacer_console"
LOGIN_COOKIE = "surfacer_login_csrf"
SESSION_TTL_S = 8 * 3600
PAGE_SIZE = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Flash messages are looked up by code: nothing a request sends is echoed into the page.
MESSAGES = {
    "labeled": "Labelled.",
    "skipped": "Skipped.",
    "released": "Released back to the queue.",
    "claimed": "Claimed: the item is yours until the lease expires.",
    "empty": "Nothing to claim for this filter.",
    "conflict": "Someone else holds this item, or it was already reviewed.",
    "lease": "You do not hold this item's lease (it may have expired); claim it again.",
    "invalid": "That decision needs an issue.",
    "login": "Invalid API key, or the key lacks the review scope.",
    "csrf": "The form expired; please try again.",
    "logout": "Logged out.",
}
# Snapshot fields shown as the item's key signals, in order, with their labels.
SIGNALS = (
    ("n_view", "views"),
    ("n_viewers", "viewers"),
    ("n_report", "reports"),
    ("mean_watch_frac", "watch fraction"),
    ("n_comment", "comments"),
    ("n_comment_toxic", "toxic comments"),
    ("n_like", "likes"),
    ("n_share", "shares"),
    ("n_not_interested", "not interested"),
    ("creator_followers", "creator followers"),
    ("age_h", "age (h)"),
)
TEXT_FIELDS = ("caption", "hashtags")

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every {{ }} is HTML-escaped; templates never use |safe
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        if value != value:
            return "—"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


_env.filters["fmt"] = _fmt
_env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}%"


@dataclass(frozen=True)
class Session:
    """A logged-in analyst: who, and the CSRF token of this session."""

    reviewer: str
    key_id: str
    csrf: str


def _secret(svc: Service) -> bytes:
    # Derived from the configured keys: shared by all workers, and rotating the keys
    # invalidates every session.
    keys = sorted(svc.settings.api_keys)
    return hashlib.sha256(("surfacer-console\0" + "\0".join(keys)).encode()).digest()


def _same(a: str, b: str) -> bool:
    """Constant-time string equality that also accepts non-ASCII input (as bytes)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def _sign(secret: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).decode()


def _encode_session(svc: Service, reviewer: str, key_id: str) -> str:
    body = json.dumps({"r": reviewer, "k": key_id, "e": int(time.time()) + SESSION_TTL_S})
    payload = base64.urlsafe_b64encode(body.encode()).decode()
    return f"{payload}.{_sign(_secret(svc), payload.encode())}"


def _decode_session(svc: Service, cookie: str | None) -> Session | None:
    if not cookie or "." not in cookie:
        return None
    payload, _, sig = cookie.rpartition(".")
    secret = _secret(svc)
    if not _same(_sign(secret, payload.encode()), sig):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    if not isinstance(data, dict) or int(data.get("e", 0)) < time.time():
        return None
    csrf = _sign(secret, b"csrf\0" + sig.encode())[:32]
    return Session(reviewer=str(data["r"]), key_id=str(data["k"]), csrf=csrf)


class LoginRequired(HTTPException):
    """No valid session: the handler below redirects to the login page."""

    def __init__(self) -> None:
        super().__init__(303, "login required", headers={"Location": "/console/login"})


def current_session(request: Request, svc: ServiceDep) -> Session:
    """The analyst's session from the signed cookie, else a redirect to the login page."""
    session = _decode_session(svc, request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired()
    return session


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
    """One form field, stripped; 422 if longer than `max_length`."""
    value = form.get(name, "").strip()
    if len(value) > max_length:
        raise HTTPException(422, f"form field {name!r} longer than {max_length} characters")
    return value


def _check_csrf(session: Session, token: str) -> None:
    if not _same(session.csrf, token or ""):
        raise HTTPException(403, "invalid CSRF token")


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from `templates/` with the console's security headers."""
    context.setdefault("session", None)
    context.setdefault("message", None)
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def _redirect(url: str, **params: Any) -> RedirectResponse:
    query = {k: v for k, v in params.items() if v not in (None, "")}
    target = f"{url}?{urlencode(query)}" if query else url
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def _message(code: str | None) -> str | None:
    return MESSAGES.get(code or "")


def _cookie_kwargs(request: Request) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/console",
    }


# -- static ---------------------------------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The console's stylesheet and script (a fixed list, no path traversal)."""
    found = STATIC.get(name)
    if found is None:
        raise HTTPException(404, "not found")
    path, media = found
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=300"})


# -- login ----------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, msg: str | None = None) -> Response:
    """The login form (an API key with the review scope)."""
    token = secrets.token_urlsafe(24)
    response = render("login.html", message=_message(msg), login_csrf=token)
    response.set_cookie(LOGIN_COOKIE, token, max_age=600, **_cookie_kwargs(request))
    return response


@router.post("/login")
def login(
    request: Request,
    svc: ServiceDep,
    form: FormDep,
) -> Response:
    """Check the key, then set the session cookie and go to the queue."""
    api_key, reviewer = field(form, "api_key", 512), field(form, "reviewer")
    csrf = field(form, "csrf")
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not _same(expected, csrf):
        return _redirect("/console/login", msg="csrf")
    try:
        if not reviewer:
            raise AuthError(422, "name required")
        principal = svc.auth.check(api_key, "review")
    except AuthError:
        return _redirect("/console/login", msg="login")
    response = _redirect("/console")
    response.set_cookie(
        SESSION_COOKIE,
        _encode_session(svc, reviewer, principal.key_id),
        max_age=SESSION_TTL_S,
        **_cookie_kwargs(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
def logout(session: SessionDep, form: FormDep) -> Response:
    """End the session."""
    _check_csrf(session, field(form, "csrf"))
    response = _redirect("/console/login", msg="logout")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# -- queue ----------------------------------------------------------------------------------


def _known_issues(request: Request, store: ReviewStore) -> list[str]:
    names = issue_names(request)
    if names is not None:
        return names
    return [q.issue for q in store.quality()]


@router.get("")
def queue(
    request: Request,
    store: ReviewStoreDep,
    session: SessionDep,
    issue: str | None = None,
    status: str | None = "pending",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    msg: str | None = None,
) -> Response:
    """The queue, highest expected impact first, filtered by issue and status."""
    issues = _known_issues(request, store)
    issue = issue if issue in issues else None
    status = status if status in ("pending", "claimed", "labeled", "skipped") else None
    page = max(1, page)
    result = store.list_items(
        issue=issue, status=status, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    return render(
        "queue.html",
        session=session,
        message=_message(msg),
        page=result,
        page_no=page,
        pages=max(1, -(-result.total // PAGE_SIZE)),
        issues=issues,
        issue=issue,
        status=status,
        statuses=("pending", "claimed", "labeled", "skipped"),
        stats=store.stats(),
    )


@router.post("/next")
def review_next(
    request: Request,
    store: ReviewStoreDep,
    session: SessionDep,
    form: FormDep,
) -> Response:
    """Claim the next item for this analyst and open it."""
    _check_csrf(session, field(form, "csrf"))
    issue = field(form, "issue")
    got = store.claim_next(session.reviewer, issue=issue or None)
    if got is None:
        return _redirect("/console", msg="empty", issue=issue)
    return _redirect(f"/console/items/{got.item.id}", msg="claimed")


# -- item -----------------------------------------------------------------------------------


@router.get("/items/{review_id}")
def item_page(
    review_id: ReviewId,
    request: Request,
    store: ReviewStoreDep,
    session: SessionDep,
    msg: str | None = None,
) -> Response:
    """One item: caption, hashtags, key signals, scores, reason codes, labels, history."""
    try:
        item = store.get(review_id)
    except KeyError:
        return render("missing.html", status_code=404, session=session, review_id=review_id)
    held = store.lease_of(review_id, session.reviewer) is not None
    snapshot = item.snapshot
    signals = [(label, snapshot[k]) for k, label in SIGNALS if k in snapshot]
    shown = {"item_id", *TEXT_FIELDS, *(k for k, _ in SIGNALS)}
    other = sorted((k, v) for k, v in snapshot.items() if k not in shown)
    issues = _known_issues(request, store)
    relabel = [i for i in issues if i not in item.flagged] or issues
    if item.stratum == "sample":
        relabel = issues
    return render(
        "item.html",
        session=session,
        message=_message(msg),
        item=item,
        held=held,
        claimable=item.status == "pending" or (item.status == "claimed" and not item.lease_owner),
        caption=snapshot.get("caption"),
        hashtags=str(snapshot.get("hashtags") or "").split(),
        signals=signals,
        other=other,
        relabel=relabel[:9],
        history=store.history(review_id),
    )


@router.post("/items/{review_id}/claim")
def claim_item(
    review_id: ReviewId,
    store: ReviewStoreDep,
    session: SessionDep,
    form: FormDep,
) -> Response:
    """Claim this item for the analyst."""
    _check_csrf(session, field(form, "csrf"))
    try:
        store.claim(review_id, session.reviewer)
    except KeyError:
        raise HTTPException(404, "no such review item") from None
    except NotClaimable:
        return _redirect(f"/console/items/{review_id}", msg="conflict")
    return _redirect(f"/console/items/{review_id}", msg="claimed")


@router.post("/items/{review_id}/decide")
def decide(
    review_id: ReviewId,
    store: ReviewStoreDep,
    session: SessionDep,
    form: FormDep,
) -> Response:
    """Confirm, reject, relabel, skip or release the item this analyst holds."""
    _check_csrf(session, field(form, "csrf"))
    action, issue = field(form, "action", 16), field(form, "issue")
    note = field(form, "note", 2000)
    here = f"/console/items/{review_id}"
    lease = store.lease_of(review_id, session.reviewer)
    if lease is None:
        return _redirect(here, msg="lease")
    try:
        if action in ("confirm", "reject", "relabel"):
            store.label(review_id, lease, action, issue=issue or None, note=note or None)
            code = "labeled"
        elif action == "skip":
            store.skip(review_id, lease)
            code = "skipped"
        elif action == "release":
            store.release(review_id, lease)
            code = "released"
        else:
            raise HTTPException(422, "unknown action")
    except LeaseError:
        return _redirect(here, msg="lease")
    except ValueError:
        return _redirect(here, msg="invalid")
    return _redirect(here, msg=code)


# -- quality --------------------------------------------------------------------------------


@router.get("/quality")
def quality_page(request: Request, store: ReviewStoreDep, session: SessionDep) -> Response:
    """Live precision and estimated recall per issue, from the sampled labels."""
    return render(
        "quality.html",
        session=session,
        rows=store.quality(issue_names(request)),
        share=store.random_share,
    )


# -- discovery ------------------------------------------------------------------------------


@router.get("/discovery")
def discovery_page(svc: ServiceDep, session: SessionDep) -> Response:
    """The latest discovery report (the same self-contained page as /v1/reports/discovery)."""
    try:
        html = read_report_html(svc.settings)
    except FileNotFoundError:
        return render(
            "discovery_missing.html",
            status_code=404,
            session=session,
            folder=str(svc.settings.discovery_path),
        )
    return HTMLResponse(html, headers={**SECURITY_HEADERS, **REPORT_HEADERS})
