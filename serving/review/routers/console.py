"""The analyst console: server-rendered HTML over the review store (no build step).

Analysts log in with their name and password (`surfacer review add-analyst`); the session
lives in the review database (`serving.review.console_auth`) and every form carries its CSRF
token. Templates are Jinja2 with autoescape on and no `|safe`: captions, hashtags and
comments are hostile text. A strict Content-Security-Policy allows only this app's own
script and stylesheet.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from serving.deps import ReviewStoreDep, ServiceDep
from serving.limits import ANALYST_NAME_MAX, ISSUE_MAX, NOTE_MAX, PASSWORD_MAX
from serving.review.charts import line_chart
from serving.review.console_auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    FormDep,
    SessionDep,
    check_csrf,
    cookie_kwargs,
    field,
    same,
)
from serving.review.db import parse_as_of
from serving.review.incidents import TRANSITIONS, effect_fell
from serving.review.routers.items import ReviewId, model_issues
from serving.review.store import (
    InvalidTransition,
    LeaseError,
    NotClaimable,
    NotIncidentOwner,
    ReviewStore,
)
from serving.routers.reports import REPORT_HEADERS, read_report_html

router = APIRouter(prefix="/console", include_in_schema=False)

HERE = Path(__file__).resolve().parent.parent
STATIC = {
    "console.css": (HERE / "static" / "console.css", "text/css"),
    "console.js": (HERE / "static" / "console.js", "text/javascript"),
}
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
    "invalid": "That decision needs one of the model's issues.",
    "login": "Unknown analyst or wrong password.",
    "csrf": "The form expired; please try again.",
    "logout": "Logged out.",
    "moved": "Incident updated.",
    "transition": "That move is not possible from the incident's status (it may have changed).",
    "owner": "Another analyst owns this incident; only they or an admin may move it.",
    "fix_at": "The fix time is not a timestamp (use ISO 8601, e.g. 2026-10-24T00:00).",
}
INCIDENT_STATUSES = ("new", "acknowledged", "mitigating", "resolved", "verified", "false_alarm")
MOVE_LABELS = {
    "acknowledged": "Acknowledge",
    "mitigating": "Record fix (mitigating)",
    "resolved": "Resolve",
    "false_alarm": "False alarm",
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
    """The login form (an analyst's name and password)."""
    token = secrets.token_urlsafe(24)
    response = render("login.html", message=_message(msg), login_csrf=token)
    response.set_cookie(LOGIN_COOKIE, token, max_age=600, **cookie_kwargs(request))
    return response


@router.post("/login")
def login(request: Request, svc: ServiceDep, store: ReviewStoreDep, form: FormDep) -> Response:
    """Check the name and password, then open a session and go to the queue."""
    name = field(form, "name", ANALYST_NAME_MAX)
    password = field(form, "password", PASSWORD_MAX)
    csrf = field(form, "csrf")
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not same(expected, csrf):
        return _redirect("/console/login", msg="csrf")
    analyst = store.authenticate(name, password) if name and password else None
    if analyst is None:
        return _redirect("/console/login", msg="login")
    ttl = svc.settings.session_hours * 3600
    token, _ = store.open_session(analyst, ttl)
    response = _redirect("/console")
    response.set_cookie(SESSION_COOKIE, token, max_age=int(ttl), **cookie_kwargs(request))
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
def logout(session: SessionDep, store: ReviewStoreDep, form: FormDep) -> Response:
    """End the session: revoked in the database, so the cookie no longer works anywhere."""
    check_csrf(session, field(form, "csrf"))
    store.revoke_session(session.token)
    response = _redirect("/console/login", msg="logout")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# -- queue ----------------------------------------------------------------------------------


def _disabled_issues(request: Request) -> dict[str, str]:
    """Issues the serving model does not score, and why (shown above the queue)."""
    model = request.app.state.service.holder.current
    return dict(getattr(model.bundle, "disabled", None) or {}) if model is not None else {}


def _known_issues(request: Request, store: ReviewStore) -> list[str]:
    names = model_issues(request)
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
        disabled=_disabled_issues(request),
    )


@router.post("/next")
def review_next(
    request: Request,
    store: ReviewStoreDep,
    session: SessionDep,
    form: FormDep,
) -> Response:
    """Claim the next item for this analyst and open it."""
    check_csrf(session, field(form, "csrf"))
    issue = field(form, "issue", ISSUE_MAX)
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
        incidents=store.incidents_of_item(review_id),
    )


@router.post("/items/{review_id}/claim")
def claim_item(
    review_id: ReviewId,
    store: ReviewStoreDep,
    session: SessionDep,
    form: FormDep,
) -> Response:
    """Claim this item for the analyst."""
    check_csrf(session, field(form, "csrf"))
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
    request: Request,
    store: ReviewStoreDep,
    session: SessionDep,
    form: FormDep,
) -> Response:
    """Confirm, reject, relabel, skip or release the item this analyst holds."""
    check_csrf(session, field(form, "csrf"))
    action, issue = field(form, "action", 16), field(form, "issue", ISSUE_MAX)
    note = field(form, "note", NOTE_MAX)
    here = f"/console/items/{review_id}"
    lease = store.lease_of(review_id, session.reviewer)
    if lease is None:
        return _redirect(here, msg="lease")
    who = {"actor": session.reviewer, "admin": session.admin}
    try:
        if action in ("confirm", "reject", "relabel"):
            store.label(
                review_id,
                lease,
                action,
                issue=issue or None,
                note=note or None,
                issues=model_issues(request),
                **who,
            )
            code = "labeled"
        elif action == "skip":
            store.skip(review_id, lease, **who)
            code = "skipped"
        elif action == "release":
            store.release(review_id, lease, **who)
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
        rows=store.quality(model_issues(request)),
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


# -- incidents ------------------------------------------------------------------------------

IncidentId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="Incident id.")]


@router.get("/incidents")
def incidents_page(
    store: ReviewStoreDep,
    session: SessionDep,
    status: str | None = None,
    issue: Annotated[str | None, Query(max_length=ISSUE_MAX)] = None,
    segment: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    msg: str | None = None,
) -> Response:
    """Incidents, newest detection first, filtered by status, issue and segment; and the
    operational metrics per issue type."""
    ops = store.incident_metrics()
    issues = sorted({o.issue for o in ops})
    status = status if status in INCIDENT_STATUSES else None
    issue = issue if issue in issues else None
    segment = (segment or "").replace("\x00", "").strip() or None
    result = store.list_incidents(
        status=status,
        issue=issue,
        segment=segment,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    return render(
        "incidents.html",
        session=session,
        message=_message(msg),
        page=result,
        page_no=page,
        pages=max(1, -(-result.total // PAGE_SIZE)),
        statuses=INCIDENT_STATUSES,
        issues=issues,
        status=status,
        issue=issue,
        segment=segment,
        ops=ops,
    )


def _trend_chart(trend: dict[str, Any] | None, title: str) -> Any:
    if not trend:
        return None
    marked = trend.get("marked")
    bands = [(marked[0], marked[1], "anomaly window (start → detected)")] if marked else []
    return line_chart(
        title,
        trend.get("times") or [],
        [
            ("observed", "observed rate", trend.get("observed") or []),
            ("baseline", "baseline", trend.get("baseline") or []),
        ],
        bands=bands,
    )


def _effect_chart(effect: dict[str, Any] | None, fix_at: Any) -> Any:
    series = (effect or {}).get("series") or {}
    if not series.get("times"):
        return None
    return line_chart(
        "issue rate per day before and after the fix: segment vs the rest",
        series["times"],
        [
            ("treated", "incident segment", series.get("treated") or []),
            ("control", "control (rest of the platform)", series.get("control") or []),
        ],
        lines=[(fix_at, "fix")],
    )


@router.get("/incidents/{incident_id}")
def incident_page(
    incident_id: IncidentId,
    store: ReviewStoreDep,
    session: SessionDep,
    msg: str | None = None,
) -> Response:
    """One incident: trend with baseline and window, evidence, drill-down, lifecycle, effect."""
    try:
        inc = store.get_incident(incident_id)
    except KeyError:
        return render(
            "missing.html", status_code=404, session=session, review_id=f"incident {incident_id}"
        )
    strata, items = store.incident_evidence(incident_id)
    ev = inc.evidence
    facts = [
        ("baseline rate", ev.get("baseline_rate")),
        ("observed rate", ev.get("observed_rate")),
        ("rate ratio", ev.get("rate_ratio")),
        ("events", ev.get("numerator")),
        ("expected", ev.get("expected")),
        ("p-value", f"{ev['p_value']:.2e}" if isinstance(ev.get("p_value"), float) else None),
        ("items", ev.get("items")),
        ("discovery runs", inc.runs),
    ]
    trend = store.incident_trend(incident_id)
    moves = list(TRANSITIONS.get(inc.status, ()))
    return render(
        "incident.html",
        session=session,
        message=_message(msg),
        inc=inc,
        facts=[(k, v) for k, v in facts if v is not None],
        trend_chart=_trend_chart(trend, f"{inc.issue} · {inc.segment_key} ({inc.signal or '-'})"),
        effect_chart=_effect_chart(inc.effect, inc.fix_at) if inc.fix_at else None,
        fell=effect_fell(inc.effect),
        moves=moves,
        labels=MOVE_LABELS,
        strata=strata,
        items=items,
        pool=store.incident_pool_size(incident_id),
        drilldown=ev.get("drilldown") or [],
        history=store.incident_history(incident_id),
    )


@router.post("/incidents/{incident_id}/transition")
def incident_transition(
    incident_id: IncidentId,
    store: ReviewStoreDep,
    session: SessionDep,
    form: FormDep,
) -> Response:
    """Move the incident on as this analyst (CSRF-checked; the owner or an admin)."""
    check_csrf(session, field(form, "csrf"))
    to = field(form, "to", 16)
    note = field(form, "note", NOTE_MAX) or None
    fix_text = field(form, "fix_at", 40)
    here = f"/console/incidents/{incident_id}"
    fix_at = None
    if to == "mitigating" and fix_text:
        try:
            fix_at = parse_as_of(fix_text)
        except (ValueError, TypeError, OverflowError):
            return _redirect(here, msg="fix_at")
        if fix_at is None:
            return _redirect(here, msg="fix_at")
    if to not in MOVE_LABELS:
        return _redirect(here, msg="transition")
    try:
        store.transition(
            incident_id,
            to,
            actor=session.reviewer,
            admin=session.admin,
            note=note,
            fix_at=fix_at,
            fix_description=field(form, "fix_description", NOTE_MAX) or None,
        )
    except KeyError:
        raise HTTPException(404, "no such incident") from None
    except InvalidTransition:
        return _redirect(here, msg="transition")
    except NotIncidentOwner:
        return _redirect(here, msg="owner")
    return _redirect(here, msg="moved")
