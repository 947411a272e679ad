"""Online scoring: one snapshot or a batch in, probabilities, flags and reason codes out.

The hot path parses with orjson, validates with a TypeAdapter (plain dicts, no models per
item), scores with the bundle's no-DataFrame paths, and only enqueues flagged items: the
review store is written by the flag writer's thread, never here.
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
from serving.model_holder import LoadedModel
from serving.schemas import (
    BatchAdapter,
    ErrorBody,
    FlaggedItem,
    ItemScore,
    ScoreBatchResponse,
    SnapshotAdapter,
)

router = APIRouter(prefix="/v1", tags=["score"])

TOP_K = 5
# Snapshot fields that say how many people an item reached, best first (flat datasets differ).
REACH_FIELDS = ("n_view", "n_viewers", "video_view_count")
_JSON = "application/json"


def _validation_error(exc: ValidationError, prefix: tuple[Any, ...]) -> RequestValidationError:
    return RequestValidationError(
        [
            {"type": e["type"], "loc": (*prefix, *e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
    )


def _reach(record: Mapping[str, Any]) -> float:
    for name in REACH_FIELDS:
        v = record.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v:
            return float(v)
    return 0.0


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
    sampled: bool,
    scored_at: datetime | None = None,
) -> None:
    svc.flags.submit(
        FlaggedItem(
            item_id=record["item_id"],
            as_of=record.get("as_of"),
            anchor=record.get("anchor") or "post",
            snapshot=record,
            scores={k: v for k, v in probs.items() if v is not None and v == v},
            flagged=flagged,
            reasons=reasons,
            model_version=model.version,
            reach=_reach(record),
            sampled=sampled,
            scored_at=scored_at or datetime.now(UTC),
        )
    )


def score_one(svc: Service, model: LoadedModel, record: dict[str, Any]) -> dict[str, Any]:
    """Score one validated snapshot; enqueue it if flagged (or sampled)."""
    probs, flagged, reasons = model.bundle.score_explain_one(record, top_k=TOP_K)
    svc.metrics.scores.observe_row(probs)
    svc.metrics.items_scored.inc()
    if flagged:
        svc.metrics.count_flags(dict.fromkeys(flagged, 1))
        _enqueue(svc, model, record, probs, flagged, reasons, False)
    elif _sampled(record["item_id"], svc.sample_rate):
        _enqueue(svc, model, record, probs, [], {}, True)
    return {
        "item_id": record["item_id"],
        "probabilities": probs,
        "flagged": flagged,
        "reasons": reasons,
        "model_version": model.version,
    }


def score_batch(
    svc: Service, model: LoadedModel, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Score validated snapshots in one vectorised call; explain and enqueue flagged ones."""
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
    scored_at = datetime.now(UTC)  # one moment for the whole batch
    out = []
    # NaN -> None so the response says null for "not applicable".
    rows = np.where(np.isnan(probs), None, probs).tolist()
    for i, (record, row) in enumerate(zip(records, rows, strict=True)):
        p = dict(zip(issues, row, strict=True))
        flagged, reasons = explained.get(i, ([], {}))
        if flagged:
            _enqueue(svc, model, record, p, flagged, reasons, False, scored_at)
        elif _sampled(record["item_id"], svc.sample_rate):
            _enqueue(svc, model, record, p, [], {}, True, scored_at)
        out.append(
            {
                "item_id": record["item_id"],
                "probabilities": p,
                "flagged": flagged,
                "reasons": reasons,
                "model_version": version,
            }
        )
    return out


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
            result: Any = {
                "items": score_batch(svc, model, batch.items) if batch.items else [],
                "model_version": model.version,
            }
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
