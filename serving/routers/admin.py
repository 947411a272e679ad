"""Operator actions."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import AdminKey, ServiceDep
from serving.schemas import ErrorBody, JSONResponse, ReloadResult

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        502: {"model": ReloadResult, "description": "The registry could not be checked."},
    },
)
async def reload(svc: ServiceDep, _: AdminKey) -> JSONResponse:
    """Check the champion alias now and swap the model in if it moved.

    The worker that answers checks at once and announces the reload to the server's other
    workers, which check within about a second.
    """
    before = svc.holder.current
    previous = before.version if before else None
    try:
        swapped = await svc.holder.refresh()
    except Exception as exc:
        svc.metrics.reloads.labels(outcome="failed").inc()
        # Admin-only, so name the failure, but keep it short (no tracebacks or paths).
        message = f"{type(exc).__name__}: {str(exc)[:200]}"
        body = ReloadResult(
            previous_version=previous, version=previous, reloaded=False, error=message
        )
        return JSONResponse(body.model_dump(), status_code=502)
    svc.metrics.reloads.labels(outcome="swapped" if swapped else "unchanged").inc()
    svc.holder.announce_reload()
    now = svc.holder.current
    body = ReloadResult(
        previous_version=previous, version=now.version if now else None, reloaded=swapped
    )
    return JSONResponse(body.model_dump())
