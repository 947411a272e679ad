"""Liveness, readiness and Prometheus metrics (for infrastructure)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from serving.deps import AdminKey, Service, ServiceDep
from serving.flag_writer import writer_status
from serving.metrics import CONTENT_TYPE
from serving.schemas import ErrorBody, FlagHealth, Health, JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers (no key needed)."""
    return Health(status="ok")


def readiness(svc: Service) -> tuple[int, Health]:
    """The /readyz status code and body (see `Health` for what each status means)."""
    model = svc.holder.current
    problems: list[str] = []
    blocking = False
    # Why the last load of the champion failed: its kind only (no key is needed here, and
    # the message may hold paths or URIs); the service log and POST /v1/admin/reload say more.
    failed = (svc.holder.last_error or "").split(":", 1)[0]
    why = f" (last attempt failed: {failed}; see the service log)" if failed else ""
    if model is None:
        problems.append("no model loaded yet" + why)
        blocking = True
    elif failed:  # still serving the model loaded before
        problems.append(
            f"the champion could not be loaded{why}; serving version {model.version} "
            f"(from {model.source})"
        )
    online = getattr(svc, "online", None)
    if online is not None and online.split is not None:
        problems.append(online.split)  # degraded: snapshot scoring works, the online path not
    elif online is not None and (online_problem := online.problem()):
        # Ingest and score-by-id need the store: send traffic elsewhere until it is back.
        problems.append(online_problem)
        blocking = True
    if online is not None and (archive_problem := online.archive_problem()):
        problems.append(archive_problem)  # degraded: ingest answers 503 until it is back
    if online is not None and online.consumer_problem:
        problems.append(online.consumer_problem)  # degraded: ingest by HTTP still works
    spool_problem = svc.spool.problem
    if spool_problem:
        problems.append(spool_problem)
        blocking = True
    st = writer_status(svc.settings.spool_path)
    flags = None
    if st is None or not st.get("alive"):
        problems.append("the flag writer is not running; flags wait in the spool")
        writer_up = sink_up = False
    else:
        writer_up, sink_up = True, bool(st.get("sink_ok"))
        if not sink_up:
            problems.append(
                "the review store is unreachable; flags wait in the spool "
                f"({st.get('pending_items', 0)} pending)"
            )
    if st is not None:
        flags = FlagHealth(
            writer_up=writer_up,
            sink_up=sink_up,
            pending_items=int(st.get("pending_items", 0)),
            sink_error=(st.get("sink_error") or None) if not sink_up else None,
        )
    status = "not ready" if blocking else ("degraded" if problems else "ready")
    body = Health(
        status=status,
        model_version=model.version if model is not None else None,
        problems=problems,
        flags=flags,
    )
    return (503 if blocking else 200), body


@router.get(
    "/readyz",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "No model loaded, the spool takes no flags, or the online store "
            "(Redis) is unreachable.",
        }
    },
)
async def readyz(svc: ServiceDep) -> Response:
    """Readiness: 200 ready (or degraded: flags wait in the spool), else 503 (no key needed)."""
    # The online store check is a network round trip: keep it off the event loop.
    code, body = await asyncio.to_thread(readiness, svc) if svc.online else readiness(svc)
    return JSONResponse(body.model_dump(), status_code=code)


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
    """Prometheus metrics: requests, latency, shed load, scores and flags per issue, the flag
    spool and writer, model version.

    With several uvicorn workers, the values of all workers (counters and histograms summed),
    whichever worker answers.
    """
    if svc.metrics.multiprocess:
        # Merging reads every worker's files: keep that off the event loop.
        body = await asyncio.to_thread(svc.metrics.render)
    else:
        body = svc.metrics.render()
    return Response(body, media_type=CONTENT_TYPE)
