"""An exclusive lock between the processes of one host: an flock on a file."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created when missing) for the block.

    Used where several processes of one host may do the same one-off work at once (the
    workers of one server creating a database, downloading a model): the first does it
    while the others wait, then find it done. The file stays; deleting it while another
    process holds or waits on it would break the ordering. OSError when it cannot be
    opened."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
