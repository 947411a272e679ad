"""Peak memory of a command: the whole process tree (Dask LocalCluster workers included).

A daemon thread samples the resident set size (RSS) of this process and all its descendants
every `interval_s` and keeps the largest sum. Short-lived children that end between samples
are covered by the kernel's own high-water marks (getrusage: this process and its waited-for
children), so the figure is never below what a single process really reached. Workers of a
remote scheduler are other machines' memory and are not counted (their dashboard shows it).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO


def _tree_rss(proc: object) -> tuple[int, int, int]:
    """(summed RSS in bytes, processes counted, RSS of `proc` itself) of `proc` and its
    descendants now."""
    import psutil

    total = 0
    count = 0
    own = 0
    try:
        members = [proc, *proc.children(recursive=True)]  # type: ignore[attr-defined]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0, 0, 0
    for p in members:
        try:
            rss = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += rss
        count += 1
        if p is proc:
            own = rss
    return total, count, own


def _rusage_peak() -> int:
    """The largest max-RSS the kernel recorded for this process or any waited-for child."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(max(own, children) * scale)


class PeakMemory:
    """Samples the process tree's RSS in the background; `peak_bytes` is the largest seen."""

    def __init__(self, interval_s: float = 0.1, *, kernel_high_water: bool = True) -> None:
        """`kernel_high_water=False` keeps to the samples: for one stage of a longer job,
        whose process-wide high-water mark may come from an earlier stage."""
        import psutil

        self.interval_s = interval_s
        self.kernel_high_water = kernel_high_water
        self._proc = psutil.Process(os.getpid())
        self.peak_bytes = 0
        self.max_processes = 0
        # this process alone (a Dask client beside its workers): its own largest sample
        self.own_peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._t0 = time.perf_counter()
        self.seconds = 0.0

    def sample(self) -> None:
        rss, count, own = _tree_rss(self._proc)
        self.peak_bytes = max(self.peak_bytes, rss)
        self.max_processes = max(self.max_processes, count)
        self.own_peak_bytes = max(self.own_peak_bytes, own)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; the peak in bytes (tree samples or kernel high-water, the larger)."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=2 * self.interval_s + 1)
            self.sample()
            if self.kernel_high_water:
                self.peak_bytes = max(self.peak_bytes, _rusage_peak())
            self.seconds = time.perf_counter() - self._t0
        return self.peak_bytes

    def __enter__(self) -> PeakMemory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def line(self) -> str:
        """The report line (bench/scale.py parses `peak memory: <MB> MB`)."""
        own = ""
        if self.max_processes > 1:  # where it was: this process, or its children
            own = f"; this process alone at most {self.own_peak_bytes / 1e6:.1f} MB"
        return (
            f"peak memory: {self.peak_bytes / 1e6:.1f} MB (process tree, up to "
            f"{self.max_processes} process(es), {self.seconds:.1f} s{own})"
        )

    def report(self, stream: TextIO | None = None) -> None:
        print(self.line(), file=stream if stream is not None else sys.stderr, flush=True)
