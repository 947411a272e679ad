"""`surfacer` commands owned by the serving package (thin wrappers over importable functions)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from common.settings import Settings, get_settings
from serving.auth import SCOPES, generate_key
from serving.procs import pid_alive

# How `surfacer serve` hands its options to uvicorn worker processes (which build the app
# from the environment): settings ride on SURFACER_*, these two are serving-only.
ENV_FLAGS_JSONL = "SURFACER_SERVE_FLAGS_JSONL"
ENV_SAMPLE_RATE = "SURFACER_SERVE_SAMPLE_RATE"
# prometheus_client's multiprocess mode (serving.metrics.MULTIPROC_DIR_ENV; not imported here
# so that this process does not import prometheus_client before the variable is set).
ENV_PROMETHEUS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Two cores: two workers double throughput, and the metrics aggregate across workers.
DEFAULT_WORKERS = 2


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


def app_from_env() -> Any:
    """App factory for uvicorn workers: settings and serve options from the environment."""
    from serving.app import create_app
    from serving.flag_writer import JsonlFlagSink, ProcessSink

    settings = get_settings()
    flags_path = os.environ.get(ENV_FLAGS_JSONL)
    # Like the review store's sink, the file is written by a child process: a batch's
    # flagged items stay bytes in this one (serving.flag_writer.ScoredBatch).
    sink = ProcessSink(functools.partial(JsonlFlagSink, flags_path)) if flags_path else None
    rate = os.environ.get(ENV_SAMPLE_RATE)
    return create_app(
        settings,
        flag_sink=sink,
        sample_rate=float(rate) if rate else None,
        multiprocess_metrics=bool(os.environ.get(ENV_PROMETHEUS_DIR)),
        flag_process=sink is None,  # the review store's ORM work in its own process
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
    workers: int = DEFAULT_WORKERS,
    dev_key: bool = False,
    flags_jsonl: Path | None = None,
    sample_rate: float | None = None,
    log_level: str = "info",
) -> None:
    """Run the scoring service under uvicorn until interrupted.

    With more than one worker, metrics use prometheus_client's multiprocess mode: a fresh
    folder under data_dir/prometheus goes into PROMETHEUS_MULTIPROC_DIR before uvicorn spawns
    the workers (they inherit it and write their values there; /metrics merges them) and is
    removed when the server stops. With one worker the variable is removed: the app keeps
    its in-process registry.
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if sample_rate is not None and not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"--sample-rate must be within [0, 1], got {sample_rate}")
    settings, key = ensure_api_keys(settings, dev_key=dev_key)
    if key is not None:
        typer.echo(f"dev API key (scopes {', '.join(SCOPES)}): {key}")
    # A serving process should fall back to its cache quickly when MLflow is down, not spend
    # minutes in MLflow's default HTTP retries (callers can still set these).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Workers are separate processes: pass everything through the environment they inherit.
    os.environ["SURFACER_API_KEYS"] = json.dumps(settings.api_keys)
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
        uvicorn.run(
            "serving.cli:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,  # request metrics cover it; a log line per request costs throughput
            loop="uvloop",
            http="httptools",
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
            int,
            typer.Option(
                help="uvicorn worker processes (default 2: two cores; /metrics sums all workers)."
            ),
        ] = DEFAULT_WORKERS,
        dev_key: Annotated[
            bool,
            typer.Option(
                "--dev-key", help="Generate and print an API key with all scopes (development)."
            ),
        ] = False,
        flags_jsonl: Annotated[
            Path | None,
            typer.Option(
                help="Append flagged items to this JSON-lines file instead of the default sink."
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
        """Serve the champion model over HTTP (FastAPI + uvicorn)."""
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
