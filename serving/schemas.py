"""Request/response models of the scoring API and the `FlaggedItem` handed to the review store.

The snapshot is a `TypedDict` (not a `BaseModel`) so validation hands the bundle a plain dict
without a per-item `model_dump`; its known fields and types come from `features.schema`.
Other fields pass this schema; the serving model's own contract (`serving.scoring`) then
refuses the ones it does not declare (a flat dataset's bundle declares its own columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Required

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, with_config
from starlette.responses import JSONResponse as _StarletteJSONResponse
from typing_extensions import TypedDict

from features import schema as fs
from serving.limits import Anchor, ItemId

# --- the snapshot object ---------------------------------------------------------------------

# Numbers must be finite JSON numbers. Strict, so that a boolean or a string is refused by
# name: lax validation read `true` as 1, "5" as 5 and "inf", "Infinity", "NaN" as floats (a
# caller's type bug scored silently). Strict floats still take JSON integers.
_NUMBER = {"strict": True, "allow_inf_nan": False}
_Finite = Annotated[float, Field(**_NUMBER)]
# No NUL in any string: documented here, checked on the raw body by the score route (a scan
# of the bytes, not a validator per field).
NO_NUL_PATTERN = "^[^\x00]*$"
_Text = Annotated[str, Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
_KIND_TYPES: dict[str, Any] = {
    "id": Required[Annotated[ItemId, Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]],
    # With a zone or offset (or epoch seconds): a naive time is refused, never assumed UTC
    # (the data contract's rule); it is part of the review queue's key.
    "time": AwareDatetime | None,
    "bool": bool | None,
    "string": _Text | None,
    "count": Annotated[float, Field(ge=0, description="A count (>= 0).", **_NUMBER)] | None,
    "non_negative": Annotated[float, Field(ge=0, **_NUMBER)] | None,
    "fraction": Annotated[float, Field(ge=0, le=1, **_NUMBER)] | None,
    "number": _Finite | None,  # other numbers (0/1 flags): null when unknown
}


def _snapshot_field_type(name: str) -> Any:
    if name == "anchor":  # part of the review store's key
        return Annotated[Anchor, Field(json_schema_extra={"pattern": NO_NUL_PATTERN})] | None
    return _KIND_TYPES[fs.column_kind(name)]


# Built from features.schema, so a new snapshot column shows up in the API schema by itself.
Snapshot = with_config(ConfigDict(extra="allow", title="Snapshot"))(
    TypedDict(  # type: ignore[operator]
        "Snapshot",
        {name: _snapshot_field_type(name) for name in fs.SNAPSHOT_COLUMNS},
        total=False,
    )
)
Snapshot.__doc__ = (
    "One item snapshot at `as_of` (columns of features/schema.py). The serving model says "
    "which fields it needs; other fields are refused unless the model declares them."
)

SNAPSHOT_EXAMPLE: dict[str, Any] = {
    "item_id": "it_000123",
    "as_of": "2026-11-20T13:00:00Z",
    "anchor": "post",
    "horizon_h": 1.0,
    "creator_id": "cr_0042",
    "created_at": "2026-11-20T12:00:00Z",
    "format": "video",
    "duration_s": 31.0,
    "region": "US",
    "language": "en",
    "category": "comedy",
    "caption": "you will not believe what happens next",
    "hashtags": "fyp viral",
    "audio_id": "au_77",
    "age_h": 1.0,
    "n_view": 1840.0,
    "n_like": 95.0,
    "n_share": 12.0,
    "n_comment": 31.0,
    "n_report": 4.0,
    "n_not_interested": 22.0,
    "n_viewers": 1702.0,
    "mean_watch_frac": 0.41,
    "creator_followers": 5120.0,
    "creator_verified": False,
    "creator_age_d": 210.0,
}


class ScoreBatch(BaseModel):
    """Several snapshots scored in one request (at most `max_batch_size`)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [SNAPSHOT_EXAMPLE]}]}, extra="forbid"
    )
    items: list[Snapshot] = Field(description="Item snapshots to score.")  # type: ignore[valid-type]


SnapshotAdapter: TypeAdapter[dict[str, Any]] = TypeAdapter(Snapshot)
BatchAdapter: TypeAdapter[ScoreBatch] = TypeAdapter(ScoreBatch)


# --- responses -------------------------------------------------------------------------------


class ReasonCodeOut(BaseModel):
    """One feature's contribution (log-odds) to a flagged issue's score."""

    feature: str
    value: float | None
    contribution: float


class ItemScore(BaseModel):
    """Scores of one item: a probability per issue (null where it does not apply)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "it_000123",
                    "probabilities": {
                        "low_quality": 0.81,
                        "harmful_interactions": 0.07,
                        "wrongful_enforcement": None,
                    },
                    "flagged": ["low_quality"],
                    "reasons": {
                        "low_quality": [
                            {"feature": "n_report_spam", "value": 3.0, "contribution": 1.2}
                        ]
                    },
                    "model_version": "3",
                }
            ]
        }
    )
    item_id: str
    probabilities: dict[str, float | None]
    flagged: list[str] = Field(description="Issues whose probability reached their threshold.")
    reasons: dict[str, list[ReasonCodeOut]] = Field(
        description="Top reason codes, only for flagged issues."
    )
    model_version: str
    disabled: dict[str, str] = Field(
        default_factory=dict,
        description="Issues the serving model does not score, and why (training found no "
        "trustworthy signal): their probability is null and they are never flagged.",
    )


class ScoreBatchResponse(BaseModel):
    """Scores of a batch, in request order."""

    items: list[ItemScore]
    model_version: str


class ModelInfo(BaseModel):
    """The model currently serving: registry version, alias, thresholds and training metrics."""

    name: str
    version: str
    alias: str
    source: Literal["mlflow", "cache"] = Field(
        description="Where it was loaded from: the registry, or the local cache when it was down."
    )
    loaded_at: datetime
    issues: list[str]
    thresholds: dict[str, float | None] = Field(
        description="Review threshold per issue; null for a disabled issue."
    )
    disabled: dict[str, str] = Field(
        default_factory=dict, description="Disabled issues (never scored nor flagged) and why."
    )
    metrics: dict[str, Any] = Field(description="Training metrics from the bundle's metadata.")
    metadata: dict[str, Any]


class ReloadResult(BaseModel):
    """Outcome of a forced alias check."""

    previous_version: str | None
    version: str | None
    reloaded: bool
    error: str | None = None


class FlagHealth(BaseModel):
    """Where the flags stand: the flag writer, its sink (the review store), the spool."""

    writer_up: bool = Field(description="The flag writer runs (its heartbeat is fresh).")
    sink_up: bool = Field(description="The review store takes writes.")
    pending_items: int = Field(description="Flags spooled and not stored yet.")
    sink_error: str | None = None


class Health(BaseModel):
    """Liveness/readiness answer.

    ready: serving. degraded (still 200): scoring works and every flag is spooled durably,
    but the flag writer is down or the review store unreachable, so flags wait in the spool
    and the review API answers 503; `problems` says which. not ready (503): no model loaded,
    or the spool cannot take flags, so /v1/score would refuse.
    """

    status: Literal["ok", "ready", "degraded", "not ready"]
    model_version: str | None = None
    problems: list[str] = Field(default_factory=list)
    flags: FlagHealth | None = None


class ErrorBody(BaseModel):
    """Error answer: a message, and the request id to find the server log line."""

    detail: Any
    request_id: str | None = None


# --- hand-off to the review store ------------------------------------------------------------


@dataclass(slots=True)
class FlaggedItem:
    """A scored item for the review queue: flagged by the model, or `sampled` for honest metrics.

    `snapshot` is the validated request record (it may hold datetimes, NaN or numpy scalars;
    each sink serialises it its own way, off the request path); `reasons` maps each flagged
    issue to ReasonCode dicts (feature, value, contribution).
    """

    item_id: str
    as_of: datetime | None
    anchor: str
    snapshot: dict[str, Any]
    scores: dict[str, float]
    flagged: list[str]
    reasons: dict[str, list[dict[str, Any]]]
    model_version: str
    scored_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reach: float = 0.0
    sampled: bool = False


class JSONResponse(_StarletteJSONResponse):
    """JSON via orjson (NaN -> null, numpy and datetimes handled); the hot path's response."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
