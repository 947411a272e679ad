"""The review queue API: log in, list, claim, label, skip, release, history.

Reading the queue takes an analyst session or a key with the review scope; acting on it
(claim, label, skip, release) takes an analyst session, and the store records that analyst.
Only the analyst holding an item's lease, or an admin, may label, skip or release it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from serving.deps import AnalystDep, ReviewCallerDep, ReviewStoreDep, ServiceDep
from serving.limits import ISSUE_MAX
from serving.review.accounts import is_session_token
from serving.review.schemas import (
    Claim,
    ClaimRequest,
    HistoryEntry,
    ItemDetail,
    ItemPage,
    ItemSummary,
    LabelRequest,
    LabelResult,
    LeaseRequest,
    LoginRequest,
    SessionOut,
    Stats,
    Status,
    Stratum,
)
from serving.review.store import LeaseError, NotClaimable, NotLeaseHolder
from serving.schemas import ErrorBody

router = APIRouter(prefix="/v1/review", tags=["review"])

T = TypeVar("T")
# Ids are 32-bit database integers; larger path values are a 422, not a driver overflow.
ReviewId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Review item id.")]
IssueFilter = Annotated[
    str | None, Query(max_length=ISSUE_MAX, pattern=r"^[^\x00]*$", description="Flagged issue.")
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody, "description": "No such review item."},
    503: {"model": ErrorBody, "description": "The review database is unreachable."},
}
_LEASE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {"model": ErrorBody, "description": "Another analyst holds the item's lease."},
    409: {"model": ErrorBody, "description": "The caller does not hold the item's lease."},
    422: {"model": ErrorBody, "description": "Invalid decision or issue."},
}


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store operation, turning its plain exceptions into HTTP errors."""
    try:
        return fn(*args, **kwargs)
    except KeyError as exc:
        raise HTTPException(404, exc.args[0] if exc.args else "not found") from None
    except NotLeaseHolder as exc:
        raise HTTPException(403, str(exc)) from None
    except (LeaseError, NotClaimable) as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def model_issues(request: Request) -> list[str] | None:
    """The serving model's issues (what a relabel may name), or None while none is loaded."""
    model = request.app.state.service.holder.current
    return list(model.bundle.issue_names) if model is not None else None


@router.post(
    "/sessions",
    response_model=SessionOut,
    status_code=201,
    responses={
        401: {"model": ErrorBody, "description": "Unknown name or wrong password."},
        503: _ERRORS[503],
    },
)
def login(body: LoginRequest, store: ReviewStoreDep, svc: ServiceDep) -> SessionOut:
    """Log in as an analyst: a session token to send as `Authorization: Bearer`."""
    analyst = store.authenticate(body.name, body.password)
    if analyst is None:
        raise HTTPException(401, "unknown analyst or wrong password")
    token, session = store.open_session(analyst, svc.settings.session_hours * 3600)
    return SessionOut(
        token=token, analyst=analyst.name, admin=analyst.is_admin, expires_at=session.expires_at
    )


@router.delete(
    "/sessions",
    status_code=204,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 503: _ERRORS[503]},
)
def logout(request: Request, store: ReviewStoreDep, _: AnalystDep) -> Response:
    """Log out: the session token stops working at once."""
    auth = request.headers.get("authorization", "")
    token = auth.partition(" ")[2].strip() or request.headers.get("x-api-key")
    if is_session_token(token):
        store.revoke_session(token)
    return Response(status_code=204)


@router.get("/items", response_model=ItemPage, responses=_ERRORS)
def list_items(
    store: ReviewStoreDep,
    _: ReviewCallerDep,
    issue: IssueFilter = None,
    status: Status | None = None,
    stratum: Stratum | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ItemPage:
    """List the queue by issue, status and stratum, highest expected impact first."""
    return call(
        store.list_items, issue=issue, status=status, stratum=stratum, limit=limit, offset=offset
    )


@router.get("/items/{review_id}", response_model=ItemDetail, responses=_ERRORS)
def get_item(review_id: ReviewId, store: ReviewStoreDep, _: ReviewCallerDep) -> ItemDetail:
    """One review item with its snapshot, scores, reason codes and labels."""
    return call(store.get, review_id)


@router.get("/items/{review_id}/history", response_model=list[HistoryEntry], responses=_ERRORS)
def get_history(
    review_id: ReviewId, store: ReviewStoreDep, _: ReviewCallerDep
) -> list[HistoryEntry]:
    """The append-only audit trail of one review item."""
    return call(store.history, review_id)


@router.post(
    "/claims",
    response_model=Claim,
    responses={
        **_ERRORS,
        404: {"model": ErrorBody, "description": "Nothing to claim (or no such item)."},
        409: {"model": ErrorBody, "description": "The item is held by someone else."},
    },
)
def claim(body: ClaimRequest, store: ReviewStoreDep, analyst: AnalystDep) -> Claim:
    """Lease the next item (or the given one) to the logged-in analyst."""
    if body.review_id is not None:
        return call(store.claim, body.review_id, analyst.name)
    got = call(store.claim_next, analyst.name, issue=body.issue)
    if got is None:
        raise HTTPException(404, "nothing to claim: the queue is empty for this filter")
    return got


@router.post("/items/{review_id}/label", response_model=LabelResult, responses=_LEASE_ERRORS)
def label(
    review_id: ReviewId,
    body: LabelRequest,
    request: Request,
    store: ReviewStoreDep,
    analyst: AnalystDep,
) -> LabelResult:
    """Confirm, reject or relabel a claimed item (the lease holder, or an admin)."""
    return call(
        store.label,
        review_id,
        body.lease,
        body.decision,
        issue=body.issue,
        note=body.note,
        actor=analyst.name,
        admin=analyst.is_admin,
        issues=model_issues(request),
    )


@router.post("/items/{review_id}/skip", response_model=ItemSummary, responses=_LEASE_ERRORS)
def skip(
    review_id: ReviewId, body: LeaseRequest, store: ReviewStoreDep, analyst: AnalystDep
) -> ItemSummary:
    """Set a claimed item aside without labelling it (the lease holder, or an admin)."""
    return call(store.skip, review_id, body.lease, actor=analyst.name, admin=analyst.is_admin)


@router.post("/items/{review_id}/release", response_model=ItemSummary, responses=_LEASE_ERRORS)
def release(
    review_id: ReviewId, body: LeaseRequest, store: ReviewStoreDep, analyst: AnalystDep
) -> ItemSummary:
    """Give a claimed item back to the queue (the lease holder, or an admin)."""
    return call(store.release, review_id, body.lease, actor=analyst.name, admin=analyst.is_admin)


@router.get("/stats", response_model=Stats, responses=_ERRORS)
def stats(store: ReviewStoreDep, _: ReviewCallerDep) -> Stats:
    """Queue size by status and stratum, and labels stored."""
    return store.stats()
