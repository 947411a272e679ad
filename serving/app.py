"""`create_app(settings)`: the FastAPI scoring service.

The app is its routers (`ROUTERS`, one per resource, in docs order), the ASGI layer around
every request (`serving.middleware`: request id, body limit, load shedding, metrics, generic
500), the OpenAPI document and offline docs pages (`serving.openapi`), and a lifespan that
loads the model, opens this worker's flag spool and, unless `surfacer serve` runs the flag
writer as its own process, drains the spool in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.settings import Settings, get_settings
from serving.auth import ApiKeyAuth
from serving.deps import Service
from serving.direct import install_direct_route
from serving.flag_writer import FlagSink, FlagWriter, writer_status
from serving.metrics import FlagWriterCollector, IncidentCollector, ServiceMetrics
from serving.middleware import ServiceMiddleware, request_id_of
from serving.model_holder import Bundle, LoadedModel, ModelHolder
from serving.online import OnlineService, rescore_loop
from serving.openapi import install_openapi
from serving.review.db import UNAVAILABLE_ERRORS
from serving.review.routers import console
from serving.review.routers import incidents as review_incidents
from serving.review.routers import items as review_items
from serving.review.routers import quality as review_quality
from serving.review.store import ReviewStore
from serving.routers import admin, health, ingest, models, reports, score
from serving.schemas import JSONResponse
from serving.spool import SpoolWriter

log = logging.getLogger("serving")

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    score.router,
    ingest.router,
    models.router,
    admin.router,
    review_items.router,
    review_quality.router,
    review_incidents.router,
    reports.router,
    console.router,
)

# How often to retry loading when startup found neither the registry nor a cached model.
STARTUP_RETRY_S = 5.0


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "request_id": request_id_of(request)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(
            {"detail": detail, "request_id": request_id_of(request)}, status_code=422
        )

    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The review database is down or locked: say so, not "internal server error".
        rid = request_id_of(request)
        log.warning("review store unavailable (request_id=%s): %s", rid, exc)
        return JSONResponse(
            {"detail": "the review store is unreachable; retry later", "request_id": rid},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    for kind in UNAVAILABLE_ERRORS:
        app.add_exception_handler(kind, store_unavailable)


def create_app(
    settings: Settings | None = None,
    *,
    flag_sink: FlagSink | None = None,
    loader: Callable[[Path], Bundle] | None = None,
    sample_rate: float | None = None,
    flag_flush_interval_s: float = 0.1,
    multiprocess_metrics: bool = False,
    external_flag_writer: bool = False,
    on_model_swap: Callable[[LoadedModel], None] | None = None,
    online_store: Any = None,
) -> FastAPI:
    """The scoring service for `settings` (read from the environment when None).

    Flagged (and sampled) items are spooled in `settings.spool_path` before each answer and
    drained into `flag_sink` (default: the review store at settings.review_db_url) by a flag
    writer: a thread of this app, or, with `external_flag_writer`, the process `surfacer
    serve` runs. `sample_rate` is the share of unflagged items also queued, marked
    `sampled`, so the review queue can estimate live precision and recall (None:
    settings.review_random_share with the review store, else 0). `multiprocess_metrics`:
    metrics go to prometheus_client's multiprocess files and /metrics merges all workers
    (PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported).
    `on_model_swap` runs after each model swap (the worker start-up passes GC tuning).
    `online_store`: the online feature store (default: the one settings.online_store
    names); ingestion, score-by-id and background re-scoring use it.
    """
    settings = settings or get_settings()
    review_store = ReviewStore.from_settings(settings)
    if sample_rate is None:
        sample_rate = settings.review_random_share if flag_sink is None else 0.0
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
    metrics = ServiceMetrics(multiprocess=multiprocess_metrics)
    spool_dir = settings.spool_path

    def on_swap(model: LoadedModel) -> None:
        metrics.set_model(model.name, model.version, model.source)
        if on_model_swap is not None:
            on_model_swap(model)

    holder_kwargs: dict[str, Any] = {"on_swap": on_swap}
    if loader is not None:
        holder_kwargs["loader"] = loader
    holder = ModelHolder(settings, **holder_kwargs)
    spool = SpoolWriter(
        spool_dir,
        max_bytes=settings.spool_max_bytes,
        fsync_interval_s=settings.spool_fsync_interval_s,
        on_append=metrics.flags_accepted.inc,
    )
    online = OnlineService(settings, online_store)
    svc = Service(
        settings=settings,
        auth=ApiKeyAuth(settings.api_keys),
        holder=holder,
        metrics=metrics,
        spool=spool,
        sample_rate=sample_rate,
        online=online,
    )
    metrics.add_shared(FlagWriterCollector(lambda: writer_status(spool_dir)))
    metrics.add_shared(IncidentCollector(review_store.incident_metrics))
    metrics.watch(
        "surfacer_model_ready",
        "1 when a model is loaded (in every worker).",
        lambda: holder.current is not None,
        multiprocess_mode="livemin",
    )
    metrics.watch_totals(
        "surfacer_ingest_batches",
        "Ingest batches of this service (POST /v1/events and the upserts, and its own stream "
        "consumer) by outcome: applied; duplicate (batch id seen, nothing applied again); "
        "rejected (failed the contract, nothing applied); unavailable (store or live archive "
        "unreachable; the client retries, and batch ids make a retry count once).",
        "outcome",
        lambda: online.ingest_batches,
    )
    metrics.watch_totals(
        "surfacer_ingest_rows",
        "Rows of those batches: applied to the store, or expired (their item was past its last "
        "horizon plus SURFACER_ONLINE_LATE_S, so dropped and not scored live).",
        "outcome",
        lambda: online.ingest_rows,
    )
    metrics.watch_totals(
        "surfacer_online_scored",
        "Snapshots the re-scorer scored, by anchor: post (touched items, horizon crossings) "
        "and moderation (remove / restrict actions).",
        "anchor",
        lambda: {"post": online.scored, "moderation": online.anchors_scored},
    )
    metrics.watch_totals(
        "surfacer_online_flags_queued",
        "Items the re-scorer queued for review (newly over an issue's threshold).",
        "source",
        lambda: {"rescorer": online.queued},
    )

    def sink_factory() -> FlagSink:
        if flag_sink is not None:
            return flag_sink
        from serving.review.ingest import store_sink

        return store_sink(settings, sample_rate if sample_rate > 0 else 1.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(review_store.migrate)
        except UNAVAILABLE_ERRORS as exc:
            # Scoring does not need the review store: flags wait in the spool until it is back.
            log.warning(
                "review store %s unreachable at start-up (%s); scoring starts anyway, flags "
                "are spooled and the review API answers 503 until it is back",
                review_store.describe(),
                exc,
            )
        spool.start()
        writer_stop = threading.Event()
        writer_thread = None
        if not external_flag_writer:
            writer = FlagWriter(spool_dir, sink_factory, poll_interval_s=flag_flush_interval_s)
            writer_thread = threading.Thread(
                target=writer.run, args=(writer_stop,), name="flag-writer", daemon=True
            )
            writer_thread.start()
        metrics.start()
        await holder.startup()
        poller = None
        count = lambda outcome: metrics.reloads.labels(outcome=outcome).inc()  # noqa: E731
        if settings.reload_interval_s > 0:
            poller = asyncio.create_task(
                holder.poll(settings.reload_interval_s, on_result=count), name="model-poller"
            )
        elif holder.current is None:
            # No model and no periodic checks: keep trying until the registry answers.
            poller = asyncio.create_task(
                holder.poll(STARTUP_RETRY_S, on_result=count, until_loaded=True),
                name="model-retry",
            )
        rescorer = None
        if online.split is not None:
            log.warning("online path off: %s", online.split)
        if settings.online_rescore and online.split is None:
            rescorer = asyncio.create_task(rescore_loop(svc, online), name="online-rescore")
        consumer = None
        if settings.online_consume and online.split is None:
            from serving.stream import consume_in_service

            consumer = asyncio.create_task(
                consume_in_service(online, settings.online_consume), name="online-consumer"
            )
        # `POST /v1/admin/reload` reaches one worker; it announces the reload to the others.
        follower = asyncio.create_task(
            holder.follow_reload_requests(on_result=count), name="reload-follower"
        )
        try:
            yield
        finally:
            for task in (poller, follower, rescorer, consumer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            # Requests are over: seal this worker's segment, then let the writer drain it.
            await asyncio.to_thread(spool.close)
            if writer_thread is not None:
                writer_stop.set()
                await asyncio.to_thread(writer_thread.join, 60)
            review_store.close()
            await online.aclose()
            online.close()
            metrics.close()

    app = FastAPI(
        title="surfacer scoring service",
        version="1",
        description=(
            "Per-item risk scores for content-ecosystem issues, with reason codes for flagged "
            "items, and the analysts' review queue. Send an API key as `X-API-Key` or "
            "`Authorization: Bearer`; analysts log in with POST /v1/review/sessions. The "
            "analyst console is at /console."
        ),
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None,  # served by serving.openapi with local assets
        redoc_url=None,
        # Prometheus (/metrics) is the service's telemetry. FastAPI's OpenTelemetry hooks
        # would otherwise look up the global tracer, meter and logger providers (and the
        # environment) on every request: ~2% of a worker's CPU under load, for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = svc
    app.state.review_store = review_store
    app.state.online = online
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    install_openapi(
        app,
        settings.max_batch_size,
        lambda: holder.current.bundle if holder.current is not None else None,
    )
    # GET score skips FastAPI's router (serving.direct); inside ServiceMiddleware, which is
    # added after it and so wraps it.
    install_direct_route(app, ingest.item_score_route)
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_concurrency=settings.max_concurrency,
        max_queue_wait_s=settings.max_queue_wait_s,
        body_timeout_s=settings.body_timeout_s,
    )
    return app
