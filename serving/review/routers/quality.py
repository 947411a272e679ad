"""Live model quality per issue, estimated from analyst labels (review scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.deps import ReviewKey, ReviewStoreDep
from serving.review.schemas import QualityReport
from serving.schemas import ErrorBody

router = APIRouter(prefix="/v1/review", tags=["review"])


def issue_names(request: Request) -> list[str] | None:
    """The serving model's issues (so issues without labels still show), else None."""
    model = request.app.state.service.holder.current
    return list(model.bundle.issue_names) if model is not None else None


@router.get(
    "/quality",
    response_model=QualityReport,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
)
def live_quality(
    request: Request,
    store: ReviewStoreDep,
    _: ReviewKey,
    model_version: Annotated[str | None, Query(max_length=64)] = None,
) -> QualityReport:
    """Precision of flagged items and estimated recall per issue, with 95% intervals."""
    issues = store.quality(issue_names(request), model_version=model_version)
    return QualityReport(issues=issues, model_version=model_version)
