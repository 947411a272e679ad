"""What this machine offers: the cores this process may run on, for default worker counts."""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPUs this process may use (its affinity mask where the OS has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
