"""Online scoring: one snapshot or a batch in, probabilities, flags and reason codes out.

The hot path parses with orjson, validates with a TypeAdapter (plain dicts, no models per
item), scores with the bundle's no-DataFrame paths, and only enqueues flagged (or sampled) items:
one item as a FlaggedItem, a batch as its request and response bytes (`ScoredBatch`, so
no snapshot is serialised here). The review store is written off the request path.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from serving.deps import SECURITY, Service, authorize, loaded_model
from serving.flag_writer import ScoredBatch, flagged_item
from serving.model_holder import LoadedModel
from serving.schemas import (
    BatchAdapter,
    ErrorBody,
    ItemScore,
    ScoreBatchResponse,
    SnapshotAdapter,
)

router = APIRouter(prefix="/v1", tags=["score"])

TOP_K = 5
_JSON = "application/json"


def _validation_error(exc: ValidationError, prefix: tuple[Any, ...]) -> RequestValidationError:
    return RequestValidationError(
        [
            {"type": e["type"], "loc": (*prefix, *e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
    )


def _sampled(item_id: str, rate: float) -> bool:
    # A hash of the id, not a random draw: the same item is in or out on every request, and
    # the choice is independent of its scores (what honest precision/recall estimates need).
    return rate > 0 and zlib.crc32(item_id.encode()) < rate * 4294967296.0


def _batch_reasons(
    bundle: Any,
    records: list[dict[str, Any]],
    design: Any,
    rows: list[int],
    flagged: list[list[str]],
) -> list[dict]:
    """Reason-code dicts per flagged row (`rows` index the batch, `flagged[k]` are row
    rows[k]'s issues), from the batch's own design: one TreeSHAP pass per issue over the rows
    flagged for it, in each row's flagged-issue order."""
    out: list[dict] = [{} for _ in rows]
    for issue in bundle.issue_names:
        which = [k for k, f in enumerate(flagged) if issue in f]
        if not which:
            continue
        picked = [rows[k] for k in which]
        explained = bundle.explain_design(
            [records[i] for i in picked], design.take(picked), issue, TOP_K
        )
        for k, reasons in zip(which, explained, strict=True):
            out[k][issue] = reasons
    return [{issue: r[issue] for issue in f} for r, f in zip(out, flagged, strict=True)]


def _enqueue(
    svc: Service,
    model: LoadedModel,
    record: dict[str, Any],
    probs: Mapping[str, float | None],
    flagged: list[str],
    reasons: dict,
) -> None:
    svc.flags.submit(
        flagged_item(record, probs, flagged, reasons, model.version, datetime.now(UTC))
    )


def score_one(svc: Service, model: LoadedModel, record: dict[str, Any]) -> dict[str, Any]:
    """Score one validated snapshot; enqueue it if flagged (or sampled)."""
    probs, flagged, reasons = model.bundle.score_explain_one(record, top_k=TOP_K)
    svc.metrics.scores.observe_row(probs)
    svc.metrics.items_scored.inc()
    if flagged:
        svc.metrics.count_flags(dict.fromkeys(flagged, 1))
        _enqueue(svc, model, record, probs, flagged, reasons)
    elif _sampled(record["item_id"], svc.sample_rate):
        _enqueue(svc, model, record, probs, [], {})
    return {
        "item_id": record["item_id"],
        "probabilities": probs,
        "flagged": flagged,
        "reasons": reasons,
        "model_version": model.version,
    }


def score_batch(
    svc: Service, model: LoadedModel, records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[int]]:
    """Score validated snapshots in one vectorised call and explain the flagged ones.

    Returns the response items and the rows the review queue gets (flagged, or sampled);
    the route enqueues those as a `ScoredBatch` once the response is serialised.
    """
    bundle = model.bundle
    issues = list(bundle.issue_names)
    design = bundle.design_records(records)
    probs = np.asarray(bundle.score_design(design), dtype=np.float64)
    thresholds = np.array([bundle.thresholds[i] for i in issues], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        hits = probs >= thresholds  # NaN (issue not applicable) compares False
    svc.metrics.scores.observe_many(issues, probs)
    svc.metrics.items_scored.inc(len(records))
    svc.metrics.count_flags(
        {issue: int(n) for issue, n in zip(issues, hits.sum(axis=0), strict=True)}
    )
    flagged_rows = np.flatnonzero(hits.any(axis=1)).tolist()
    hit_rows = hits[flagged_rows].tolist()  # Python bools: cheaper to walk than numpy rows
    flagged_issues = [[iss for iss, hit in zip(issues, h, strict=True) if hit] for h in hit_rows]
    explained = dict(
        zip(
            flagged_rows,
            zip(
                flagged_issues,
                _batch_reasons(bundle, records, design, flagged_rows, flagged_issues),
                strict=True,
            ),
            strict=True,
        )
    )
    version = model.version
    rate = svc.sample_rate
    out = []
    persist = []
    # NaN -> None so the response says null for "not applicable".
    rows = np.where(np.isnan(probs), None, probs).tolist()
    for i, (record, row) in enumerate(zip(records, rows, strict=True)):
        flagged, reasons = explained.get(i, ([], {}))
        if flagged or _sampled(record["item_id"], rate):
            persist.append(i)
        out.append(
            {
                "item_id": record["item_id"],
                "probabilities": dict(zip(issues, row, strict=True)),
                "flagged": flagged,
                "reasons": reasons,
                "model_version": version,
            }
        )
    return out, persist


@router.post(
    "/score",
    response_model=ItemScore | ScoreBatchResponse,
    responses={
        401: {"model": ErrorBody, "description": "Missing or invalid API key."},
        403: {"model": ErrorBody, "description": "The key lacks the score scope."},
        413: {"model": ErrorBody, "description": "Body or batch larger than allowed."},
        422: {"model": ErrorBody, "description": "Invalid snapshot; `loc` is the field path."},
        503: {"model": ErrorBody, "description": "No model loaded yet."},
    },
    # The body is parsed by hand (orjson + TypeAdapter); its schema is added in serving.app.
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
            scored, persist = score_batch(svc, model, batch.items) if batch.items else ([], [])
            payload = orjson.dumps(
                {"items": scored, "model_version": model.version},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            if persist:
                # The review queue's entries are these bytes, expanded off this process.
                svc.flags.submit_batch(ScoredBatch(body, payload, persist, datetime.now(UTC)))
            return Response(payload, media_type=_JSON)
        else:
            try:
                record = SnapshotAdapter.validate_python(data)
            except ValidationError as exc:
                raise _validation_error(exc, ("body",)) from None
            result = score_one(svc, model, record)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        # The feature transform names the field and the value it cannot use.
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body",), "msg": str(exc)[:500]}]
        ) from None
    return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type=_JSON)
