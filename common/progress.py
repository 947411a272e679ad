"""Progress of long steps: a rich bar on a terminal, plain one-line updates anywhere else.

Logs and pipes get whole lines (`simulate: [2/6] items`), never carriage-return frames, and
at most one count-only line per `min_interval_s`. Bars opened while another is showing (a
snapshot build inside training) join the same display instead of fighting over the terminal.
rich is imported only when a bar is actually drawn.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

# The one rich display shared by nested bars, and how many bars use it.
_live: Any = None
_live_users = 0


class Progress:
    """Progress of one step: `update()` per unit done, `status(text)` for what runs now.

    Disabled (`enabled=False`) it does nothing. On a terminal it draws a rich bar; otherwise
    it writes a line per status change, a count line at most every `min_interval_s` (when
    the total is known), and a final line; each with the time since the start.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "step",
        enabled: bool = True,
        stream: TextIO | None = None,
        min_interval_s: float = 5.0,
    ) -> None:
        self.desc = desc
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval_s = min_interval_s
        self.done = 0
        self._status = ""
        self._t0 = time.perf_counter()
        self._last_line = self._t0
        self._task: Any = None
        self._closed = False
        self.rich = enabled and _isatty(self.stream)
        if self.rich:
            self._task = _open_task(self.stream, desc, total)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self, text: str) -> None:
        """Say what runs now (a stage, a file); in a log this is one line."""
        if not self.enabled or self._closed:
            return
        self._status = text
        if self.rich:
            _live.update(self._task, status=text)
        else:
            self._line(text)

    def update(self, n: int = 1) -> None:
        """Count `n` more units done."""
        if not self.enabled or self._closed:
            return
        self.done += n
        if self.rich:
            _live.update(self._task, advance=n)
        elif (
            self.total is not None and time.perf_counter() - self._last_line >= self.min_interval_s
        ):
            self._line(self._status)

    def close(self) -> None:
        """Finish: a rich bar stops (nested ones disappear), a log gets its final line."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self.rich:
            _close_task(self._task)
        else:
            elapsed = time.perf_counter() - self._t0
            self._write(f"{self.desc}: done, {self._count()} in {elapsed:.1f} s")

    def _count(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.done}{of} {self.unit}{'' if self.done == 1 else 's'}"

    def _line(self, text: str) -> None:
        self._last_line = now = time.perf_counter()
        count = f" [{self.done}/{self.total}]" if self.total is not None else ""
        self._write(f"{self.desc}:{count} {text} ({now - self._t0:.1f} s)")

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except ValueError:  # the stream was closed under us (a test's capture): say nothing
            pass


def track(
    iterable: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "step",
    enabled: bool = True,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Iterate `iterable` with a `Progress` counting each item."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(desc, total, unit=unit, enabled=enabled, stream=stream) as bar:
        for item in iterable:
            yield item
            bar.update()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _open_task(stream: TextIO, desc: str, total: int | None) -> Any:
    global _live, _live_users
    if _live is None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        _live = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(file=stream),
        )
        _live.start()
    _live_users += 1
    return _live.add_task(desc, total=total, status="")


def _close_task(task: Any) -> None:
    global _live, _live_users
    _live_users -= 1
    if _live_users > 0:
        _live.remove_task(task)  # a nested bar: its parent stays on screen
        return
    _live.stop()
    _live = None
