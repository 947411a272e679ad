"""Analyst labels out of the review store into a dataset's `labels` table, for `surfacer train`."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from features.io import read_table
from features.validate import ContractError, coerce_table, validate_table
from serving.review.store import LABEL_COLUMNS, ReviewStore

# A label is the same label when these agree (re-exports must not pile up duplicates).
DEDUP_KEY = ["item_id", "issue", "labeled_at", "source"]


def labels_path(out: str | Path) -> Path:
    """`out` itself when it names a file, else `out/labels.parquet` (a dataset folder)."""
    p = Path(out)
    if p.suffix in (".parquet", ".csv"):
        return p
    return p / "labels.parquet"


def merge_labels(existing: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Existing labels plus new ones, de-duplicated on (item_id, issue, labeled_at, source)."""
    frames = [f for f in (existing, new) if f is not None and len(f)]
    if not frames:
        return coerce_table("labels", new[LABEL_COLUMNS])
    merged = pd.concat([coerce_table("labels", f) for f in frames], ignore_index=True)
    extra = [c for c in merged.columns if c not in LABEL_COLUMNS]
    merged = merged.drop_duplicates(DEDUP_KEY, keep="last")
    merged = merged.sort_values(["labeled_at", "item_id", "issue"], kind="stable")
    return merged[LABEL_COLUMNS + extra].reset_index(drop=True)


def export_labels(store: ReviewStore, out: str | Path, *, merge: bool = True) -> tuple[Path, int]:
    """Write the store's labels to `out` (a dataset folder or a labels file).

    With `merge`, labels already in that file are kept and the review labels added without
    duplicates. The file is replaced atomically. Returns the path and the number of rows.
    """
    path = labels_path(out)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")
    new = store.labels_frame()
    existing = read_table("labels", path) if merge and path.exists() else None
    table = merge_labels(existing, new)
    problems = validate_table("labels", table)
    if problems:
        raise ContractError(problems)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, len(table)
