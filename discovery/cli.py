"""`surfacer` commands owned by the discovery package (thin wrappers over importable functions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from common.console import show, table
from discovery import DEFAULT_SEVERITY_ALPHA
from features.cli import SchedulerOpt

# The scan-size severity floor (DiscoveryConfig.severity_alpha), for discover and watch.
SeverityAlphaOpt = Annotated[
    float,
    typer.Option(
        "--severity-alpha",
        min=1e-6,
        max=0.5,
        help="Family-wise level of the severity floor an incident must clear, set by the "
        "number of segments scanned for its issue (Bonferroni; docs/architecture.md).",
    ),
]
FixedFloorOpt = Annotated[
    bool,
    typer.Option(
        "--fixed-floor",
        help="Hold every incident to the fixed -log10 p >= 6 instead of the scan-size floor "
        "(the floor before 2026-12; fewer small incidents found in small data).",
    ),
]

discover_app = typer.Typer(
    help=(
        "Find issue-rate incidents by segment: anomaly detection, root-cause drill-down, "
        "clusters of flagged items; `effect` measures whether a fix worked."
    ),
    no_args_is_help=False,
    invoke_without_command=True,
)


def _check_inputs(data: Path | None, scores: Path | None) -> None:
    # before the heavy imports: a wrong path fails at once (data None: a live archive,
    # which may not exist until the online path first writes it)
    if data is not None and not data.exists():
        raise FileNotFoundError(f"dataset folder {str(data)!r} does not exist")
    if scores is not None and not scores.is_file():
        raise FileNotFoundError(f"scores file {str(scores)!r} does not exist")


def _load(data: Path, scores: Path | None, engine: str = "pandas", scheduler: str | None = None):
    import pandas as pd

    from features.io import load_dataset

    if engine == "dask":
        from discovery.pipeline import EVENT_KINDS_USED
        from features.dataset_dask import load_dataset_dask

        tables = load_dataset_dask(data, event_kinds=EVENT_KINDS_USED, scheduler=scheduler)
    else:
        tables = load_dataset(data)
    frame = None
    if scores is not None:
        frame = pd.read_parquet(scores)
    return tables, frame


@discover_app.callback()
def discover_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder (raw tables, Parquet or CSV).")
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores", help="Parquet from `surfacer score`; without it raw proxies are used."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder for incidents.json and report.html.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Upsert the incidents into this review database (URL); `settings` for "
            "the configured one (SURFACER_DATABASE_URL or data_dir/review.db).",
        ),
    ] = None,
    model_version: Annotated[
        str,
        typer.Option(
            "--model-version", help="Model version of the scores (for queued evidence items)."
        ),
    ] = "batch",
    pairs: Annotated[
        bool,
        typer.Option(
            "--pairs/--no-pairs", help="Also scan dimension pairs (region × format, ...)."
        ),
    ] = True,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--quiet",
            help="Report progress on stderr (a bar on a terminal, lines in a log).",
        ),
    ] = True,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="pandas, or dask: segment series aggregated on a Dask cluster."
        ),
    ] = "pandas",
    scheduler: SchedulerOpt = None,
    severity_alpha: SeverityAlphaOpt = DEFAULT_SEVERITY_ALPHA,
    fixed_floor: FixedFloorOpt = False,
) -> None:
    """Detect incidents in DATA and write incidents.json and report.html into OUT."""
    if ctx.invoked_subcommand is not None:
        return
    if data is None or (out is None and store is None):
        raise ValueError(
            "surfacer discover needs --data DIR and --out DIR and/or --store URL "
            "(or a subcommand, e.g. effect)"
        )
    _check_inputs(data, scores)
    if engine not in ("pandas", "dask"):
        raise ValueError(f"engine must be pandas or dask, got {engine!r}")
    opened = open_store(store) if store is not None else None  # a bad URL fails before the run
    from contextlib import nullcontext

    from common.cluster import dask_client
    from discovery.pipeline import DiscoveryConfig, discover

    # one cluster for loading and for the series (the nested steps reuse its client)
    cluster = dask_client(scheduler, announce=progress) if engine == "dask" else nullcontext()
    with cluster:
        tables, frame = _load(data, scores, engine, scheduler)
        result = discover(
            tables,
            frame,
            config=DiscoveryConfig(
                pairs=pairs, severity_alpha=None if fixed_floor else severity_alpha
            ),
            progress=progress,
            engine=engine,
            scheduler=scheduler,
        )
    for line in result.skipped_lines():
        typer.echo(line)
    if result.incidents:
        show(incidents_table(result.incidents))
    said = f"{len(result.incidents)} incident(s)"
    if out is not None:
        from discovery.report import write_discovery

        path = write_discovery(result, out)
        said += f"; wrote {path / 'incidents.json'} and {path / 'report.html'}"
    typer.echo(said)
    if opened is not None:
        try:
            typer.echo(record(opened, result, tables, frame, model_version=model_version))
        finally:
            opened.close()


def open_store(url: str) -> Any:
    """The review database at `url` (`settings`: the configured one), migrated.

    The one place discovery reaches into `serving`: the incident store lives in the review
    database, and only this command layer opens it (lazily, when asked to)."""
    from common.settings import get_settings
    from serving.review.db import UNAVAILABLE_ERRORS
    from serving.review.store import ReviewStore

    settings = get_settings()
    if url == "settings":
        url = settings.review_db_url
    try:
        store = ReviewStore(
            url,
            lease_seconds=settings.lease_seconds,
            random_share=settings.review_random_share,
            incident_cooldown_hours=settings.incident_cooldown_hours,
        )
    except Exception as exc:  # SQLAlchemy's URL and driver errors
        raise ValueError(f"--store {url!r} is not a usable database URL: {exc}") from None
    try:
        store.migrate()
    except UNAVAILABLE_ERRORS as exc:
        store.close()
        raise LookupError(
            f"the review database {store.describe()} cannot be used: {str(exc).splitlines()[0]}"
        ) from None
    return store


def record(store: Any, result: Any, tables: Any, scores: Any, *, model_version: str) -> str:
    """Upsert a run's incidents into `store` and measure due fix effects; a one-line summary."""
    from common.settings import get_settings
    from discovery.record import record_run

    settings = get_settings()
    summary, effects = record_run(
        store,
        result,
        tables,
        scores,
        model_version=model_version,
        window_days=settings.effect_window_days,
        min_days=settings.effect_min_days,
    )
    line = f"incident store {store.describe()}: {summary.describe()}"
    for incident_id, effect in effects:
        line += f"\n  incident {incident_id}: {effect.get('verdict', effect.get('status'))}"
    return line


def incidents_table(incidents: Sequence[Any]) -> Any:
    """Detected incidents as a table: issue, segment, start, detection time, severity."""
    return table(
        ["issue", "segment", "start", "detected", "severity"],
        [
            [
                inc.issue,
                inc.key,
                f"{inc.start:%Y-%m-%d %H:%M}",
                f"{inc.detected_at:%Y-%m-%d %H:%M}",
                f"{inc.severity:.1f}",
            ]
            for inc in incidents
        ],
        numeric=["severity"],
    )


@discover_app.command("effect")
def effect_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (raw tables).")],
    issue: Annotated[str, typer.Option("--issue", help="Issue type, e.g. low_quality.")],
    segment: Annotated[
        str, typer.Option("--segment", help="Treated segment, e.g. region=BR,format=live.")
    ],
    at: Annotated[str, typer.Option("--at", help="Change time (ISO 8601, UTC if no zone).")],
    control: Annotated[
        str | None,
        typer.Option(
            "--control", help="Control segment (default: everything outside the treated one)."
        ),
    ] = None,
    scores: Annotated[
        Path | None, typer.Option("--scores", help="Parquet from `surfacer score`.")
    ] = None,
    window_days: Annotated[
        float, typer.Option("--window-days", help="Days before and after the change.")
    ] = 7.0,
) -> None:
    """Difference-in-differences of the issue rate in a segment around a change, with a day-clustered 95% interval."""
    _check_inputs(data, scores)
    import orjson
    import pandas as pd

    from discovery.effect import effect_of_fix
    from discovery.series import parse_segment

    try:
        when = pd.Timestamp(at)
    except ValueError:
        raise ValueError(
            f"--at {at!r} is not a timestamp (expected ISO 8601, e.g. 2026-10-20T00:00Z)"
        ) from None
    tables, frame = _load(data, scores)
    result = effect_of_fix(
        tables,
        issue,
        parse_segment(segment),
        when,
        control=parse_segment(control) if control else None,
        scores=frame,
        window_days=window_days,
    )
    typer.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())


@discover_app.command("health")
def health_command(
    reference: Annotated[
        Path, typer.Option("--reference", help="Dataset the champion was trained on (raw tables).")
    ],
    data: Annotated[Path, typer.Option("--data", help="Dataset the champion scores now.")],
    window: Annotated[
        str | None,
        typer.Option("--window", help="Compare only the last part of --data (e.g. 7d)."),
    ] = None,
    reference_scores: Annotated[
        Path | None,
        typer.Option("--reference-scores", help="Champion scores of --reference (Parquet)."),
    ] = None,
    scores: Annotated[
        Path | None, typer.Option("--scores", help="Champion scores of --data (Parquet).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="Upsert model_health incidents into this review database (URL)."
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", min=0.0, max=1.0, help="Test level (Bonferroni-adjusted).")
    ] = 0.01,
    psi_min: Annotated[
        float, typer.Option("--psi-min", min=0.0, help="Smallest PSI that counts as a drift.")
    ] = 0.2,
) -> None:
    """Compare the champion's inputs (and scores) now with its training reference: per-feature drift."""
    _check_inputs(reference, reference_scores)
    _check_inputs(data, scores)
    opened = open_store(store) if store is not None else None
    try:
        typer.echo(
            health_once(reference, data, window, reference_scores, scores, opened, alpha, psi_min)
        )
    finally:
        if opened is not None:
            opened.close()


def health_once(
    reference: Path,
    data: Path,
    window: str | None,
    reference_scores: Path | None,
    scores: Path | None,
    store: Any,
    alpha: float = 0.01,
    psi_min: float = 0.2,
) -> str:
    """One model-health check: drift table on stdout, incidents into `store` (if any)."""
    import pandas as pd

    from discovery.health import health_records
    from features.snapshot import build_snapshots

    ref_tables, ref_scores = _load(reference, reference_scores)
    cur_tables, cur_scores = _load(data, scores)
    cur = build_snapshots(cur_tables)
    if window is not None:
        as_of = pd.to_datetime(cur["as_of"], utc=True)
        cur = cur[as_of >= as_of.max() - pd.Timedelta(seconds=parse_duration(window))]
        if cur_scores is not None:
            s_as_of = pd.to_datetime(cur_scores["as_of"], utc=True)
            cur_scores = cur_scores[
                s_as_of >= as_of.max() - pd.Timedelta(seconds=parse_duration(window))
            ]
    if cur.empty:
        raise ValueError(f"no snapshots of {str(data)!r} in the last {window}")
    issues = [
        c
        for c in (ref_scores.columns if ref_scores is not None else [])
        if c not in ("item_id", "as_of", "anchor", "flagged", "horizon_h", "model_version")
    ]
    records, drifts = health_records(
        build_snapshots(ref_tables),
        cur,
        reference_scores=ref_scores,
        current_scores=cur_scores,
        issues=issues,
        alpha=alpha,
        psi_min=psi_min,
    )
    show(
        table(
            ["feature", "kind", "PSI", "p (adj.)", "drift"],
            [
                [d.name, d.kind, d.psi, f"{d.p_value:.1e}", "DRIFT" if d.drifted else ""]
                for d in sorted(drifts, key=lambda d: -d.psi)
            ],
            numeric=["PSI"],
        )
    )
    drifting = [d.name for d in drifts if d.drifted]
    line = f"model health: {len(drifting)} of {len(drifts)} drifting" + (
        f" ({', '.join(drifting)})" if drifting else ""
    )
    if store is not None:
        summary = store.upsert_incidents(records, kind="model_health")
        line += f"; incident store {store.describe()}: {summary.describe()}"
    return line


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`15m`, `2h`, `14d`, `30s` or plain seconds as seconds."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _DURATION else "s"
    number = value[:-1] if value[-1:] in _DURATION else value
    try:
        seconds = float(number) * _DURATION[unit]
    except ValueError:
        raise ValueError(
            f"duration {text!r} is not a number with s, m, h or d (e.g. 15m)"
        ) from None
    if not seconds >= 0:
        raise ValueError(f"duration {text!r} must not be negative")
    return seconds


def watch_command(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset folder, re-read every run (it may grow)."),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Watch the live archive the online path writes (SURFACER_ARCHIVE_DIR, or "
            "--archive) instead of --data: its rows and, without --scores, its re-scorer's "
            "scores.",
        ),
    ] = False,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive", help="With --live: the archive folder (default SURFACER_ARCHIVE_DIR)."
        ),
    ] = None,
    scores: Annotated[
        Path | None, typer.Option("--scores", help="Parquet from `surfacer score`.")
    ] = None,
    every: Annotated[
        str, typer.Option("--every", help="Time between runs (15m, 1h, ...).")
    ] = "15m",
    window: Annotated[
        str, typer.Option("--window", help="Sliding window of data each run looks at.")
    ] = "14d",
    store: Annotated[
        str,
        typer.Option("--store", help="Review database URL, or `settings` for the configured one."),
    ] = "settings",
    max_runs: Annotated[
        int, typer.Option("--max-runs", min=0, help="Stop after this many runs (0: run forever).")
    ] = 0,
    model_version: Annotated[
        str, typer.Option("--model-version", help="Model version of the scores.")
    ] = "batch",
    pairs: Annotated[
        bool, typer.Option("--pairs/--no-pairs", help="Also scan dimension pairs.")
    ] = True,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="Champion's training dataset: each run also checks model health on the window.",
        ),
    ] = None,
    reference_scores: Annotated[
        Path | None,
        typer.Option("--reference-scores", help="Champion scores of --reference (Parquet)."),
    ] = None,
    severity_alpha: SeverityAlphaOpt = DEFAULT_SEVERITY_ALPHA,
    fixed_floor: FixedFloorOpt = False,
) -> None:
    """Run discovery over a sliding window (of a dataset folder or the live archive) every so often and upsert incidents into the store."""
    import time

    period, span = parse_duration(every), parse_duration(window)
    if span <= 0:
        raise ValueError("--window must be longer than zero")
    data = watch_source(data, live, archive)
    _check_inputs(None if live else data, scores)
    from discovery.pipeline import DiscoveryConfig

    config = DiscoveryConfig(pairs=pairs, severity_alpha=None if fixed_floor else severity_alpha)
    if reference is not None:
        _check_inputs(reference, reference_scores)
    opened = open_store(store)
    try:
        run = 0
        while True:
            run += 1
            started = time.monotonic()
            typer.echo(
                watch_once(opened, data, scores, span, model_version, config, run, live=live)
            )
            if reference is not None:
                typer.echo(health_once(reference, data, window, reference_scores, scores, opened))
            if max_runs and run >= max_runs:
                break
            time.sleep(max(0.0, period - (time.monotonic() - started)))
    finally:
        opened.close()


def watch_source(data: Path | None, live: bool, archive: Path | None) -> Path:
    """The folder a watch reads: --data, or with --live the archive (--archive, else the
    SURFACER_ARCHIVE_DIR setting)."""
    if live:
        if data is not None:
            raise ValueError("give --data or --live, not both")
        if archive is None:
            from common.settings import get_settings

            archive = get_settings().archive_dir
        if archive is None:
            raise ValueError(
                "--live needs the live archive: set SURFACER_ARCHIVE_DIR (where the online path "
                "writes it) or give --archive DIR"
            )
        return Path(archive)
    if archive is not None:
        raise ValueError("--archive goes with --live")
    if data is None:
        raise ValueError("give --data DIR (a dataset folder) or --live (the live archive)")
    return data


def watch_once(
    store: Any,
    data: Path,
    scores: Path | None,
    span_s: float,
    model_version: str,
    config: Any,
    run: int,
    *,
    live: bool = False,
) -> str:
    """One watch run: the last `span_s` seconds of data, discovery, upsert, effects.

    `live`: `data` is the live archive (features.online.archive), which may not hold an
    items table yet; without `scores`, its re-scorer's scores are used when it has any."""
    import pandas as pd

    from discovery.pipeline import discover
    from discovery.record import data_end, window_tables

    if live:
        from features.io import dataset_files
        from features.online.archive import from_first_horizon, read_scores
        from features.schema import DEFAULT_HORIZONS_H

        if not data.is_dir() or "items" not in dataset_files(data):
            return f"run {run}: the live archive {str(data)!r} holds no items yet"
    tables, frame = _load(data, scores)
    if live and scores is None:
        frame = read_scores(data)
        if frame is not None:  # count items as `surfacer score` does: at 1 h, not 1 min
            frame = from_first_horizon(frame, min(DEFAULT_HORIZONS_H))
    end = data_end(tables)
    if end is None:
        return f"run {run}: the dataset has no timed rows yet"
    start = end - pd.Timedelta(seconds=span_s)
    cut = window_tables(tables, start, end)
    if frame is not None:
        as_of = pd.to_datetime(frame["as_of"], utc=True)
        frame = frame[(as_of >= start) & (as_of <= end)].reset_index(drop=True)
    try:
        result = discover(cut, frame, config=config)
    except ValueError as exc:
        return (
            f"run {run} [{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}]: nothing to detect ({exc})"
        )
    line = record(store, result, cut, frame, model_version=model_version)
    return (
        f"run {run} [{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}]: "
        f"{len(result.incidents)} detected; {line}"
    )


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `surfacer` app."""
    app.add_typer(discover_app, name="discover")
    app.command("watch")(watch_command)
