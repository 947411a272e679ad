"""POST /v1/score: one snapshot or a batch in, probabilities, flags and reason codes out.

The hot path parses with orjson, validates with a TypeAdapter (plain dicts, no models per
item), checks the fields against the serving model's contract and hands over to
`serving.scoring`. Flagged items are spooled before the answer leaves: when the spool cannot
take them, the request fails with 503 rather than answer for flags that could be lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from serving.deps import SECURITY, authorize, loaded_model
from serving.schemas import (
    BatchAdapter,
    ErrorBody,
    ItemScore,
    ScoreBatchResponse,
    SnapshotAdapter,
)
from serving.scoring import nul_problems, score_batch, score_one
from serving.spool import SpoolError

router = APIRouter(prefix="/v1", tags=["score"])

_JSON = "application/json"
_NUL_ESCAPE = b"\\u0000"  # how JSON carries a NUL character (raw control bytes are invalid)


def _validation_error(exc: ValidationError, prefix: tuple[Any, ...]) -> RequestValidationError:
    return RequestValidationError(
        [
            {"type": e["type"], "loc": (*prefix, *e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
    )


def _spool_failed(exc: SpoolError) -> HTTPException:
    return HTTPException(
        503,
        f"flags could not be made durable, so this request is not accepted: {exc}",
        headers={"Retry-After": "5"},
    )


@router.post(
    "/score",
    response_model=ItemScore | ScoreBatchResponse,
    responses={
        401: {"model": ErrorBody, "description": "Missing or invalid API key."},
        403: {"model": ErrorBody, "description": "The key lacks the score scope."},
        413: {"model": ErrorBody, "description": "Body or batch larger than allowed."},
        422: {
            "model": ErrorBody,
            "description": "Invalid snapshot: `loc` is the field path; fields the model needs "
            "are missing, or a field is unknown (with the closest known name).",
        },
        503: {
            "model": ErrorBody,
            "description": "No model loaded yet, the worker is overloaded (see Retry-After), "
            "or flags could not be spooled.",
        },
    },
    # The body is parsed by hand (orjson + TypeAdapter); its schema is added in serving.openapi.
    # Auth and the model are plain calls, not dependencies: FastAPI's resolution of four
    # dependencies cost more than a single item's scoring work.
    openapi_extra={"x-surfacer-score-body": True, "security": SECURITY},
)
async def score(request: Request) -> Response:
    """Score one item snapshot, or {"items": [...]}: probabilities, flags, reason codes."""
    svc, _ = authorize(request, "score")
    model = loaded_model(svc)
    body = await request.body()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": f"invalid JSON: {exc.msg}"}]
        ) from None
    if _NUL_ESCAPE in body and (problems := nul_problems(data)):
        raise RequestValidationError(problems)
    contract = model.contract
    try:
        if isinstance(data, dict) and "items" in data:
            items = data["items"]
            limit = svc.settings.max_batch_size
            if isinstance(items, list) and len(items) > limit:
                raise HTTPException(
                    413, f"batch of {len(items)} items exceeds max_batch_size={limit}"
                )
            try:
                batch = BatchAdapter.validate_python(data)
            except ValidationError as exc:
                raise _validation_error(exc, ("body",)) from None
            if problems := contract.problems(batch.items, ("body", "items")):
                raise RequestValidationError(problems)
            scored, persist = score_batch(svc, model, batch.items) if batch.items else ([], [])
            payload = orjson.dumps(
                {"items": scored, "model_version": model.version},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            if persist:
                # The review queue's entries are these bytes, expanded by the flag writer.
                at = datetime.now(UTC).isoformat()
                try:
                    svc.spool.append_batch(body, payload, persist, at)
                except SpoolError as exc:
                    raise _spool_failed(exc) from None
            return Response(payload, media_type=_JSON)
        try:
            record = SnapshotAdapter.validate_python(data)
        except ValidationError as exc:
            raise _validation_error(exc, ("body",)) from None
        if problems := contract.problems((record,), ("body",)):
            raise RequestValidationError(problems)
        try:
            result = score_one(svc, model, record)
        except SpoolError as exc:
            raise _spool_failed(exc) from None
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        # The feature transform names the field and the value it cannot use.
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body",), "msg": str(exc)[:500]}]
        ) from None
    return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type=_JSON)
