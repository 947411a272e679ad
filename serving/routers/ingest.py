"""Ingestion into the online store: POST /v1/events and the upserts of items, creators,
moderation and appeals; GET /v1/items/{item_id}/score scores an item's live snapshot.

A body is ``{"rows": [...]}`` (contract rows as objects) or ``{"columns": {...}}`` (one
list per column), with an optional ``batch_id`` (or the ``Idempotency-Key`` header): a
batch id seen before is acknowledged and not applied again. Rows are checked with the
data contract's code; any problem rejects the whole batch (422 naming table, column and
rows) and nothing of it is applied. Needs a key with the ``ingest`` scope.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from features.online.errors import AsOfTooEarly, Batch, BatchRejected, StoreUnavailable
from serving.deps import SECURITY, authorize, loaded_model
from serving.limits import ITEM_ID_MAX
from serving.online import OnlineService
from serving.schemas import ErrorBody
from serving.scoring import TOP_K

router = APIRouter(prefix="/v1", tags=["ingest"])

MAX_ROWS = 100_000


class IngestResult(BaseModel):
    """What a batch did: rows applied, rows of expired items dropped, a re-sent batch."""

    table: str
    rows: int
    expired: int
    duplicate: bool
    items: int
    clock: str | None


def online_of(request: Request) -> OnlineService:
    online = getattr(request.app.state, "online", None)
    if online is None:
        raise HTTPException(503, "the online store is not enabled in this service")
    return online


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, f"{exc}; retry later", headers={"Retry-After": "2"})


def _rejected(exc: BatchRejected) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "contract",
                "loc": [
                    "body",
                    p.table,
                    *([p.column] if p.column else []),
                    *(["rows", *p.rows] if p.rows else []),
                ],
                "msg": str(p),
            }
            for p in exc.problems[:50]
        ]
    )


def _batch_id(data: dict[str, Any], request: Request) -> Any:
    """The batch's id: the body's ``batch_id`` (null: none), else the ``Idempotency-Key``
    header. A value given is passed on as it is, so that an empty or non-string id is
    refused (`check_batch_id`) rather than read as no id, which would apply a re-sent batch
    twice; a body id and a header that disagree are refused too."""
    header = request.headers.get("idempotency-key")
    body_id = data.get("batch_id")
    if body_id is not None and header is not None and body_id != header:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ["body", "batch_id"],
                    "msg": "batch_id and the Idempotency-Key header differ; send one, or the "
                    "same id in both",
                }
            ]
        )
    return body_id if body_id is not None else header


async def _ingest(request: Request, table: str) -> Response:
    authorize(request, "ingest")
    online = online_of(request)
    body = await request.body()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ["body", exc.pos], "msg": f"invalid JSON: {exc.msg}"}]
        ) from None
    if not isinstance(data, dict) or ("rows" in data) == ("columns" in data):
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ["body"],
                    "msg": 'send {"rows": [{...}, ...]} or {"columns": {"name": [...]}}, '
                    'with an optional "batch_id"',
                }
            ]
        )
    extra = set(data) - {"rows", "columns", "batch_id"}
    if extra:
        raise RequestValidationError(
            [{"type": "extra_forbidden", "loc": ["body", k], "msg": "unknown field"} for k in extra]
        )
    rows, columns = data.get("rows"), data.get("columns")
    # Checked by presence, not value: {"rows": null} is neither shape and must not pass.
    if "rows" in data and not isinstance(rows, list):
        raise RequestValidationError(
            [{"type": "list_type", "loc": ["body", "rows"], "msg": "rows must be a list"}]
        )
    if "columns" in data and not isinstance(columns, dict):
        raise RequestValidationError(
            [{"type": "dict_type", "loc": ["body", "columns"], "msg": "columns must be an object"}]
        )
    n = (
        len(rows)
        if rows is not None
        else max((len(v) for v in columns.values() if isinstance(v, list)), default=0)
    )
    if n > MAX_ROWS:
        raise HTTPException(413, f"batch of {n} rows exceeds {MAX_ROWS}")
    batch_id = _batch_id(data, request)
    try:
        result = await asyncio.to_thread(
            online.ingest, [Batch(table, rows=rows, columns=columns)], batch_id
        )
    except BatchRejected as exc:
        raise _rejected(exc) from None
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    out = IngestResult(
        table=table,
        rows=result.rows,
        expired=result.expired,
        duplicate=result.duplicate,
        items=len(result.items),
        clock=None if result.clock_ns is None else str(result.clock_ns),
    )
    return Response(orjson.dumps(out.model_dump()), media_type="application/json")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid API key."},
    403: {"model": ErrorBody, "description": "The key lacks the ingest scope."},
    413: {"model": ErrorBody, "description": "Too many rows in one batch."},
    422: {
        "model": ErrorBody,
        "description": "The batch breaks the data contract: each problem names table, column "
        "and rows (0-based). Nothing of the batch was applied.",
    },
    503: {"model": ErrorBody, "description": "The online store is unreachable (see /readyz)."},
}


def _route(table: str, path: str, doc: str) -> None:
    async def endpoint(request: Request) -> Response:
        return await _ingest(request, table)

    endpoint.__name__ = f"ingest_{table}"
    endpoint.__doc__ = doc
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        response_model=IngestResult,
        responses=_RESPONSES,
        openapi_extra={"security": SECURITY},
    )


# GET score's path parameter, declared for the OpenAPI document and checked by hand: as a
# FastAPI parameter, its resolution and validation cost about a tenth of the request's CPU.
_ITEM_ID_PARAMETER = {
    "name": "item_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": ITEM_ID_MAX, "title": "Item Id"},
}


def _item_id(request: Request) -> str:
    """The path's item id, within the length FastAPI's Path(min_length=1, max_length=...)
    allowed (422 in its shape otherwise)."""
    item_id: str = request.path_params["item_id"]
    if not 1 <= len(item_id) <= ITEM_ID_MAX:
        short = len(item_id) < 1
        raise RequestValidationError(
            [
                {
                    "type": "string_too_short" if short else "string_too_long",
                    "loc": ("path", "item_id"),
                    "msg": f"String should have at {'least 1 character' if short else 'most'}"
                    + ("" if short else f" {ITEM_ID_MAX} characters"),
                    "ctx": {"min_length": 1} if short else {"max_length": ITEM_ID_MAX},
                }
            ]
        )
    return item_id


@router.get(
    "/items/{item_id:path}/score",
    responses={
        404: {"model": ErrorBody, "description": "The item is unknown or expired."},
        422: {"model": ErrorBody, "description": "The item id is longer than allowed."},
        **{k: v for k, v in _RESPONSES.items() if k in (401, 403, 503)},
    },
    openapi_extra={"security": SECURITY, "parameters": [_ITEM_ID_PARAMETER]},
)
async def item_score(request: Request) -> Response:
    """Score the item's current online snapshot with the serving model (reason codes for
    flagged issues). Reading does not queue the item: background re-scoring does."""
    item_id = _item_id(request)
    authorize(request, "score")
    online = online_of(request)
    model = loaded_model(request.app.state.service)
    try:
        # the snapshot as a JSON answer carries it (Python datetimes, as json_record makes)
        record = await online.store.snapshot_async(item_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    except AsOfTooEarly as exc:  # pragma: no cover - the live as_of is after the clock
        raise HTTPException(409, str(exc)) from None
    if record is None:
        raise HTTPException(
            404,
            f"item {item_id!r} is not in the online store (never upserted with POST "
            "/v1/items, or expired after its last horizon)",
        )
    probs, flagged, reasons = model.bundle.score_explain_one(record, top_k=TOP_K)
    body = {
        "item_id": item_id,
        "as_of": record["as_of"],
        "probabilities": probs,
        "flagged": flagged,
        "reasons": reasons,
        "model_version": model.version,
        "snapshot": record,
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


# Registered after GET score on purpose: a request is matched against the routes in order
# (FastAPI's matching of each is most of the routing CPU), and GET score is the hot one.
_route("events", "/events", "Append a batch of `events` rows (views, likes, reports, ...).")
_route("items", "/items", "Upsert `items` rows (the creator is fixed at first upsert).")
_route("creators", "/creators", "Upsert `creators` rows.")
_route("moderation", "/moderation", "Append `moderation` actions.")
_route("appeals", "/appeals", "Upsert `appeals` rows, keyed by (item_id, filed_at).")

# served by serving.direct.DirectRoute, before FastAPI's router
item_score_route = next(r for r in router.routes if getattr(r, "endpoint", None) is item_score)
