"""`ReviewStore`: the review queue on SQLAlchemy 2 (SQLite by default, PostgreSQL by URL).

One class, assembled from a part per concern: the database (`db`), ingest of scored items
(`ingest`), the queue and its leases (`queue`), reporting (`reporting`) and analyst accounts
(`accounts`).
"""

from __future__ import annotations

from typing import Any

from serving.review.accounts import AccountsMixin, Analyst, AnalystSession
from serving.review.db import StoreBase, alembic_config
from serving.review.ingest import IngestMixin, StoreSink, store_sink
from serving.review.queue import LeaseError, NotClaimable, NotLeaseHolder, QueueMixin
from serving.review.reporting import LABEL_COLUMNS, ReportingMixin

__all__ = [
    "LABEL_COLUMNS",
    "Analyst",
    "AnalystSession",
    "LeaseError",
    "NotClaimable",
    "NotLeaseHolder",
    "ReviewStore",
    "StoreSink",
    "alembic_config",
    "store_sink",
]


class ReviewStore(IngestMixin, QueueMixin, ReportingMixin, AccountsMixin, StoreBase):
    """The review queue: flagged and sampled items, leases, labels, history and analysts."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: int = 600,
        random_share: float = 0.1,
        echo: bool = False,
    ) -> None:
        if lease_seconds < 1:
            raise ValueError(f"lease_seconds must be >= 1, got {lease_seconds}")
        if not 0.0 <= random_share <= 1.0:
            raise ValueError(f"random_share must be within [0, 1], got {random_share}")
        super().__init__(url, echo=echo)
        self.lease_seconds = lease_seconds
        self.random_share = random_share

    @classmethod
    def from_settings(cls, settings: Any) -> ReviewStore:
        """The store at `settings.review_db_url` with the settings' lease and sample share."""
        return cls(
            settings.review_db_url,
            lease_seconds=settings.lease_seconds,
            random_share=settings.review_random_share,
        )
