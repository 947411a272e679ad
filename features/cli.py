"""`surfacer` commands owned by the features package (thin wrappers over importable functions).

Commands are grouped in Typer sub-apps (`surfacer data ...`) so that each area of the package
adds its own group without touching the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from common.console import show, table

if TYPE_CHECKING:  # pandas and the loaders are imported when a command runs
    import pandas as pd

    from features.flat import FlatDataset
    from features.validate import Problem

data_app = typer.Typer(
    help="Check and summarize datasets: a folder of raw tables or a flat-dataset TOML spec.",
    no_args_is_help=True,
)

ProgressOpt = Annotated[
    bool,
    typer.Option(
        "--progress/--no-progress",
        help="Report progress on stderr (a bar on a terminal, lines in a log).",
    ),
]

PathArg = Annotated[
    Path,
    typer.Argument(
        help="A dataset folder (<table>.parquet|csv) or a flat-dataset spec (.toml).",
        show_default=False,
    ),
]


def _is_spec(path: Path) -> bool:
    return path.suffix == ".toml"


def _show_frame(df: pd.DataFrame, title: str | None = None) -> None:
    if not len(df):
        typer.echo(f"{title}: (none)" if title else "  (none)")
        return
    numeric = [str(c) for c in df.columns if df[c].dtype.kind in "iuf"]
    rows = df.astype(object).where(df.notna(), None).itertuples(index=False)
    show(table([str(c) for c in df.columns], rows, title=title, numeric=numeric))


def _echo_flat(ds: FlatDataset, *, details: bool) -> None:
    spec = ds.spec
    typer.echo(f"flat dataset {spec.name!r}: {spec.path}")
    typer.echo(
        f"  source rows {ds.n_source_rows}, kept {len(ds.frame)}, dropped {len(ds.dropped)}"
        + (f", repaired quoted rows {ds.repaired}" if ds.repaired else "")
    )
    for reason, n in ds.drop_reasons().items():
        typer.echo(f"  dropped {n:>6}  {reason}")
    for column, n in ds.missing.items():
        typer.echo(f"  missing {n:>6}  blank {column} (kept: read as a missing value)")
    for issue, why in ds.rule_misses().items():
        typer.echo(f"  note: {issue}: {why}")
    if not details:
        return
    for issue, rate in ds.label_rates().items():
        rule = spec.labels[issue]
        how = f"== {rule.equals!r}" if rule.equals is not None else f"!= {rule.not_equals!r}"
        typer.echo(f"  label {issue}: rate {rate:.4f} ({rule.column} {how})")
    if spec.time:
        typer.echo(f"  time {spec.time}: {ds.frame['as_of'].min()} .. {ds.frame['as_of'].max()}")
    roles = {
        "id": [spec.id or "(none: row numbers)"],
        "text": spec.text,
        "numeric": spec.numeric,
        "categorical": spec.categorical,
    }
    for role, cols in roles.items():
        typer.echo(f"  {role}: {', '.join(cols) or '-'}")


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where to compute: pandas (in this process) or dask (part by part on a cluster).",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address (default: SURFACER_DASK_SCHEDULER, else a local cluster "
        "sized to this machine).",
    ),
]


def _check_engine(engine: str) -> None:
    if engine not in ("pandas", "dask"):
        raise ValueError(f"engine must be pandas or dask, got {engine!r}")


@data_app.command("validate")
def validate_cmd(
    path: PathArg,
    progress: ProgressOpt = True,
    engine: EngineOpt = "pandas",
    scheduler: SchedulerOpt = None,
) -> None:
    """Check a dataset against the contract; print a per-table summary or every problem."""
    from features.flat import load_flat
    from features.io import load_dataset, table_summary

    _check_engine(engine)
    if _is_spec(path):
        ds = load_flat(path)
        ds.check_usable()
        _echo_flat(ds, details=False)
        return
    if engine == "dask":
        from features.dataset_dask import check_folder_dask

        check = check_folder_dask(path, scheduler=scheduler, progress=progress)
        summary, warnings = check.summary, check.warnings
        tables = summary["table"].tolist()
    else:
        from features.validate import dataset_warnings

        tables = load_dataset(path, progress=progress)
        summary = table_summary(tables)
        warnings = dataset_warnings(tables)
    summary["extra_columns"] = summary["extra_columns"].map(lambda c: ", ".join(c) or "-")
    typer.echo(f"dataset {str(path)!r}: valid ({len(tables)} tables)")
    _show_frame(summary)
    _echo_ignored(path)
    _echo_warnings(warnings)


def _echo_warnings(warnings: list[Problem]) -> None:
    """Warnings: what follows the contract but is probably wrong (the exit code stays 0)."""
    for problem in warnings:
        typer.echo(f"warning: {problem}")


def _echo_ignored(path: Path) -> None:
    from features.contract import TABLE_ORDER
    from features.io import ignored_files

    ignored = ignored_files(path)
    if ignored:
        typer.echo(
            f"note: not read, no contract table: {', '.join(ignored)} "
            f"(tables are {', '.join(TABLE_ORDER)}, as .parquet, .csv or a folder of parts)"
        )


@data_app.command("describe")
def describe_cmd(path: PathArg, progress: ProgressOpt = True) -> None:
    """Describe a dataset: row counts, time range per table, label rates, value counts."""
    import pandas as pd

    from features.flat import load_flat
    from features.io import describe_dataset, load_dataset

    if _is_spec(path):
        _echo_flat(load_flat(path), details=True)
        return
    info = describe_dataset(load_dataset(path, progress=progress))
    typer.echo(f"dataset {str(path)!r}")
    per_table = info["tables"].copy()
    for col in ("start", "end"):  # whole seconds read better; describe_dataset keeps them exact
        per_table[col] = pd.to_datetime(per_table[col], utc=True).dt.floor("s")
    _show_frame(per_table, "tables")
    _show_frame(info["labels"], "label rates")
    _show_frame(info["breakdown"], "value counts")
    _echo_ignored(path)


features_app = typer.Typer(
    help="Build model features from raw tables: point-in-time snapshots.", no_args_is_help=True
)


@features_app.command("build")
def build_cmd(
    data: Annotated[Path, typer.Option(help="Dataset folder of raw tables.", show_default=False)],
    out: Annotated[
        Path, typer.Option(help="Snapshot file to write (.parquet).", show_default=False)
    ],
    horizons: Annotated[
        str, typer.Option(help="Hours after posting to snapshot at, comma-separated.")
    ] = "1,6,24",
    engine: EngineOpt = "pandas",
    scheduler: SchedulerOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Build point-in-time snapshots (one row per item and as_of) into a Parquet file."""
    from features.snapshot import build_snapshot_file, parse_horizons

    result = build_snapshot_file(
        data,
        out,
        parse_horizons(horizons),
        engine=engine,
        scheduler=scheduler,
        progress=progress,
    )
    typer.echo(
        f"wrote {result.rows:,} snapshot rows ({result.items:,} items) to {result.path} "
        f"in {result.seconds:.1f} s"
    )
    _echo_warnings(result.outliers.problems() if result.outliers is not None else [])


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `surfacer` app."""
    app.add_typer(data_app, name="data")
    app.add_typer(features_app, name="features")
