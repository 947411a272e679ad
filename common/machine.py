"""What this machine offers: the cores this process may run on and its memory, for default
worker counts and per-worker memory limits (common.cluster)."""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPUs this process may use (its affinity mask where the OS has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def total_memory_bytes() -> int:
    """Physical memory of the machine (psutil; 0 when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a dependency; a sandbox may hide /proc
        return 0
