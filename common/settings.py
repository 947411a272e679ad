"""Shared settings: one pydantic-settings class, env prefix ``SURFACER_``.

It lives in the bottom layer (`common`), which every package may import and which imports
nothing of ours. Nothing here touches the disk at import; paths are created by whoever
writes to them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where surfacer keeps its state and how it talks to MLflow, the review store and callers."""

    model_config = SettingsConfigDict(env_prefix="SURFACER_", env_file=None, extra="ignore")

    data_dir: Path = Field(
        default=Path(".surfacer"), description="Local state: MLflow store, artifacts, cache."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default a SQLite store under data_dir."
    )
    mlflow_registry_uri: str | None = None
    model_name: str = Field(default="surfacer", description="Registered model name.")
    experiment_name: str = "surfacer"
    database_url: str | None = Field(
        default=None, description="Review store URL; default SQLite under data_dir."
    )
    random_state: int = 0

    # serving
    api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="API key -> scopes (score, review, admin, ingest); JSON in SURFACER_API_KEYS.",
    )
    max_batch_size: int = Field(default=1000, ge=1, description="Items per /v1/score request.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    body_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="A request body not received whole within this many seconds of the "
        "request's start is answered 408 (0: no limit); a client that stalls mid-body "
        "would otherwise hold one of the worker's max_concurrency slots for good.",
    )
    reload_interval_s: float = Field(
        default=30.0, ge=0, description="How often to check the champion alias."
    )
    max_concurrency: int = Field(
        default=64,
        ge=0,
        description="Requests in flight per worker before more get 503 + Retry-After (0: none).",
    )
    max_queue_wait_s: float = Field(
        default=1.0,
        ge=0,
        description="A request that waited longer for its worker gets 503 + Retry-After (0: none).",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Where flags wait durably for the review store; default data_dir/spool.",
    )
    spool_max_bytes: int = Field(
        default=1024**3,
        ge=1024 * 1024,
        description="Spool size past which /v1/score refuses (503) rather than risk flags.",
    )
    spool_fsync_interval_s: float = Field(
        default=0.2,
        ge=0,
        description="fsync the spool this often (0: before every answer; a crash of a process "
        "never loses an answered flag either way, a power loss at most this long).",
    )

    # online path (live surfacing)
    online_store: str = Field(
        default="memory",
        description="Online feature store: 'memory' (in-process, one worker) or a "
        "redis://host:port/db URL (shared by workers and instances).",
    )
    online_prefix: str = Field(
        default="surfacer:", description="Prefix of every online-store key in Redis."
    )
    online_horizon_h: float = Field(
        default=24.0, gt=0, description="Last snapshot horizon: item state lives this long."
    )
    online_late_s: float = Field(
        default=600.0,
        ge=0,
        description="Grace after the last horizon before an item's state expires; rows of "
        "an item arriving before then land exactly, later ones are dropped as expired.",
    )
    online_batch_ttl_s: float = Field(
        default=86_400.0, gt=0, description="How long a batch id is remembered (idempotence)."
    )
    online_max_future_s: float = Field(
        default=300.0,
        ge=0,
        description="Clock skew bound: rows whose event time is further than this ahead of "
        "the service's wall clock are rejected (HTTP 422 naming table, column and rows; "
        "stream: dead-lettered), so that they cannot move the store clock and its windows.",
    )
    online_rescore_s: float = Field(
        default=5.0,
        ge=0,
        description="Touched items are re-scored at most this often (and at each horizon).",
    )
    online_rescore: bool = Field(
        default=True,
        description="Run background re-scoring of touched items in this process (each serve "
        "worker). Set false in the serving process when `surfacer ingest --rescore` (or another "
        "process) re-scores, so that GET score does not share its worker with batch scoring.",
    )
    online_consume: str | None = Field(
        default=None,
        description="Stream the service consumes itself (redis://...?stream=S&group=G or "
        "nats://...?stream=S&subject=X); default none (run `surfacer ingest --from URL`).",
    )

    archive_dir: Path | None = Field(
        default=None,
        description="Live archive: every row the online path newly applies, and the "
        "re-scorer's scores, appended here as a dataset folder of Parquet parts (read by "
        "`surfacer watch --live` and every --data command); default none (off: it grows "
        "without bound and the operator owns its retention).",
    )
    archive_flush_rows: int = Field(
        default=50_000, ge=1, description="Live archive: write a table's part at this many rows."
    )
    archive_flush_s: float = Field(
        default=5.0,
        gt=0,
        description="Live archive: write a table's part when its oldest buffered row is this "
        "old (rows taken over HTTP that a crash can lose from the archive: at most this long).",
    )

    # review queue
    review_random_share: float = Field(
        default=0.1, ge=0, le=1, description="Share of the queue that is a random sample."
    )
    lease_seconds: int = Field(
        default=600, ge=1, description="How long a claimed item stays claimed."
    )
    session_hours: float = Field(
        default=8.0, gt=0, le=24 * 30, description="How long an analyst's login lasts."
    )
    review_capacity_per_day: int = Field(
        default=200, ge=1, description="Items analysts can review per day and issue."
    )

    # discovery
    discovery_dir: Path | None = Field(
        default=None,
        description=(
            "Folder written by `surfacer discover` whose report the service shows; "
            "default data_dir/discovery"
        ),
    )

    # Dask (the `--engine dask` path of the heavy commands; see common.cluster)
    dask_scheduler: str | None = Field(
        default=None,
        description="Address of an existing Dask scheduler (tcp://host:8786); default: a "
        "LocalCluster sized to this machine.",
    )
    dask_workers: int | None = Field(
        default=None, ge=1, description="LocalCluster workers; default one per available core."
    )
    dask_memory_limit: str = Field(
        default="auto",
        description="Memory limit per LocalCluster worker ('4GB', '2GiB'...); 'auto': 80 % of "
        "the machine's memory shared by the workers. Workers spill to disk from 60 % of it.",
    )
    dask_spill_dir: Path | None = Field(
        default=None, description="Where LocalCluster workers spill; default data_dir/dask."
    )

    # incidents
    incident_cooldown_hours: float = Field(
        default=168.0,
        ge=0,
        description="After a false alarm, no new incident on the same issue x segment this long.",
    )
    effect_window_days: float = Field(
        default=7.0, gt=0, description="Days before and after a fix the effect measurement uses."
    )
    effect_min_days: float = Field(
        default=3.0,
        gt=0,
        description="Days of data after a fix before its effect is measured.",
    )

    # review thresholds (training.thresholds): a bounded volume at a precision worth reviewing
    flag_share_cap: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Largest share of an issue's rows a threshold may flag, whatever the capacity.",
    )
    precision_lift: float = Field(
        default=2.0,
        ge=1,
        description="A threshold's validation precision must reach this multiple of the base "
        "rate (or halfway from the base rate to 1 when lower); else the issue is disabled.",
    )
    min_precision: float = Field(
        default=0.0, ge=0, lt=1, description="An absolute precision floor on top of the lift."
    )

    # quality gate (training.gate): per issue, on the holdout
    train_max_rows: int = Field(
        default=400_000,
        ge=0,
        description="Training rows (snapshot rows, or a flat dataset's rows) past which "
        "`surfacer train` fits on a seeded sample of whole items, the positive share kept "
        "(0: no limit). Training's memory grows with its rows (about 10 KB a row on the "
        "default world); scoring and discovery still read every row.",
    )
    gate_bootstrap: int = Field(
        default=400, ge=50, description="Bootstrap resamples (of items) for the gate's intervals."
    )
    gate_confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Confidence level of the gate's intervals."
    )

    # promotion gate
    promotion_tolerance: float = Field(
        default=0.02, ge=0, description="Largest PR-AUC drop per issue the gate accepts."
    )
    primary_issue: str | None = Field(
        default=None, description="Issue whose PR-AUC is the primary metric; default the mean."
    )

    @cached_property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @cached_property
    def registry_uri(self) -> str:
        """The model registry: its own URI when set, else the tracking store's."""
        return self.mlflow_registry_uri or self.tracking_uri

    @cached_property
    def artifact_root(self) -> str:
        return (self.data_dir / "mlartifacts").resolve().as_uri()

    @cached_property
    def model_cache_dir(self) -> Path:
        return (self.data_dir / "model-cache").resolve()

    @cached_property
    def discovery_path(self) -> Path:
        """The discovery output folder the service reads (discovery_dir or data_dir/discovery)."""
        return (self.discovery_dir or self.data_dir / "discovery").resolve()

    @cached_property
    def spool_path(self) -> Path:
        """The flag spool folder (spool_dir or data_dir/spool)."""
        return (self.spool_dir or self.data_dir / "spool").resolve()

    @cached_property
    def review_db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'review.db').resolve()}"


def get_settings() -> Settings:
    """Settings read from the environment now (not cached: tests change the environment)."""
    return Settings()
