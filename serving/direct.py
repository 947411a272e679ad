"""One hot route served without FastAPI's router: GET /v1/items/{item_id}/score.

FastAPI dispatches a request by matching it against the routes registered before its own,
resolving the endpoint's dependencies and keeping its per-route bookkeeping; for GET score
that cost about as much CPU as the request's own work (the read, the snapshot and the
model; `bench/get_score.py --profile`). `DirectRoute` sits inside `ServiceMiddleware` (so
request ids, shedding and request metrics are unchanged) and in front of FastAPI's
exception layer and router: a request its route matches (method and path) goes straight
to the endpoint, with the path parameters, `endpoint` and `route` in the scope as the
router puts them, and an exception the app has a handler for answered by that handler.
Any other request goes down the usual stack unchanged.

The route must take only the Request (no dependencies, no body) and return a Response,
and no route registered before it may match the same requests (checked when installed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi.routing import APIRoute
from starlette._utils import get_route_path, is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request


class DirectRoute:
    """ASGI middleware serving `route` itself (see the module docstring)."""

    def __init__(
        self,
        app: Any,
        route: APIRoute,
        handlers: Callable[[], Mapping[Any, Callable]],
        router: Any,
    ) -> None:
        dependant = route.dependant
        if (
            dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.dependencies
        ):
            raise ValueError(f"{route.path}: a direct route takes only the Request")
        self.app = app
        self.route = route
        self.methods = frozenset(route.methods or ())
        self.regex = route.path_regex
        self.convertors = route.param_convertors
        self.handlers = handlers  # the app's exception handlers (read when needed)
        self.router = router

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in self.methods:
            match = self.regex.match(get_route_path(scope))
            if match is not None:
                await self._serve(match.groupdict(), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, params: dict[str, str], scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        route = self.route
        convertors = self.convertors
        scope.setdefault("router", self.router)
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {
            **scope.get("path_params", {}),
            **{k: convertors[k].convert(v) for k, v in params.items()},
        }
        scope["route"] = route
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            if is_async_callable(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable | None:
        """The handler Starlette's exception layer would pick: an HTTPException's status
        code first, then the closest class in the exception's MRO (500 and Exception are
        the outermost error layer's, as in Starlette's stack)."""
        handlers = {k: v for k, v in self.handlers().items() if k not in (500, Exception)}
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None


def install_direct_route(app: Any, route: APIRoute) -> None:
    """Add `DirectRoute` for `route` to `app` (call before adding the outer middleware:
    the last added is the outermost). Refuses when another route of the app matches a
    request of `route` (a sample path with "x" for every parameter), which the router
    would then have had to choose between."""
    sample = route.path_format
    for name in route.param_convertors:
        sample = sample.replace("{" + name + "}", "x")
    scope = {"type": "http", "method": next(iter(route.methods or {"GET"})), "path": sample}
    for other in _all_routes(app.router.routes):
        if other is not route and hasattr(other, "path_regex"):
            methods = getattr(other, "methods", None)
            if other.path_regex.match(sample) and (not methods or scope["method"] in methods):
                raise ValueError(f"{other.path} also matches {route.path}: not a direct route")
    app.add_middleware(
        DirectRoute, route=route, handlers=lambda: app.exception_handlers, router=app.router
    )


def _all_routes(routes: Any) -> Any:
    # the routes of an app, those of included routers (FastAPI keeps them nested) included
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from _all_routes(inner.routes)
        else:
            yield r
