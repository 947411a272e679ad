"""The `surfacer` command: composes each package's Typer commands into one front door.

Packages define their commands as thin wrappers over importable functions and let plain
exceptions out; only this module turns them into exit codes (2 for bad input).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="surfacer",
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
)


@app.callback()
def _root() -> None:
    """surfacer: content-signal ML for issue surfacing on a short-video platform."""


def _register() -> None:
    # Each package owns its commands; registering them here keeps `surfacer --help` complete.
    import discovery.cli
    import features.cli
    import serving.cli
    import simulator.cli
    import training.cli

    for module in (simulator.cli, features.cli, training.cli, serving.cli, discovery.cli):
        module.register(app)


_register()


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


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` and return its exit code; user errors print one line, exit 2."""
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 1
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
        return 2
    except typer.exceptions.TyperException as exc:  # usage errors and the like
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(exc, "exit_code", 2))
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
