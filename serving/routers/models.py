"""The model serving now."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving.deps import AnyKey, CurrentModel
from serving.flag_writer import json_safe
from serving.schemas import ErrorBody, JSONResponse, ModelInfo

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    response_model=ModelInfo,
    responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def current_model(model: CurrentModel, _: AnyKey) -> Response:
    """Version, alias, thresholds and training metrics of the model serving now."""
    bundle = model.bundle
    metadata = json_safe(dict(bundle.metadata or {}))
    info = ModelInfo(
        name=model.name,
        version=model.version,
        alias=model.alias,
        source=model.source,  # type: ignore[arg-type]
        loaded_at=model.loaded_at,
        issues=list(bundle.issue_names),
        thresholds=dict(bundle.thresholds),
        disabled=dict(getattr(bundle, "disabled", None) or {}),
        metrics=metadata.get("metrics") or {},
        metadata=metadata,
    )
    return JSONResponse(info.model_dump(mode="json"))
