"""The review queue API: list, claim, label, skip, release, history (review scope)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query

from serving.deps import ReviewKey, ReviewStoreDep
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
    Stats,
    Status,
    Stratum,
)
from serving.review.store import LeaseError, NotClaimable
from serving.schemas import ErrorBody

router = APIRouter(prefix="/v1/review", tags=["review"])

T = TypeVar("T")
# Ids are 32-bit database integers; larger path values are a 422, not a driver overflow.
ReviewId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Review item id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody, "description": "No such review item."},
}
_LEASE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorBody, "description": "The caller does not hold the item's lease."},
    422: {"model": ErrorBody, "description": "Invalid decision or issue."},
}


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store operation, turning its plain exceptions into HTTP errors."""
    try:
        return fn(*args, **kwargs)
    except KeyError as exc:
        raise HTTPException(404, exc.args[0] if exc.args else "not found") from None
    except (LeaseError, NotClaimable) as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/items", response_model=ItemPage, responses=_ERRORS)
def list_items(
    store: ReviewStoreDep,
    _: ReviewKey,
    issue: Annotated[str | None, Query(max_length=100, description="Flagged issue.")] = None,
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
def get_item(review_id: ReviewId, store: ReviewStoreDep, _: ReviewKey) -> ItemDetail:
    """One review item with its snapshot, scores, reason codes and labels."""
    return call(store.get, review_id)


@router.get("/items/{review_id}/history", response_model=list[HistoryEntry], responses=_ERRORS)
def get_history(review_id: ReviewId, store: ReviewStoreDep, _: ReviewKey) -> list[HistoryEntry]:
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
def claim(body: ClaimRequest, store: ReviewStoreDep, _: ReviewKey) -> Claim:
    """Lease the next item (or the given one) to a reviewer so no one else reviews it."""
    if body.review_id is not None:
        return call(store.claim, body.review_id, body.reviewer)
    got = call(store.claim_next, body.reviewer, issue=body.issue)
    if got is None:
        raise HTTPException(404, "nothing to claim: the queue is empty for this filter")
    return got


@router.post("/items/{review_id}/label", response_model=LabelResult, responses=_LEASE_ERRORS)
def label(
    review_id: ReviewId, body: LabelRequest, store: ReviewStoreDep, _: ReviewKey
) -> LabelResult:
    """Confirm, reject or relabel a claimed item (needs its lease)."""
    return call(store.label, review_id, body.lease, body.decision, issue=body.issue, note=body.note)


@router.post("/items/{review_id}/skip", response_model=ItemSummary, responses=_LEASE_ERRORS)
def skip(
    review_id: ReviewId, body: LeaseRequest, store: ReviewStoreDep, _: ReviewKey
) -> ItemSummary:
    """Set a claimed item aside without labelling it (needs its lease)."""
    return call(store.skip, review_id, body.lease)


@router.post("/items/{review_id}/release", response_model=ItemSummary, responses=_LEASE_ERRORS)
def release(
    review_id: ReviewId, body: LeaseRequest, store: ReviewStoreDep, _: ReviewKey
) -> ItemSummary:
    """Give a claimed item back to the queue (needs its lease)."""
    return call(store.release, review_id, body.lease)


@router.get("/stats", response_model=Stats, responses=_ERRORS)
def stats(store: ReviewStoreDep, _: ReviewKey) -> Stats:
    """Queue size by status and stratum, and labels stored."""
    return store.stats()
