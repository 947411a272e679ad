"""Process helpers shared by `surfacer serve` and the multiprocess metrics (no heavy imports:
the serve command must not import prometheus_client before it sets its environment)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
