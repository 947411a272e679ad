"""`surfacer` commands owned by the training package (thin wrappers over importable functions).

The commands import the training code when they run, so `surfacer train --help` and a
command that fails on its arguments load neither LightGBM, scikit-learn nor MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.cli import SchedulerOpt


def train_cmd(
    data: Annotated[
        Path,
        typer.Option("--data", help="Dataset folder (raw tables) or a flat dataset spec (.toml)."),
    ],
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Random state for splits and models (default: settings)."),
    ] = None,
    capacity: Annotated[
        int | None,
        typer.Option(
            "--capacity",
            min=1,
            help="Review capacity in items per day and issue (default: settings).",
        ),
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote/--no-promote",
            help="Let the promotion gate move @champion (--no-promote: challenger only).",
        ),
    ] = True,
    track: Annotated[
        bool,
        typer.Option("--track/--no-track", help="Log the run and register the model in MLflow."),
    ] = True,
    bundle_out: Annotated[
        Path | None,
        typer.Option("--bundle-out", help="Also pickle the trained ScoringBundle here."),
    ] = None,
    issue: Annotated[
        list[str] | None,
        typer.Option(
            "--issue", help="Train only this issue type (repeatable; default: all of them)."
        ),
    ] = None,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Report each stage on stderr (a bar on a terminal, lines in a log).",
        ),
    ] = True,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="pandas, or dask: snapshots and LightGBM (lightgbm.dask) on a Dask cluster.",
        ),
    ] = "pandas",
    scheduler: SchedulerOpt = None,
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model-name",
            help="Registered model to log to (default: SURFACER_MODEL_NAME if set, else the "
            "dataset's name, else 'surfacer').",
        ),
    ] = None,
    max_rows: Annotated[
        int | None,
        typer.Option(
            "--max-rows",
            min=0,
            help="Past this many training rows, fit on a seeded sample of whole items with "
            "the positive share kept; bounds training's memory (default: "
            "SURFACER_TRAIN_MAX_ROWS, 400000; 0: no limit).",
        ),
    ] = None,
) -> None:
    """Train one ScoringBundle (all issue types), evaluate it and log it to MLflow."""
    check_data_path(data)
    check_engine(engine)
    from training.jobs import train_command

    text = train_command(
        data,
        seed=seed,
        capacity=capacity,
        promote=promote,
        track=track,
        bundle_out=bundle_out,
        issues=issue,
        progress=progress,
        engine=engine,
        scheduler=scheduler,
        model_name=model_name,
        max_rows=max_rows,
    )
    typer.echo(text)


def score_cmd(
    data: Annotated[
        Path,
        typer.Option("--data", help="Dataset folder (raw tables) or a flat dataset spec."),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="models:/NAME@ALIAS or another MLflow URI, a model folder, or a bundle pickle.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    engine: Annotated[
        str,
        typer.Option("--engine", help="pandas, or dask: snapshots and scoring on a Dask cluster."),
    ] = "pandas",
    scheduler: SchedulerOpt = None,
) -> None:
    """Score every snapshot of a dataset and write probabilities and flags to Parquet."""
    check_data_path(data)
    check_engine(engine)
    from training.jobs import score_lines, score_to_file

    result = score_to_file(data, model, out, engine=engine, scheduler=scheduler)
    typer.echo("\n".join(score_lines(result)))


_MODEL_NAME_OPTION = typer.Option(
    "--model-name", help="Registered model (default: SURFACER_MODEL_NAME, 'surfacer')."
)


def models_cmd(
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model-name",
            help="Only this registered model (default: SURFACER_MODEL_NAME when set, else "
            "every registered model).",
        ),
    ] = None,
) -> None:
    """List the registered model versions: aliases, run id, created, key metrics."""
    from common.settings import get_settings
    from training.registry import format_versions, list_versions, registered_models

    settings = get_settings()
    if model_name:
        names = [model_name]
    elif "model_name" in settings.model_fields_set:  # SURFACER_MODEL_NAME is set
        names = [settings.model_name]
    else:
        names = registered_models(settings)
    if not names:
        typer.echo("no registered models")
        return
    blocks = []
    for name in names:
        rows = list_versions(settings.model_copy(update={"model_name": name}))
        blocks.append(f"model {name}\n{format_versions(rows)}")
    typer.echo("\n\n".join(blocks))


def promote_cmd(
    version: Annotated[
        str | None,
        typer.Argument(help="Model version to point the alias at (omit with --rollback)."),
    ] = None,
    alias: Annotated[
        str, typer.Option("--alias", help="Alias to move (champion, challenger, ...).")
    ] = "champion",
    rollback: Annotated[
        bool,
        typer.Option("--rollback", help="Move @champion back to the version that held it before."),
    ] = False,
    model_name: Annotated[str | None, _MODEL_NAME_OPTION] = None,
) -> None:
    """Move a model alias by hand (bypasses the gate) and print it before and after."""
    if rollback == (version is not None):
        raise ValueError("give either a VERSION or --rollback, not both or neither")
    from common.settings import get_settings
    from training.registry import promote
    from training.registry import rollback as roll_back

    settings = get_settings()
    if model_name:
        settings = settings.model_copy(update={"model_name": model_name})
    move = roll_back(settings, alias=alias) if rollback else promote(settings, version, alias=alias)
    before = "none" if move.before is None else f"v{move.before}"
    typer.echo(f"{settings.model_name}@{move.alias}: {before} -> v{move.after}")


def check_engine(engine: str) -> None:
    """Fail fast on an engine name that is neither pandas nor dask."""
    if engine not in ("pandas", "dask"):
        raise ValueError(f"engine must be pandas or dask, got {engine!r}")


def check_data_path(data: Path) -> None:
    """Fail fast, before the heavy imports, on a --data path that cannot be a dataset."""
    if not data.exists():
        raise FileNotFoundError(
            f"data {str(data)!r} does not exist; expected a dataset folder or a .toml spec"
        )
    if not data.is_dir() and data.suffix.lower() != ".toml":
        raise ValueError(
            f"data {str(data)!r} is neither a dataset folder nor a .toml flat dataset spec"
        )


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `surfacer` app."""
    app.command("train")(train_cmd)
    app.command("score")(score_cmd)
    app.command("models")(models_cmd)
    app.command("promote")(promote_cmd)
