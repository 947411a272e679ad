"""`create_app(settings)`: the FastAPI scoring service.

A router per resource is listed in `ROUTERS` (adding one is one line). One pure-ASGI
middleware does what must wrap every request: a request id, the body size limit (checked on
Content-Length before reading, and counted for chunked bodies), request metrics by route
template, and turning unexpected exceptions into a generic 500 that names only the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.settings import Settings, get_settings
from serving.auth import ApiKeyAuth
from serving.deps import Service
from serving.flag_writer import FlagSink, FlagWriter, JsonlFlagSink, ProcessSink
from serving.metrics import ServiceMetrics
from serving.model_holder import Bundle, LoadedModel, ModelHolder
from serving.review.routers import console
from serving.review.routers import items as review_items
from serving.review.routers import quality as review_quality
from serving.review.store import ReviewStore, store_sink
from serving.routers import admin, health, models, reports, score
from serving.schemas import SNAPSHOT_EXAMPLE, JSONResponse, ScoreBatch, Snapshot

log = logging.getLogger("serving")

# Routers of the app, in docs order. Add a resource's router here (e.g. the review queue).
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    score.router,
    models.router,
    admin.router,
    review_items.router,
    review_quality.router,
    reports.router,
    console.router,
)

REQUEST_ID_HEADER = b"x-request-id"
# How often to retry loading when startup found neither the registry nor a cached model.
STARTUP_RETRY_S = 5.0


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body passes the limit; an HTTPException so FastAPI's body
    reader re-raises it as is and it renders as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds max_body_bytes={limit}")


def _request_id(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            rid = value.decode("latin-1")[:64]
            if rid.replace("-", "").replace("_", "").isalnum():
                return rid
    return secrets.token_hex(8)


def request_id_of(request: Request) -> str | None:
    return request.scope.get("surfacer.request_id")


class ServiceMiddleware:
    """Request id, body limit, request metrics and the generic 500, in one ASGI layer."""

    def __init__(self, app: Any, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def _send_json(self, send: Callable, status: int, body: dict, rid: str) -> None:
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (REQUEST_ID_HEADER, rid.encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = _request_id(scope)
        scope["surfacer.request_id"] = rid
        limit = self.max_body_bytes
        state = {"status": 500, "started": False, "received": 0}

        try:
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and int(value) > limit:
                    raise BodyTooLarge(limit)

            async def limited_receive() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request":
                    state["received"] += len(message.get("body", b""))
                    if state["received"] > limit:
                        raise BodyTooLarge(limit)
                return message

            async def tracking_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    state["started"] = True
                    state["status"] = message["status"]
                    message["headers"] = [
                        *message.get("headers", ()),
                        (REQUEST_ID_HEADER, rid.encode()),
                    ]
                await send(message)

            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if not state["started"]:
                state["status"] = 413
                await self._send_json(send, 413, {"detail": exc.detail, "request_id": rid}, rid)
        except ValueError:  # unparsable Content-Length
            if not state["started"]:
                state["status"] = 400
                await self._send_json(
                    send, 400, {"detail": "invalid Content-Length", "request_id": rid}, rid
                )
        except Exception:
            log.exception(
                "unhandled error in request %s %s (request_id=%s)",
                scope.get("method"),
                scope.get("path"),
                rid,
            )
            if not state["started"]:
                state["status"] = 500
                await self._send_json(
                    send, 500, {"detail": "internal server error", "request_id": rid}, rid
                )
        finally:
            route = scope.get("route")
            # Route templates, not raw paths: unknown paths must not grow the label set.
            label = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(label, method, str(state["status"])).inc()
            self.metrics.latency.labels(label, method).observe(time.perf_counter() - t0)


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


def _score_request_schema(components: dict[str, Any]) -> dict[str, Any]:
    """The /v1/score body schema (one snapshot or a batch), its $defs moved to components."""
    adapter: TypeAdapter[Any] = TypeAdapter(Snapshot | ScoreBatch)  # type: ignore[operator]
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


def _install_openapi(app: FastAPI, svc: Service) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        body_schema = _score_request_schema(components)
        # The batch limit is a setting, so it joins the schema here rather than in the model.
        components["ScoreBatch"]["properties"]["items"]["maxItems"] = svc.settings.max_batch_size
        example = SNAPSHOT_EXAMPLE
        model = svc.holder.current
        if model is not None:
            with contextlib.suppress(Exception):
                example = model.bundle.input_example() or example
        example = orjson.loads(orjson.dumps(example, default=str))
        for path in spec.get("paths", {}).values():
            for op in path.values():
                if isinstance(op, dict) and op.pop("x-surfacer-score-body", False):
                    op["requestBody"] = {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": body_schema,
                                "examples": {
                                    "single": {"summary": "One item", "value": example},
                                    "batch": {
                                        "summary": "A batch",
                                        "value": {
                                            "items": [example, dict(example, item_id="it_2")]
                                        },
                                    },
                                },
                            }
                        },
                    }
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


# Tracked-container allocations (net of frees) between young collections: Python's default,
# 700, collects ~24 times during one 1,000-item batch, walking and promoting objects the
# request frees a moment later anyway.
GC_YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Tune the cyclic collector for a serving process: freeze what lives now, collect rarely.

    `gc.freeze()` hides what is alive now (model, libraries) from the collector: the full
    collections scanned the ~270k long-lived objects of the loaded model and libraries, ~20
    ms per batch on average and 200-400 ms spikes, measured in-process; frozen, ~2 ms and
    spikes under 110 ms. Called after each model swap: unfreezing first lets the old
    model's cycles be collected before the new heap is frozen.

    The young-generation threshold goes from 700 to `GC_YOUNG_THRESHOLD`: a request's
    objects are freed by reference counting when it ends, so with the higher threshold a
    1,000-item batch runs no collection instead of ~23 young and 2 middle ones (2.4-2.8 ms
    of the batch, timed with `gc.callbacks`). Cyclic garbage still triggers a collection
    once 50k containers are pending, so memory stays bounded.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def default_flag_sink(settings: Settings) -> FlagSink:
    """A JSON-lines file in data_dir (`surfacer serve --flags-jsonl`); the default is the store."""
    return JsonlFlagSink(Path(settings.data_dir) / "flags.jsonl")


def create_app(
    settings: Settings | None = None,
    *,
    flag_sink: FlagSink | None = None,
    loader: Callable[[Path], Bundle] | None = None,
    sample_rate: float | None = None,
    flag_batch_size: int = 500,
    flag_flush_interval_s: float = 0.5,
    multiprocess_metrics: bool = False,
    flag_process: bool = False,
) -> FastAPI:
    """The scoring service for `settings` (read from the environment when None).

    `flag_sink` receives flagged items in batches (default: the review store's sink);
    `sample_rate` is the share of unflagged items also sent, marked `sampled`, so the review
    queue can estimate live precision and recall (None: settings.review_random_share when
    the review store is the sink, else 0). `multiprocess_metrics`: metrics go to
    prometheus_client's multiprocess files and /metrics merges all workers (uvicorn with
    several workers; PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported).
    `flag_process`: the default review-store sink runs in a child process (`ProcessSink`), so
    its ORM work never holds the serving process's GIL (what `surfacer serve` does).
    """
    settings = settings or get_settings()
    review_store = ReviewStore.from_settings(settings)
    if sample_rate is None:
        sample_rate = settings.review_random_share if flag_sink is None else 0.0
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
    metrics = ServiceMetrics(multiprocess=multiprocess_metrics)

    def on_swap(model: LoadedModel) -> None:
        metrics.set_model(model.name, model.version, model.source)
        settle_heap()

    holder_kwargs: dict[str, Any] = {"on_swap": on_swap}
    if loader is not None:
        holder_kwargs["loader"] = loader
    holder = ModelHolder(settings, **holder_kwargs)
    if flag_sink is None:
        flag_sink = (
            ProcessSink(functools.partial(store_sink, settings, sample_rate))
            if flag_process
            else review_store.sink(sample_rate)
        )
    flags = FlagWriter(
        flag_sink,
        batch_size=flag_batch_size,
        flush_interval_s=flag_flush_interval_s,
        on_written=lambda n: metrics.flag_writes.inc(n),
        on_dropped=lambda n: metrics.flag_drops.inc(n),
    )
    svc = Service(
        settings=settings,
        auth=ApiKeyAuth(settings.api_keys),
        holder=holder,
        metrics=metrics,
        flags=flags,
        sample_rate=sample_rate,
    )
    metrics.watch(
        "surfacer_flag_queue_depth",
        "Flagged items waiting for the writer (summed over workers).",
        lambda: flags.pending,
        multiprocess_mode="livesum",
    )
    metrics.watch(
        "surfacer_model_ready",
        "1 when a model is loaded (in every worker).",
        lambda: holder.current is not None,
        multiprocess_mode="livemin",
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(review_store.migrate)
        metrics.start()
        flags.start()
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
        # `POST /v1/admin/reload` reaches one worker; it announces the reload to the others.
        follower = asyncio.create_task(
            holder.follow_reload_requests(on_result=count), name="reload-follower"
        )
        try:
            yield
        finally:
            for task in (poller, follower):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            # Drain the flag queue: requests are over, so nothing new can arrive.
            await asyncio.to_thread(flags.close)
            review_store.close()
            metrics.close()

    app = FastAPI(
        title="surfacer scoring service",
        version="1",
        description=(
            "Per-item risk scores for content-ecosystem issues, with reason codes for flagged "
            "items. Send an API key as `X-API-Key` or `Authorization: Bearer`."
        ),
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # Prometheus (/metrics) is the service's telemetry. FastAPI's OpenTelemetry hooks
        # would otherwise look up the global tracer, meter and logger providers (and the
        # environment) on every request: ~2% of a worker's CPU under load, for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = svc
    app.state.review_store = review_store
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    _install_openapi(app, svc)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
