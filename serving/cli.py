"""`surfacer` commands owned by the serving package (thin wrappers over importable functions)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `surfacer` app."""
