"""The OpenAPI document and its reader pages, served from this process (no CDN).

`/openapi.json` gets the hand-parsed /v1/score body (one snapshot or a batch) with a synthetic
example shaped like what the serving model reads (never a training row). `/docs` (Swagger UI)
and `/redoc` load their scripts from `/docs/assets/...`, the files the pinned
`fastapi-offline` package ships, so they work on a machine without internet. `/` sends a
browser to the console and tells anyone else where things are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import TypeAdapter

from features.schema import column_kind
from serving.schemas import NO_NUL_PATTERN, SNAPSHOT_EXAMPLE, JSONResponse, ScoreBatch, Snapshot

ASSETS_URL = "/docs/assets"


def _assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
# Placeholder values by kind for fields the fixed example does not cover.
_KIND_EXAMPLES: dict[str, Any] = {
    "time": "2026-11-20T13:00:00Z",
    "bool": False,
    "string": "example",
    "count": 10.0,
    "non_negative": 1.0,
    "fraction": 0.5,
    "number": 0.0,
}


def synthetic_example(bundle: Any | None) -> dict[str, Any]:
    """A made-up snapshot with every field `bundle` reads (SNAPSHOT_EXAMPLE without one)."""
    if bundle is None:
        return dict(SNAPSHOT_EXAMPLE)
    fields = list(getattr(bundle, "input_fields", ()) or ())
    transform = getattr(bundle, "transform", None)
    text = set(getattr(transform, "text_columns_", ()) or ())
    categorical = set(getattr(transform, "categorical_columns_", ()) or ())
    example: dict[str, Any] = {"item_id": "it_example_1"}
    for name in fields:
        if name in example:
            continue
        if name in SNAPSHOT_EXAMPLE:
            example[name] = SNAPSHOT_EXAMPLE[name]
        elif name in text:
            example[name] = "an example text about a video"
        elif name in categorical:
            example[name] = "example"
        else:
            example[name] = _KIND_EXAMPLES.get(column_kind(name), 1.0)
    return example


def _apply_contract(snapshot: dict[str, Any], bundle: Any) -> None:
    """The Snapshot schema as the serving model reads it: its fields required, the columns it
    declares beyond the snapshot schema added, and nothing else accepted."""
    from serving.scoring import InputContract

    contract = InputContract(bundle)
    transform = getattr(bundle, "transform", None)
    text = set(getattr(transform, "text_columns_", ()) or ())
    categorical = set(getattr(transform, "categorical_columns_", ()) or ())
    props = snapshot.setdefault("properties", {})
    for name in sorted(contract.known - set(props)):
        string = {"type": "string", "pattern": NO_NUL_PATTERN}
        if name in text:
            props[name] = {"anyOf": [string, {"type": "null"}]}
        elif name in categorical:
            props[name] = {"anyOf": [string, {"type": "number"}, {"type": "null"}]}
        elif name in contract.required:
            props[name] = {"anyOf": [{"type": "number"}, {"type": "null"}]}
        else:
            props[name] = {}
    if contract.anchors is not None:
        # The anchors the model scores (InputContract refuses others); "" and null: post.
        props["anchor"] = {
            "anyOf": [
                {"type": "string", "enum": ["", *sorted(contract.anchors)]},
                {"type": "null"},
            ],
            "description": "What the snapshot is anchored at (null: post).",
        }
    snapshot["required"] = sorted(contract.required)
    snapshot["additionalProperties"] = False


def _score_request_schema(components: dict[str, Any]) -> dict[str, Any]:
    """The /v1/score body schema (one snapshot or a batch), its $defs moved to components."""
    adapter: TypeAdapter[Any] = TypeAdapter(Snapshot | ScoreBatch)  # type: ignore[operator]
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


def install_openapi(app: FastAPI, max_batch_size: int, current_bundle: Any) -> None:
    """Serve the spec (with the score body and a synthetic example for the model serving
    now) and the docs pages with local assets. `current_bundle()` returns that bundle or None."""

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
        components["ScoreBatch"]["properties"]["items"]["maxItems"] = max_batch_size
        bundle = current_bundle()
        if bundle is not None:
            _apply_contract(components["Snapshot"], bundle)
        example = orjson.loads(orjson.dumps(synthetic_example(bundle), default=str))
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
                                            "items": [
                                                example,
                                                dict(example, item_id="it_example_2"),
                                            ]
                                        },
                                    },
                                },
                            }
                        },
                    }
        # Cached only once a model answered: its fields shape the example.
        if bundle is not None:
            app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
    title = app.title

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/console", status_code=307)
        return JSONResponse(
            {
                "service": title,
                "console": "/console",
                "docs": "/docs",
                "redoc": "/redoc",
                "openapi": "/openapi.json",
                "health": "/healthz",
                "ready": "/readyz",
                "metrics": "/metrics",
            }
        )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} - API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{title} - API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        media = ASSETS.get(name)  # a fixed list: no path traversal
        if media is None:
            raise HTTPException(404, "not found")
        return FileResponse(
            _assets_dir() / name, media_type=media, headers={"Cache-Control": "max-age=86400"}
        )
