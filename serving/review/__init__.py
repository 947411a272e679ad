"""The analyst review queue: store (SQLAlchemy + Alembic), queue API, console, label export."""

from serving.review.store import LeaseError, NotClaimable, ReviewStore

__all__ = ["LeaseError", "NotClaimable", "ReviewStore"]
