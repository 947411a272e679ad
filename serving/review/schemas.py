"""Pydantic models of the review queue API (also what `ReviewStore` returns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.limits import PASSWORD_MAX, AnalystName, IssueName, Lease, Note

Status = Literal["pending", "claimed", "labeled", "skipped"]
Decision = Literal["confirm", "reject", "relabel"]
Stratum = Literal["flagged", "sample"]


class ReasonCode(BaseModel):
    """One feature's contribution to a flagged issue's score."""

    feature: str
    value: float | None = None
    contribution: float


class LabelOut(BaseModel):
    """A stored label: 1 if the item has `issue`, 0 if not."""

    id: int
    review_id: int
    item_id: str
    issue: str
    label: int
    decision: Decision
    reviewer: str
    labeled_at: datetime
    note: str | None = None


class ItemSummary(BaseModel):
    """A queue row: what the list shows."""

    id: int = Field(description="Review item id (one per item, as_of and model version).")
    item_id: str
    as_of: datetime | None
    anchor: str
    flagged: list[str]
    scores: dict[str, float]
    model_version: str
    priority: float = Field(description="Expected impact: probability x reach.")
    reach: float
    stratum: Stratum
    sampled: bool
    sample_prob: float = Field(description="Probability the item entered the queue.")
    status: Status
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    scored_at: datetime


class ItemDetail(ItemSummary):
    """A queue row with the snapshot, reason codes and labels."""

    snapshot: dict[str, Any]
    reasons: dict[str, list[ReasonCode]]
    labels: list[LabelOut] = Field(default_factory=list)


class ItemPage(BaseModel):
    """One page of the queue."""

    items: list[ItemSummary]
    total: int
    limit: int
    offset: int


class ClaimRequest(BaseModel):
    """Claim the next item (optionally of one issue), or the item `review_id`, as the
    logged-in analyst."""

    model_config = ConfigDict(extra="forbid")

    issue: IssueName | None = Field(default=None, description="Only items flagged for this issue.")
    review_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Claim this item instead of the next."
    )


class Claim(BaseModel):
    """A lease on one item: present `lease` to label, skip or release it."""

    item: ItemDetail
    lease: str
    lease_expires_at: datetime


class LeaseRequest(BaseModel):
    """Proof of holding an item's lease (an admin may leave it out to act on anyone's claim)."""

    model_config = ConfigDict(extra="forbid")

    lease: Lease | None = Field(default=None, description="The lease from the claim.")


class LabelRequest(LeaseRequest):
    """An analyst's decision on a claimed item.

    confirm: the flagged issues are right (for a sampled item: it has none of its issues);
    reject: the flagged issues are wrong; relabel: it has `issue` instead (one of the model's).
    """

    decision: Decision
    issue: IssueName | None = Field(
        default=None, description="For relabel: the issue it has; else narrows to one issue."
    )
    note: Note | None = None


class LoginRequest(BaseModel):
    """An analyst's name and password (`surfacer review add-analyst`)."""

    model_config = ConfigDict(extra="forbid")

    name: AnalystName
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class SessionOut(BaseModel):
    """A login: send `token` as `Authorization: Bearer <token>` until `expires_at`."""

    token: str
    analyst: str
    admin: bool
    expires_at: datetime


class LabelResult(BaseModel):
    """The labels stored for one decision."""

    review_id: int
    status: Status
    labels: list[LabelOut]


class HistoryEntry(BaseModel):
    """One audit event of an item."""

    id: int
    review_id: int
    event: str
    actor: str | None
    at: datetime
    detail: dict[str, Any]


class IssueQuality(BaseModel):
    """Live quality of one issue's model, estimated from analyst labels.

    Precision is measured on labeled flagged items; recall weighs labeled random-sample items
    by the inverse of their sampling probability (Horvitz-Thompson) to estimate the positives
    the model missed. Intervals are 95% Wilson bounds (recall: from both proportions' bounds).
    """

    issue: str
    flagged: int
    flagged_labeled: int
    flagged_positive: int
    precision: float | None
    precision_ci: tuple[float, float] | None
    sampled: int
    sampled_labeled: int
    sampled_positive: int
    est_positives_flagged: float | None
    est_positives_missed: float | None
    recall: float | None
    recall_ci: tuple[float, float] | None


class QualityReport(BaseModel):
    """Live model quality per issue."""

    issues: list[IssueQuality]
    model_version: str | None = None


class Stats(BaseModel):
    """Queue size by status and stratum, and labels stored."""

    by_status: dict[str, int]
    by_stratum: dict[str, int]
    labels: int
    revision: str | None = None
