"""The `surfacer` command: composes each package's Typer commands into one front door.

Packages define their commands as thin wrappers over importable functions and let plain
exceptions out; only this module turns them into exit codes (2 for bad input) and prints
every user error as one `error: ...` line.

A package's commands are loaded when one of them runs (or shows its help), not at start-up:
`surfacer --help` lists them from the one-line summaries below, so it imports no package
and none of their dependencies (pandas, SQLAlchemy, MLflow, ...).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from common.errors import ClusterError

# command -> (module whose `register(app)` adds it, the summary `surfacer --help` shows).
# Listed in the order of the main job; tests check each summary against the command's help.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": (
        "simulator.cli",
        "Simulate a short-video ecosystem with planted incidents and write it as a dataset.",
    ),
    "data": (
        "features.cli",
        "Check and summarize datasets: a folder of raw tables or a flat-dataset TOML spec.",
    ),
    "features": (
        "features.cli",
        "Build model features from raw tables: point-in-time snapshots.",
    ),
    "train": (
        "training.cli",
        "Train one ScoringBundle (all issue types), evaluate it and log it to MLflow.",
    ),
    "score": (
        "training.cli",
        "Score every snapshot of a dataset and write probabilities and flags to Parquet.",
    ),
    "models": (
        "training.cli",
        "List the registered model versions: aliases, run id, created, key metrics.",
    ),
    "promote": (
        "training.cli",
        "Move a model alias by hand (bypasses the gate) and print it before and after.",
    ),
    "serve": (
        "serving.cli",
        "Serve the champion model over HTTP (FastAPI + uvicorn); the console is at /console.",
    ),
    "review": ("serving.cli", "The analyst review queue: schema, analysts, stats, label export."),
    "ingest": (
        "serving.online_cli",
        "Consume the platform's event stream (Redis Streams or NATS JetStream) into the online "
        "store.",
    ),
    "replay": (
        "serving.online_cli",
        "Stream a dataset into a running service in event-time order (loopback HTTP).",
    ),
    "discover": (
        "discovery.cli",
        "Find issue-rate incidents by segment: anomaly detection, root-cause drill-down, "
        "clusters of flagged items; `effect` measures whether a fix worked.",
    ),
    "watch": (
        "discovery.cli",
        "Run discovery over a sliding window (of a dataset folder or the live archive) every "
        "so often and upsert incidents into the store.",
    ),
}

_loaded: dict[str, TyperGroup] = {}


def load_package_commands(module_name: str) -> TyperGroup:
    """The commands `module_name.register` adds, as a click group (imported once)."""
    if module_name not in _loaded:
        module = importlib.import_module(module_name)
        holder = typer.Typer()
        module.register(holder)
        _loaded[module_name] = typer.main.get_group(holder)
    return _loaded[module_name]


class LazyCommand(TyperCommand):
    """Stands in for a package's command until it runs: a name and a summary, nothing imported."""

    def __init__(self, name: str, module: str, summary: str) -> None:
        super().__init__(name=name, help=summary, short_help=summary, add_help_option=False)
        self.module = module

    def load(self) -> Any:
        """The real command (importing its package)."""
        command = load_package_commands(self.module).commands.get(self.name or "")
        if command is None:
            raise LookupError(f"{self.module}.register did not add a command {self.name!r}")
        return command

    def make_context(self, info_name: Any, args: list[str], parent: Any = None, **extra: Any):  # type: ignore[no-untyped-def]
        # The group invokes `ctx.command`: the real one parses the arguments and runs.
        return self.load().make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """The root group: package commands stand in as `LazyCommand`s, then the eager ones."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lazy = {
            name: LazyCommand(name, module, summary)
            for name, (module, summary) in LAZY_COMMANDS.items()
        }
        self.commands = {**lazy, **self.commands}


app = typer.Typer(
    name="surfacer",
    cls=LazyGroup,
    help="Surface content-ecosystem issues: simulate data, build features, train, serve, discover.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Library packages raise these plain exceptions with messages naming the bad value.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    LookupError,
    ClusterError,
)


@app.callback()
def _root(
    ctx: typer.Context,
    peak_memory: Annotated[
        bool,
        typer.Option(
            "--peak-memory",
            help="At the end, print the peak memory of the whole process tree (Dask "
            "workers included) on stderr.",
        ),
    ] = False,
) -> None:
    """surfacer: content-signal ML for issue surfacing on a short-video platform."""
    if peak_memory:
        from common.memory import PeakMemory

        sampler = PeakMemory().start()

        def report() -> None:
            sampler.stop()
            sampler.report()

        ctx.call_on_close(report)


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's outputs.")] = Path(
        ".surfacer/demo"
    ),
    items: Annotated[int, typer.Option("--items", min=200, help="Items to simulate.")] = 20_000,
    days: Annotated[int, typer.Option("--days", min=2, help="Days to simulate.")] = 28,
    seed: Annotated[int, typer.Option("--seed", help="Random state for every step.")] = 0,
) -> None:
    """Run the main job end to end on simulated data: simulate, train, score, discover."""
    from surfacer.demo import run_demo

    run_demo(out, items=items, days=days, seed=seed, log=typer.echo)


def error(message: object) -> None:
    """Print a user error the one way the CLI does: a line starting with `error:`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` and return its exit code; user errors print one line, exit 2."""
    from common.logs import quiet_mlflow

    quiet_mlflow()
    try:
        app(
            args=list(argv) if argv is not None else None,
            prog_name="surfacer",
            standalone_mode=False,
        )
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        error("aborted")
        return 1
    except USER_ERRORS as exc:
        error(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return 2
    except typer.TyperException as exc:  # usage errors and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `surfacer` or a bare group
            exc.show()  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", 2))
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(f"{exc.format_message().rstrip('.')}{hint}")
        return int(getattr(exc, "exit_code", 2))
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
