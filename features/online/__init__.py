"""The online feature store: live per-item state read as the exact snapshot columns.

`open_store(url)` gives the backend the setting names: ``memory`` (in-process, the embedded
default for one worker and tests) or ``redis://host:port/db`` (shared by workers and
service instances). Updates are planned once (`ops`) and read once (`snapshot`); see
docs/architecture.md ("Online path") for the key layout, the late-event bound and expiry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from features.online.errors import AsOfTooEarly, BatchRejected, StoreUnavailable

if TYPE_CHECKING:
    from features.online.ops import OnlineConfig
    from features.online.store import ApplyResult, MemoryStore, OnlineStore

# Loaded on first use: the service imports this package before pandas may be imported.
_LAZY = {
    "OnlineConfig": "features.online.ops",
    "ApplyResult": "features.online.store",
    "MemoryStore": "features.online.store",
    "OnlineStore": "features.online.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'features.online' has no attribute {name!r}")


__all__ = [
    "ApplyResult",
    "AsOfTooEarly",
    "BatchRejected",
    "MemoryStore",
    "OnlineConfig",
    "OnlineStore",
    "StoreUnavailable",
    "open_store",
    "store_from_settings",
]


def open_store(
    url: str = "memory", config: OnlineConfig | None = None, *, prefix: str = "surfacer:"
) -> OnlineStore:
    """The online store named by `url` (``memory`` or ``redis://...``)."""
    from features.online.store import MemoryStore

    if url == "memory":
        return MemoryStore(config)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from features.online.redis_store import RedisStore

        return RedisStore(url, config, prefix=prefix)
    raise ValueError(f"online store must be 'memory' or a redis:// URL, got {url!r}")


def store_from_settings(settings: object) -> OnlineStore:
    """The store the settings name (``SURFACER_ONLINE_*``)."""
    from features.online.ops import OnlineConfig

    config = OnlineConfig(
        horizon_h=settings.online_horizon_h,  # type: ignore[attr-defined]
        late_s=settings.online_late_s,  # type: ignore[attr-defined]
        batch_ttl_s=settings.online_batch_ttl_s,  # type: ignore[attr-defined]
        max_future_s=settings.online_max_future_s,  # type: ignore[attr-defined]
    )
    return open_store(
        settings.online_store,  # type: ignore[attr-defined]
        config,
        prefix=settings.online_prefix,  # type: ignore[attr-defined]
    )
