"""The front door: every command answers --help, user errors are one `error:` line with exit
code 2, and start-up imports no package until one of its commands runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

from surfacer.cli import LAZY_COMMANDS, LazyCommand, app, run

HEAVY = ("pandas", "numpy", "sqlalchemy", "alembic", "mlflow", "sklearn", "lightgbm", "dask")


def _all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(cmd: object, prefix: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            if isinstance(sub, LazyCommand):
                sub = sub.load()
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "surfacer")
def test_every_command_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out
    assert "--help" in out


@pytest.mark.parametrize("name", list(LAZY_COMMANDS))
def test_listed_summary_is_the_commands_own_help(name: str) -> None:
    # `surfacer --help` shows LAZY_COMMANDS' summaries without importing the packages: each
    # must say what the loaded command's own help says first.
    real = LazyCommand(name, *LAZY_COMMANDS[name]).load()
    first = " ".join((real.help or "").strip().split("\n\n")[0].split())
    assert LAZY_COMMANDS[name][1] == first


def test_every_registered_command_is_listed() -> None:
    modules = {module for module, _ in LAZY_COMMANDS.values()}
    for module in modules:
        holder = typer.Typer()
        __import__(module, fromlist=["register"]).register(holder)
        names = set(typer.main.get_group(holder).commands)
        listed = {n for n, (m, _) in LAZY_COMMANDS.items() if m == module}
        assert names == listed, module


def test_unknown_command_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: No such command")


def test_usage_errors_and_library_errors_look_the_same(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["train"]) == 2  # a usage error: --data missing
    usage = capsys.readouterr().err.strip()
    assert usage.startswith("error: Missing option '--data'")
    assert "surfacer train --help" in usage
    assert run(["train", "--data", "/no/such/dataset"]) == 2  # raised by the command
    assert capsys.readouterr().err.strip().startswith("error: data '/no/such/dataset'")


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["train", "--data", "/no/such/dataset"]],
    ids=" ".join,
)
def test_start_up_imports_nothing_heavy(argv: list[str]) -> None:
    # A fresh interpreter: this one has pandas & co. loaded by other tests.
    code = (
        "import sys, contextlib, io\n"
        "from surfacer.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    run({argv!r})\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert loaded == ""
