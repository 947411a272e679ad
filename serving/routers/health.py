"""Liveness, readiness and Prometheus metrics (for infrastructure)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from serving.deps import AdminKey, ServiceDep
from serving.metrics import CONTENT_TYPE
from serving.schemas import ErrorBody, Health, JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers (no key needed)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "No model loaded yet."}},
)
async def readyz(svc: ServiceDep) -> Response:
    """Readiness: 200 once a model is loaded, else 503 (no key needed)."""
    model = svc.holder.current
    if model is None:
        return JSONResponse({"status": "not ready", "model_version": None}, status_code=503)
    return JSONResponse({"status": "ready", "model_version": model.version})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."},
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
    },
)
async def metrics(svc: ServiceDep, _: AdminKey) -> Response:
    """Prometheus metrics: requests, latency, scores and flags per issue, model version.

    With several uvicorn workers, the values of all workers (counters and histograms summed),
    whichever worker answers.
    """
    if svc.metrics.multiprocess:
        # Merging reads every worker's files: keep that off the event loop.
        body = await asyncio.to_thread(svc.metrics.render)
    else:
        body = svc.metrics.render()
    return Response(body, media_type=CONTENT_TYPE)
