"""`surfacer` commands owned by the serving package (thin wrappers over importable functions).

Nothing heavy is imported at module level: `surfacer serve --help` loads typer and the
settings class only; uvicorn, FastAPI and the review store load when the server starts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from common.settings import Settings, get_settings
from serving.auth import SCOPES, generate_key
from serving.procs import pid_alive

DEV_ANALYST = "dev"


def default_workers() -> int:
    """One uvicorn worker per core this process may use."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(cores) if cores else os.cpu_count() or 1)


def ensure_api_keys(settings: Settings, *, dev_key: bool) -> tuple[Settings, str | None]:
    """Settings with at least one API key; with `dev_key`, a generated all-scopes key is added.

    Raises ValueError when no key is configured and `dev_key` is off: the service has no
    anonymous access, so it would answer 401 to everyone.
    """
    if dev_key:
        key = generate_key()
        keys = {**settings.api_keys, key: list(SCOPES)}
        return settings.model_copy(update={"api_keys": keys}), key
    if not settings.api_keys:
        raise ValueError(
            "no API keys configured: set SURFACER_API_KEYS (JSON: key -> scopes) or pass "
            "--dev-key to generate one"
        )
    return settings, None


def ensure_dev_analyst(settings: Settings) -> str | None:
    """A fresh password for the `dev` admin analyst (created or reset); None when the review
    store cannot be reached now (the server still starts)."""
    from serving.review.db import UNAVAILABLE_ERRORS
    from serving.review.store import ReviewStore

    store = ReviewStore.from_settings(settings)
    try:
        store.migrate()
        password = secrets.token_urlsafe(12)
        store.add_analyst(DEV_ANALYST, password, admin=True, replace=True)
        return password
    except UNAVAILABLE_ERRORS as exc:
        typer.echo(f"warning: no dev analyst: the review store is unreachable ({exc})", err=True)
        return None
    finally:
        store.close()


def prepare_mlflow(settings: Settings) -> None:
    """Create (or upgrade) the MLflow store once here, before the workers start.

    Every worker opens the store at start-up, and MLflow creates a new database without a
    lock: two workers doing it at once collide (`duplicate column name: step`) and one
    starts without a model. A SQLite store that cannot be created is a setup error: raises
    RuntimeError naming it. A database server that does not answer is an outage the workers
    ride out (they serve the cached model and retry), so it only gets a warning here.
    """
    from common.mlflow_store import StoreUnreachable, prepare_mlflow_store, safe_uri

    t0 = time.perf_counter()
    try:
        created = prepare_mlflow_store(settings)
    except StoreUnreachable as exc:
        typer.echo(f"warning: {exc}; the workers retry it and serve their cached model", err=True)
        return
    for uri in created:
        typer.echo(
            f"MLflow store {safe_uri(uri)} created or upgraded in {time.perf_counter() - t0:.1f}s"
        )


def make_metrics_dir(parent: Path) -> Path:
    """A fresh, private folder for one run's multiprocess metric files, under `parent`.

    Named `<pid>-<random>`; folders left by runs whose process is gone (killed before it
    could remove its own) are removed first. Other live runs' folders are left alone.
    """
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.iterdir():
        pid = old.name.split("-", 1)[0]
        if old.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent)).resolve()


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    dev_key: bool = False,
    flags_jsonl: Path | None = None,
    sample_rate: float | None = None,
    log_level: str = "info",
) -> None:
    """Run the scoring service under uvicorn, with its flag writer, until interrupted.

    `workers` None: one per core. With more than one worker, metrics use prometheus_client's
    multiprocess mode: a fresh folder under data_dir/prometheus goes into
    PROMETHEUS_MULTIPROC_DIR before the workers start (they inherit it; /metrics merges
    them) and is removed when the server stops. With one worker the variable is removed.
    """
    from serving.online import ENV_WORKERS
    from serving.server import ENV_FLAGS_JSONL, ENV_PROMETHEUS_DIR, ENV_SAMPLE_RATE, run_server

    in_process = str(settings.online_store).strip().lower() == "memory"
    if workers is None:
        # The in-process online store is one worker's: with more, ingest and score by id
        # would each see the rows their worker received (serving.online.split_store_problem).
        workers = 1 if in_process else default_workers()
        if in_process and default_workers() > 1:
            typer.echo(
                "note: one worker, as the online store is in-process (SURFACER_ONLINE_STORE="
                "memory); with a redis:// store `surfacer serve` runs one per core"
            )
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if in_process and workers > 1:
        typer.echo(
            f"warning: {workers} workers with the in-process online store: ingest and score "
            "by id answer 503 (each worker would hold only its own rows); set "
            "SURFACER_ONLINE_STORE=redis://HOST:PORT/DB or use --workers 1",
            err=True,
        )
    if sample_rate is not None and not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"--sample-rate must be within [0, 1], got {sample_rate}")
    settings, key = ensure_api_keys(settings, dev_key=dev_key)
    prepare_mlflow(settings)
    if key is not None:
        typer.echo(f"dev API key (scopes {', '.join(SCOPES)}): {key}")
        password = ensure_dev_analyst(settings)
        if password is not None:
            typer.echo(
                f"console: http://{host}:{port}/console  (dev analyst login: {DEV_ANALYST} / "
                f"{password})"
            )
    # A serving process should fall back to its cache quickly when MLflow is down, not spend
    # minutes in MLflow's default HTTP retries (callers can still set these).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Workers are separate processes: pass everything through the environment they inherit.
    os.environ["SURFACER_API_KEYS"] = json.dumps(settings.api_keys)
    os.environ[ENV_WORKERS] = str(workers)
    if flags_jsonl is not None:
        os.environ[ENV_FLAGS_JSONL] = str(flags_jsonl)
    if sample_rate is not None:
        os.environ[ENV_SAMPLE_RATE] = str(sample_rate)
    metrics_dir = None
    if workers > 1:
        metrics_dir = make_metrics_dir(Path(settings.data_dir).resolve() / "prometheus")
        os.environ[ENV_PROMETHEUS_DIR] = str(metrics_dir)
    else:
        os.environ.pop(ENV_PROMETHEUS_DIR, None)
    try:
        run_server(
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            spool_dir=settings.spool_path,
            flags_jsonl=flags_jsonl,
            sample_rate=sample_rate,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `surfacer` app."""
    from serving.review.cli import register as register_review

    register_review(app)

    @app.command("serve")
    def serve_cmd(
        host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = (
            "127.0.0.1"
        ),
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        workers: Annotated[
            int | None,
            typer.Option(
                help="uvicorn worker processes (default: one per core with a redis:// online "
                "store, else one; /metrics sums them)."
            ),
        ] = None,
        dev_key: Annotated[
            bool,
            typer.Option(
                "--dev-key",
                help="Generate and print an API key with all scopes, and a login for the "
                f"'{DEV_ANALYST}' admin analyst (development).",
            ),
        ] = False,
        flags_jsonl: Annotated[
            Path | None,
            typer.Option(
                help="Store flagged items in this JSON-lines file instead of the review store."
            ),
        ] = None,
        sample_rate: Annotated[
            float | None,
            typer.Option(
                help="Share of unflagged items also sent to review, marked sampled "
                "(default: settings.review_random_share with the review store, else 0)."
            ),
        ] = None,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Serve the champion model over HTTP (FastAPI + uvicorn); the console is at /console."""
        try:
            serve(
                get_settings(),
                host=host,
                port=port,
                workers=workers,
                dev_key=dev_key,
                flags_jsonl=flags_jsonl,
                sample_rate=sample_rate,
                log_level=log_level,
            )
        except RuntimeError as exc:  # the server failed to start; the log above says why
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise SystemExit(1) from None
