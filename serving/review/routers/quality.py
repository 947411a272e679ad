"""Live model quality per issue, estimated from analyst labels (review scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.deps import ReviewCallerDep, ReviewStoreDep
from serving.limits import MODEL_VERSION_MAX
from serving.review.routers.items import model_issues
from serving.review.schemas import QualityReport
from serving.schemas import ErrorBody

router = APIRouter(prefix="/v1/review", tags=["review"])


@router.get(
    "/quality",
    response_model=QualityReport,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
)
def live_quality(
    request: Request,
    store: ReviewStoreDep,
    _: ReviewCallerDep,
    model_version: Annotated[
        str | None, Query(max_length=MODEL_VERSION_MAX, pattern=r"^[^\x00]*$")
    ] = None,
) -> QualityReport:
    """Precision of flagged items and estimated recall per issue, with 95% intervals."""
    issues = store.quality(model_issues(request), model_version=model_version)
    return QualityReport(issues=issues, model_version=model_version)
