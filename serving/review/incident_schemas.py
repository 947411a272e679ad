"""Pydantic models of the incident API (also what the store's incident operations return)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from serving.limits import Note

IncidentStatus = Literal["new", "acknowledged", "mitigating", "resolved", "verified", "false_alarm"]
# What an analyst may ask for; `verified` is set by the effect measurement only.
Target = Literal["acknowledged", "mitigating", "resolved", "false_alarm"]


class IncidentOut(BaseModel):
    """An incident: what discovery found, where it stands, and what the fix did."""

    id: int
    kind: str = Field(description="`rate` (issue-rate discovery) or `model_health`.")
    issue: str
    segment: dict[str, str] = Field(description="Dimension -> value; empty for the platform.")
    segment_key: str
    signal: str | None = None
    start: datetime = Field(description="Estimated start of the incident (UTC).")
    end: datetime = Field(description="End of its evidence window (UTC).")
    detected_at: datetime
    true_start: datetime | None = Field(
        None, description="Known true start (planted or labelled), for time to detect."
    )
    severity: float = Field(description="-log10 p of the whole window's excess.")
    evidence: dict[str, Any]
    status: IncidentStatus
    owner: str | None = None
    notes: str | None = None
    fix_at: datetime | None = None
    fix_description: str | None = None
    effect: dict[str, Any] | None = None
    runs: int = Field(description="Discovery runs that created or changed it.")
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None


class IncidentPage(BaseModel):
    """One page of incidents, newest detection first."""

    total: int
    items: list[IncidentOut]


class IncidentEventOut(BaseModel):
    """One entry of an incident's append-only history."""

    id: int
    event: str
    from_status: str | None = None
    to_status: str | None = None
    actor: str | None = None
    at: datetime
    note: str | None = None
    detail: dict[str, Any]


class TransitionRequest(BaseModel):
    """Move an incident on (the analyst is the caller); a fix needs `fix_at` or defaults to now."""

    to: Target
    note: Note | None = None
    fix_at: datetime | None = Field(
        None, description="When the fix went live (with `to: mitigating`); schedules the effect."
    )
    fix_description: Note | None = Field(None, description="What was done.")
    true_start: datetime | None = Field(
        None, description="When the incident really began, if known (time to detect uses it)."
    )


class EvidenceStratum(BaseModel):
    """Labels of the incident's queued items in one stratum: the confirmed share, 95% Wilson."""

    stratum: str
    queued: int
    labeled: int
    confirmed: int
    share: float | None = None
    ci: tuple[float, float] | None = None


class IssueOps(BaseModel):
    """Operational metrics of one issue type's incidents (hours; medians)."""

    issue: str
    incidents: int
    by_status: dict[str, int]
    triaged: int = Field(description="Incidents an analyst acted on (not `new`).")
    false_alarms: int
    precision: float | None = Field(None, description="1 - false alarms / triaged.")
    time_to_detect_h: float | None = None
    detect_from_true_start: int = Field(
        0, description="How many time-to-detect values start at a known true start."
    )
    time_to_acknowledge_h: float | None = None
    time_to_resolve_h: float | None = None
