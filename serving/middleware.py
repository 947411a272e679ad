"""The ASGI layer around every request: request id, body limit, load shedding, metrics, and
the generic 500 that names only the request id (the traceback goes to the log).

Load shedding keeps accepted requests fast when more arrive than a worker can serve: a
request is answered 503 with `Retry-After` at once when the worker already has
`max_concurrency` requests in flight, or when it waited longer than `max_queue_wait_s`
behind at least `QUEUE_MIN` others. A lone request held up by a pause of the process (a
model swap, a collection) is served, not shed: there is no queue that shedding would drain. Under `surfacer serve`, the HTTP protocol stamps each request's
arrival time and the number of requests in flight then (`serving.server`), so queueing in
the event loop counts too; elsewhere (ASGI tests, a plain uvicorn) the layer counts the
requests it has started. Probes (/healthz, /readyz, /metrics) are never shed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import HTTPException, Request

if TYPE_CHECKING:
    from serving.metrics import ServiceMetrics

log = logging.getLogger("serving")

REQUEST_ID_HEADER = b"x-request-id"
# Set on the scope by serving.server's protocol when the request arrived.
ARRIVAL_KEY = "surfacer.arrival"
BACKLOG_KEY = "surfacer.backlog"
NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
QUEUE_MIN = 8
RETRY_AFTER_S = 1


class BodyError(HTTPException):
    """Raised from `receive` when a body breaks a limit; an HTTPException so FastAPI's body
    reader re-raises it as is and it renders with its status."""


class BodyTooLarge(BodyError):
    """The body passed max_body_bytes: 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds max_body_bytes={limit}")


class BodyTimeout(BodyError):
    """The body did not arrive whole within body_timeout_s of the request's start: 408, and
    the connection is closed (the rest of the body is never read)."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(
            408,
            f"request body not received within body_timeout_s={limit_s:g} s",
            headers={"Connection": "close"},
        )


def _request_id(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            rid = value.decode("latin-1")[:64]
            if rid.replace("-", "").replace("_", "").isalnum():
                return rid
    return secrets.token_hex(8)


def request_id_of(request: Request) -> str | None:
    return request.scope.get("surfacer.request_id")


def declared_length(scope: dict[str, Any]) -> int | None:
    """The Content-Length header as a number; ValueError when it is not one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            n = int(value)
            if n < 0:
                raise ValueError(f"negative Content-Length {n}")
            return n
    return None


class ServiceMiddleware:
    """Request id, body limit, load shedding, request metrics and the generic 500."""

    def __init__(
        self,
        app: Any,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        max_concurrency: int = 0,
        max_queue_wait_s: float = 0.0,
        body_timeout_s: float = 0.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s  # 0: no limit
        self.max_concurrency = max_concurrency  # 0: no limit
        self.max_queue_wait_s = max_queue_wait_s  # 0: no limit
        self.in_flight = 0

    async def _send_json(
        self,
        send: Callable,
        status: int,
        body: dict,
        rid: str,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (REQUEST_ID_HEADER, rid.encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _shed_reason(self, scope: dict[str, Any]) -> str | None:
        if scope.get("path") in NEVER_SHED:
            return None
        backlog = scope.get(BACKLOG_KEY, self.in_flight)
        if self.max_concurrency and backlog >= self.max_concurrency:
            return f"over {self.max_concurrency} requests in flight on this worker"
        arrival = scope.get(ARRIVAL_KEY)
        if self.max_queue_wait_s and arrival is not None and backlog >= QUEUE_MIN:
            waited = time.perf_counter() - arrival
            if waited > self.max_queue_wait_s:
                return f"waited {waited:.2f}s for a free worker"
        return None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = _request_id(scope)
        scope["surfacer.request_id"] = rid
        method = scope.get("method", "")
        shed = self._shed_reason(scope)
        if shed is not None:
            self.metrics.shed.inc()
            await self._send_json(
                send,
                503,
                {"detail": f"overloaded ({shed}); retry later", "request_id": rid},
                rid,
                ((b"retry-after", str(RETRY_AFTER_S).encode()),),
            )
            self.metrics.requests.labels("<shed>", method, "503").inc()
            return
        limit = self.max_body_bytes
        state = {"status": 500, "started": False, "received": 0, "body_done": False}
        try:
            declared = declared_length(scope)
        except ValueError:
            await self._send_json(
                send, 400, {"detail": "invalid Content-Length", "request_id": rid}, rid
            )
            self.metrics.requests.labels("<unmatched>", method, "400").inc()
            return
        if declared is not None and declared > limit:
            await self._send_json(
                send, 413, {"detail": BodyTooLarge(limit).detail, "request_id": rid}, rid
            )
            self.metrics.requests.labels("<unmatched>", method, "413").inc()
            return

        timeout_s = self.body_timeout_s
        # The body must be whole by this loop time; after it, receive() waits unbounded
        # (what follows the body is the client's disconnect, which may come any time).
        deadline = asyncio.get_running_loop().time() + timeout_s if timeout_s else None

        async def limited_receive() -> dict[str, Any]:
            if deadline is None or state["body_done"]:
                message = await receive()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise BodyTimeout(timeout_s) from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    raise BodyTooLarge(limit)
                if not message.get("more_body", False):
                    state["body_done"] = True
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

        self.in_flight += 1
        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyError as exc:
            if not state["started"]:
                state["status"] = exc.status_code
                extra = tuple(
                    (k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()
                )
                await self._send_json(
                    send, exc.status_code, {"detail": exc.detail, "request_id": rid}, rid, extra
                )
        except Exception:
            log.exception(
                "unhandled error in request %s %s (request_id=%s)",
                method,
                scope.get("path"),
                rid,
            )
            if not state["started"]:
                state["status"] = 500
                await self._send_json(
                    send,
                    500,
                    {"detail": "internal server error", "request_id": rid},
                    rid,
                    ((b"connection", b"close"),),
                )
        finally:
            self.in_flight -= 1
            route = scope.get("route")
            # Route templates, not raw paths: unknown paths must not grow the label set.
            # path_format: the template without convertors ({item_id}, not {item_id:path}).
            label = (
                getattr(route, "path_format", None) or getattr(route, "path", None) or "<unmatched>"
            )
            self.metrics.requests.labels(label, method, str(state["status"])).inc()
            self.metrics.latency.labels(label, method).observe(time.perf_counter() - t0)
