"""`surfacer` commands owned by the discovery package (thin wrappers over importable functions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from common.console import show, table

discover_app = typer.Typer(
    help=(
        "Find issue-rate incidents by segment: anomaly detection, root-cause drill-down, "
        "clusters of flagged items; `effect` measures whether a fix worked."
    ),
    no_args_is_help=False,
    invoke_without_command=True,
)


def _check_inputs(data: Path, scores: Path | None) -> None:
    # before the heavy imports: a wrong path fails at once
    if not data.exists():
        raise FileNotFoundError(f"dataset folder {str(data)!r} does not exist")
    if scores is not None and not scores.is_file():
        raise FileNotFoundError(f"scores file {str(scores)!r} does not exist")


def _load(data: Path, scores: Path | None):
    import pandas as pd

    from features.io import load_dataset

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
) -> None:
    """Detect incidents in DATA and write incidents.json and report.html into OUT."""
    if ctx.invoked_subcommand is not None:
        return
    if data is None or out is None:
        raise ValueError(
            "surfacer discover needs --data DIR and --out DIR (or a subcommand, e.g. effect)"
        )
    _check_inputs(data, scores)
    from discovery.pipeline import DiscoveryConfig, discover
    from discovery.report import write_discovery

    tables, frame = _load(data, scores)
    result = discover(tables, frame, config=DiscoveryConfig(pairs=pairs), progress=progress)
    path = write_discovery(result, out)
    for line in result.skipped_lines():
        typer.echo(line)
    if result.incidents:
        show(incidents_table(result.incidents))
    typer.echo(
        f"{len(result.incidents)} incident(s); wrote {path / 'incidents.json'} and {path / 'report.html'}"
    )


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
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 1000,
    random_state: Annotated[int, typer.Option("--random-state", help="Seed of the bootstrap.")] = 0,
) -> None:
    """Difference-in-differences of the issue rate in a segment around a change, with a bootstrap CI."""
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
        n_boot=n_boot,
        random_state=random_state,
    )
    typer.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `surfacer` app."""
    app.add_typer(discover_app, name="discover")
