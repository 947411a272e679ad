"""`ReviewStore`: the review queue on SQLAlchemy 2 (SQLite by default, PostgreSQL by URL).

One class, assembled from a part per concern: the database (`db`), ingest of scored items
(`ingest`), the queue and its leases (`queue`), reporting (`reporting`), analyst accounts
(`accounts`) and incidents (`incidents`).
"""

from __future__ import annotations

from typing import Any

from serving.review.accounts import AccountsMixin, Analyst, AnalystSession
from serving.review.db import StoreBase, alembic_config
from serving.review.incidents import (
    IncidentsMixin,
    InvalidTransition,
    NotIncidentOwner,
    UpsertSummary,
)
from serving.review.ingest import IngestMixin, StoreSink, store_sink
from serving.review.queue import LeaseError, NotClaimable, NotLeaseHolder, QueueMixin
from serving.review.reporting import LABEL_COLUMNS, ReportingMixin

__all__ = [
    "LABEL_COLUMNS",
    "Analyst",
    "AnalystSession",
    "InvalidTransition",
    "LeaseError",
    "NotClaimable",
    "NotIncidentOwner",
    "NotLeaseHolder",
    "ReviewStore",
    "StoreSink",
    "UpsertSummary",
    "alembic_config",
    "store_sink",
]


class ReviewStore(
    IngestMixin, QueueMixin, ReportingMixin, AccountsMixin, IncidentsMixin, StoreBase
):
    """The review queue (flagged and sampled items, leases, labels, history, analysts) and
    the incidents discovery found."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: int = 600,
        random_share: float = 0.1,
        incident_cooldown_hours: float = 168.0,
        echo: bool = False,
    ) -> None:
        if lease_seconds < 1:
            raise ValueError(f"lease_seconds must be >= 1, got {lease_seconds}")
        if not 0.0 <= random_share <= 1.0:
            raise ValueError(f"random_share must be within [0, 1], got {random_share}")
        super().__init__(url, echo=echo)
        self.lease_seconds = lease_seconds
        self.random_share = random_share
        if incident_cooldown_hours < 0:
            raise ValueError(f"incident_cooldown_hours must be >= 0, got {incident_cooldown_hours}")
        self.incident_cooldown_s = incident_cooldown_hours * 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> ReviewStore:
        """The store at `settings.review_db_url` with the settings' lease and sample share."""
        return cls(
            settings.review_db_url,
            lease_seconds=settings.lease_seconds,
            random_share=settings.review_random_share,
            incident_cooldown_hours=settings.incident_cooldown_hours,
        )
