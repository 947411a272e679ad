"""Errors of the shared infrastructure that a user can act on (the CLI prints them as one
`error:` line with exit code 2, `surfacer.cli.USER_ERRORS`). No imports: the CLI loads this
module at start-up."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """The Dask cluster lost work it cannot recompute: a worker died (most often at its
    memory limit) while holding data the client had sent it."""
