"""Errors and the batch shape of the online path, importable without pandas (the service's
worker imports its routers before any heavy library)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class StoreUnavailable(RuntimeError):
    """The backend cannot be reached (the service reports not-ready, callers retry)."""


class AsOfTooEarly(ValueError):
    """A snapshot was asked for at or before the store's clock (it would not be exact)."""


class BatchRejected(ValueError):
    """A batch breaks the contract; nothing of it was applied. `.problems` lists why
    (`features.validate.Problem`: table, column, message, rows)."""

    def __init__(self, problems: list[Any]) -> None:
        self.problems = problems
        super().__init__(
            "batch rejected, nothing applied: " + "; ".join(str(p) for p in problems[:20])
        )


@dataclass(frozen=True)
class Batch:
    """One table's rows as the API or a stream message carries them."""

    table: str
    rows: Sequence[Mapping[str, Any]] | None = None
    columns: Mapping[str, Sequence[Any]] | None = None
