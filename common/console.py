"""Results as tables: rich on a terminal (colour, its width), plain box text in logs and pipes.

Commands build `Table`s with `table(...)` and print them with `show(...)`; `render(...)`
gives the same text as a string (what tests and functions that return text use). rich is
imported when a table is built, never at CLI start-up.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

# Wide enough for the widest table without wrapping when the output is not a terminal
# (rich would otherwise assume 80 columns).
PLAIN_WIDTH = 160


def cell(value: Any, digits: int = 4) -> str:
    """A table cell: floats to `digits` decimals, NaN/None as '-', ints with separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value.is_integer() and abs(value) >= 10**digits:
            return f"{int(value):,}"
        return f"{value:.{digits}f}"
    return str(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    numeric: Sequence[str] | None = None,
) -> Any:
    """A rich Table; cells go through `cell`, numeric columns (default: all but the first)
    are right-aligned."""
    from rich import box
    from rich.table import Table

    right = set(columns[1:] if numeric is None else numeric)
    out = Table(
        title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False
    )
    for name in columns:
        out.add_column(name, justify="right" if name in right else "left", overflow="fold")
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    return out


def _isatty(file: TextIO) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def show(*renderables: Any, file: TextIO | None = None) -> None:
    """Print tables (or text) to stdout: coloured on a terminal, plain text otherwise."""
    file = file if file is not None else sys.stdout
    if not _isatty(file):
        file.write(render(*renderables) + "\n")
        file.flush()
        return
    from rich.console import Console

    console = Console(file=file, highlight=False)
    for r in renderables:
        console.print(r)


def render(*renderables: Any) -> str:
    """The plain text `show` prints when the output is not a terminal (no trailing blanks)."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=PLAIN_WIDTH, color_system=None, highlight=False)
    for r in renderables:
        console.print(r)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
