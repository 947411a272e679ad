"""Read and write raw-table datasets: a folder of `<table>.parquet` (or `<table>.csv`) files.

A table may also be a folder of Parquet parts (`events/part-00003.parquet`,
`events/2026-01-05.parquet`, in any sub-folders): parts are read in sorted path order, each
checked against the contract on its own so that a part with the wrong schema is named.
Past one machine, `table_parts` lists the pieces (parts, or row groups of one big file) that
the Dask engine reads one task at a time.

Loading coerces CSV text to contract dtypes and validates the whole dataset, raising one
`ContractError` with every problem. Writing validates first and then publishes the folder
atomically (temp sibling folder + rename), so a reader never sees a half-written dataset.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from common.progress import Progress
from features.contract import TABLE_ORDER, TABLES
from features.validate import (
    ContractError,
    _dtype_matches,
    check_dataset,
    coerce_table,
    validate_dataset,
)

DATA_SUFFIXES = (".parquet", ".csv")
PART_SUFFIX = ".parquet"


def dataset_files(path: str | Path) -> dict[str, Path]:
    """Map each contract table present in folder `path` to its file or folder of Parquet parts.

    Unknown files are ignored. Raises FileNotFoundError when the folder is missing,
    ValueError when it is not a folder or when a table exists twice (as Parquet, CSV or a
    folder of parts: which one is right would be a guess).
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"dataset folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder; expected a dataset folder of tables")
    found: dict[str, Path] = {}
    for name in TABLE_ORDER:
        present = [folder / f"{name}{suf}" for suf in DATA_SUFFIXES]
        present = [p for p in present if p.is_file()]
        if (folder / name).is_dir():
            present.append(folder / name)
        if len(present) > 1:
            raise ValueError(
                f"table {name!r} is in {str(folder)!r} twice ({', '.join(p.name for p in present)}); "
                "keep only one of them"
            )
        if present:
            found[name] = present[0]
    return found


# Data files a dataset folder may hold beside its tables: the simulator's ground truth and the
# live archive's scores.
KNOWN_EXTRAS = frozenset({"truth.parquet", "scores"})


def ignored_files(path: str | Path) -> list[str]:
    """Data files and folders in dataset folder `path` that are no contract table and are not
    read (e.g. a misspelt `event.parquet`), sorted; hidden, `_`-prefixed and known extras
    (`KNOWN_EXTRAS`) are left out."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith((".", "_")) or name in KNOWN_EXTRAS:
            continue
        stem, suffix = os.path.splitext(name)
        is_data = entry.is_file() and suffix.lower() in DATA_SUFFIXES
        is_parts = entry.is_dir() and any(entry.rglob(f"*{PART_SUFFIX}"))
        if (is_data or is_parts) and not (stem in TABLES and suffix in ("", *DATA_SUFFIXES)):
            out.append(name + ("/" if entry.is_dir() else ""))
    return sorted(out)


def _read_csv(name: str, path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    # Everything is read as text and converted by coerce_table, so that a value that does not
    # parse is reported rather than silently guessed. Only an empty cell means null, except in
    # non-nullable text columns where an empty cell can only mean "" (e.g. no hashtags).
    try:
        header = pd.read_csv(path, nrows=0).columns
        keep_empty = {c.name for c in TABLES[name].columns if c.kind == "str" and not c.nullable}
        na_values = {c: [""] for c in header if c not in keep_empty}
        return pd.read_csv(
            path, dtype="str", keep_default_na=False, na_values=na_values, usecols=columns
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{name} table {str(path)!r} is not a readable UTF-8 CSV file: {exc}"
        ) from None


@contextmanager
def _parquet_errors(file: Path) -> Iterator[None]:
    """Name a file pyarrow cannot read as Parquet (one `ValueError`, not pyarrow's)."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{str(file)!r} is not a readable Parquet file: {exc}") from None


def _read_parquet(
    file: Path, row_groups: Sequence[int] | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """A Parquet file (or some of its row groups, or columns); a file that is not Parquet is
    named."""
    import pyarrow.parquet as pq

    cols = None if columns is None else list(columns)
    with _parquet_errors(file):
        if row_groups is not None:
            return pq.ParquetFile(file).read_row_groups(list(row_groups), columns=cols).to_pandas()
        return pd.read_parquet(file, columns=cols)


def _parquet_metadata(file: Path) -> Any:
    import pyarrow.parquet as pq

    with _parquet_errors(file):
        return pq.ParquetFile(file).metadata


def part_files(path: str | Path) -> list[Path]:
    """The Parquet parts of a partitioned table folder, in sorted path order (hidden and
    `_`-prefixed files such as `_SUCCESS` or `_metadata` skipped); a plain file is its own part."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    parts = sorted(
        p
        for p in path.rglob(f"*{PART_SUFFIX}")
        if p.is_file() and not any(s.startswith((".", "_")) for s in p.relative_to(path).parts)
    )
    if not parts:
        raise ValueError(f"table folder {str(path)!r} holds no {PART_SUFFIX} parts")
    return parts


class PartitionError(ValueError):
    """A part of a partitioned table that does not fit the contract (names the file)."""


def check_part(name: str, df: pd.DataFrame, file: str | Path) -> None:
    """Raise PartitionError naming `file` when a coerced part's columns break the schema.

    Only the schema is checked here (missing contract columns, a column whose type cannot be
    the contract's); values are the job of validation, which then reports table rows.
    """
    problems = []
    for col in TABLES[name].columns:
        if col.name not in df.columns:
            if not col.nullable:
                problems.append(f"missing column {col.name!r}")
            continue
        s = df[col.name]
        if not _dtype_matches(s, col.kind) and s.notna().any():
            problems.append(f"column {col.name!r} is {s.dtype}, expected {col.kind}")
    if problems:
        raise PartitionError(
            f"{name} part {str(file)!r} has the wrong schema: {'; '.join(problems)}"
        )


def read_part(
    name: str,
    file: str | Path,
    row_groups: Sequence[int] | None = None,
    *,
    check: bool = True,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One part of a table (a Parquet file, or some of its row groups), coerced and (`check`)
    schema-checked; the Dask engine reads each part in its own task. A piece of one big file
    is not schema-checked: validation reports its columns as the pandas path does. `columns`
    reads only those (of a part already checked: a part of some columns is never checked)."""
    file = Path(file)
    if row_groups is not None:
        df = _read_parquet(file, row_groups, columns)
    elif file.suffix == ".csv":
        df = _read_csv(name, file, columns)
    else:
        df = _read_parquet(file, columns=columns)
    df = coerce_table(name, df.reset_index(drop=True))
    if check and columns is None:
        check_part(name, df, file)
    return df


@dataclass(frozen=True)
class TablePart:
    """A piece of a table one task reads: a file (or some of its row groups) and its rows."""

    file: Path
    row_groups: tuple[int, ...] | None
    rows: int
    offset: int  # rows of the table before this part (for 0-based table row numbers)
    partitioned: bool = False  # a part of a folder (schema-checked on its own)

    def read(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The piece as table `name` (only `columns` when given: see `read_part`)."""
        return read_part(name, self.file, self.row_groups, check=self.partitioned, columns=columns)


def table_parts(path: str | Path, *, target_rows: int = 2_000_000) -> list[TablePart]:
    """Pieces of a table file or folder of about `target_rows` rows (from Parquet metadata).

    A folder's parts are pieces of their own (split further by row groups when large); one big
    Parquet file is split by row groups, so a single-file table streams too. A CSV file is one
    piece.
    """
    pieces: list[TablePart] = []
    offset = 0
    folder = Path(path).is_dir()
    for file in part_files(path):
        if file.suffix != PART_SUFFIX:
            pieces.append(TablePart(file, None, -1, offset, folder))
            continue
        meta = _parquet_metadata(file)
        groups: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            groups.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= target_rows:
                pieces.append(TablePart(file, tuple(groups), rows, offset, folder))
                offset += rows
                groups, rows = [], 0
        if groups or not pieces or pieces[-1].file != file:
            pieces.append(TablePart(file, tuple(groups) if groups else None, rows, offset, folder))
            offset += rows
    if len(pieces) == 1 and pieces[0].row_groups is not None:
        pieces = [TablePart(pieces[0].file, None, pieces[0].rows, 0, folder)]
    return pieces


def read_table(name: str, path: str | Path) -> pd.DataFrame:
    """Read one table (a file, Parquet or CSV, or a folder of Parquet parts) and coerce it to
    contract dtypes (not validated). A part with the wrong schema raises PartitionError."""
    path = Path(path)
    if path.is_dir():
        frames = [read_part(name, f) for f in part_files(path)]
        if len(frames) == 1:
            return frames[0]
        # parts coerce on their own (an all-null part may hold another null dtype): again
        return coerce_table(name, pd.concat(frames, ignore_index=True))
    if path.suffix == ".parquet":
        df = _read_parquet(path)
    elif path.suffix == ".csv":
        df = _read_csv(name, path)
    else:
        raise ValueError(f"unsupported file {str(path)!r}; expected .parquet or .csv")
    return coerce_table(name, df.reset_index(drop=True))


def load_dataset(path: str | Path, *, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Load a dataset folder into validated frames keyed by table name (contract order).

    Optional tables that are absent are absent from the dict; extra columns are kept.
    Raises FileNotFoundError when `items` is missing and ContractError listing every problem.
    `progress` reports on stderr (common.progress): one step per table, one for validation.
    """
    folder = Path(path)
    files = dataset_files(folder)
    if "items" not in files:
        raise FileNotFoundError(
            f"dataset folder {str(folder)!r} has no items table; expected items.parquet or "
            f"items.csv (optional: {', '.join(n for n in TABLE_ORDER if n != 'items')})"
        )
    tables: dict[str, pd.DataFrame] = {}
    with Progress("load", len(files) + 1, enabled=progress) as bar:
        for name, file in files.items():
            bar.status(file.name)
            tables[name] = read_table(name, file)
            bar.update()
        bar.status("validate")
        check_dataset(tables, context=f"dataset {str(folder)!r}")
        bar.update()
    return tables


def _check_extra_name(name: str) -> None:
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"extra file name {name!r} must be a plain file name (no folders)")
    stem, suffix = os.path.splitext(name)
    if stem in TABLES and suffix in DATA_SUFFIXES:
        raise ValueError(f"extra file name {name!r} would shadow the {stem!r} table")


def write_dataset(
    tables: Mapping[str, pd.DataFrame],
    out: str | Path,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
    parts: Mapping[str, int | Literal["day"]] | None = None,
) -> Path:
    """Validate `tables` and write them as `<table>.parquet` into folder `out`, atomically.

    Nothing is written when validation fails (ContractError). Files go to a temp sibling
    folder that is renamed into place; an existing non-empty `out` is refused unless
    `overwrite`, in which case the old folder is renamed aside, the new one renamed in, and
    the old one deleted. `extra_files` (name -> bytes) land in the same folder.
    `parts` writes a table as a folder of Parquet parts instead of one file: an int `n` splits
    it by a hash of item_id into n parts (`part-00000.parquet`...), "day" into one part per UTC
    day of its time column (`2026-01-05.parquet`).
    """
    out = Path(out)
    extra = dict(extra_files or {})
    for name in extra:
        _check_extra_name(name)
    parts = dict(parts or {})
    for name, how in parts.items():
        _check_partitioning(name, how)
    unknown = [n for n in tables if n not in TABLES]
    coerced = {n: coerce_table(n, df) for n, df in tables.items() if n in TABLES}
    problems = validate_dataset({**coerced, **{n: tables[n] for n in unknown}})
    if problems:
        raise ContractError(problems, context=f"tables for {str(out)!r}")

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {str(out)!r} exists and is not empty; pass overwrite=True to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the published folder should be readable
        for name in TABLE_ORDER:
            if name in coerced and name in parts:
                write_parts(coerced[name], tmp / name, name, parts[name])
            elif name in coerced:
                coerced[name].to_parquet(tmp / f"{name}.parquet", index=False)
        for name, data in extra.items():
            (tmp / name).write_bytes(data)
        _publish(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_partitioning(name: str, how: object) -> None:
    if name not in TABLES:
        raise ValueError(f"cannot partition {name!r}: not a contract table")
    if how == "day":
        if name not in TIME_COLUMNS:
            raise ValueError(f"cannot partition {name!r} by day: it has no time column")
    elif isinstance(how, int) and not isinstance(how, bool) and how >= 1:
        if "item_id" not in TABLES[name].column_names:
            raise ValueError(f"cannot partition {name!r} by item_id: it has no item_id column")
    else:
        raise ValueError(
            f"partitioning of {name!r} must be a part count >= 1 or 'day', got {how!r}"
        )


def write_parts(df: pd.DataFrame, folder: Path, name: str, how: int | str) -> list[Path]:
    """Write `df` as Parquet parts into `folder`: by hashed item_id into `how` parts, or by day.

    Rows keep their table order inside each part; empty hash buckets still get a (0-row) part,
    so a reader always finds `how` files.
    """
    from features.snapshot_dask import item_buckets

    _check_partitioning(name, how)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if how == "day":
        days = pd.to_datetime(df[TIME_COLUMNS[name]], utc=True).dt.strftime("%Y-%m-%d")
        days = days.fillna("unknown-day")
        for day in sorted(days.unique()):
            path = folder / f"{day}{PART_SUFFIX}"
            df[(days == day).to_numpy()].to_parquet(path, index=False)
            written.append(path)
        if not written:  # an empty table still needs one part to carry its schema
            path = folder / f"part-00000{PART_SUFFIX}"
            df.to_parquet(path, index=False)
            written.append(path)
        return written
    n = int(how)
    buckets = item_buckets(df["item_id"].astype("str"), n) if len(df) else np.zeros(0, int)
    for b in range(n):
        path = folder / f"part-{b:05d}{PART_SUFFIX}"
        df[buckets == b].to_parquet(path, index=False)
        written.append(path)
    return written


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished temp folder to `out`, swapping out any existing folder."""
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()  # only the unique name is wanted; rename needs the target absent
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)  # put the previous dataset back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        # rename onto a missing or empty folder is atomic on POSIX, and fails (rather than
        # clobbering) if another writer filled `out` since the check in write_dataset.
        try:
            os.replace(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(
                    f"output folder {str(out)!r} was filled by another writer meanwhile; "
                    "nothing was replaced"
                ) from exc
            raise


# The column that dates each table's rows (for time ranges in summaries).
TIME_COLUMNS: dict[str, str] = {
    "items": "created_at",
    "creators": "created_at",
    "events": "ts",
    "moderation": "ts",
    "appeals": "filed_at",
    "labels": "labeled_at",
}
# Enum columns whose value counts say most about a table at a glance.
BREAKDOWNS: dict[str, str] = {
    "items": "format",
    "events": "kind",
    "moderation": "action",
    "appeals": "outcome",
    "labels": "source",
}


def table_summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per table: rows, number of columns and the extra (non-contract) columns."""
    rows = []
    for name, df in tables.items():
        known = set(TABLES[name].column_names) if name in TABLES else set()
        extra = [str(c) for c in df.columns if c not in known]
        rows.append(
            {"table": name, "rows": len(df), "columns": df.shape[1], "extra_columns": extra}
        )
    return pd.DataFrame(rows, columns=["table", "rows", "columns", "extra_columns"])


def describe_dataset(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Summaries of a loaded dataset: per-table rows and time range, label rates, enum counts.

    Returns frames keyed "tables" (table, rows, time_column, start, end), "labels" (issue,
    labels, positives, rate; empty without a labels table) and "breakdown" (table, column,
    value, rows).
    """
    per_table = []
    for name, df in tables.items():
        col = TIME_COLUMNS.get(name)
        times = df[col] if col in df.columns else pd.Series(dtype="datetime64[us, UTC]")
        per_table.append(
            {
                "table": name,
                "rows": len(df),
                "time_column": col,
                "start": times.min() if len(times) else pd.NaT,
                "end": times.max() if len(times) else pd.NaT,
            }
        )
    labels = pd.DataFrame(columns=["issue", "labels", "positives", "rate"])
    if "labels" in tables and len(tables["labels"]):
        g = tables["labels"].groupby("issue", sort=True)["label"]
        labels = pd.DataFrame(
            {"labels": g.size(), "positives": g.sum().astype("int64"), "rate": g.mean()}
        ).reset_index()
    breakdown = []
    for name, col in BREAKDOWNS.items():
        if name in tables and col in tables[name].columns:
            for value, n in tables[name][col].value_counts(dropna=False).sort_index().items():
                breakdown.append({"table": name, "column": col, "value": value, "rows": int(n)})
    return {
        "tables": pd.DataFrame(per_table),
        "labels": labels,
        "breakdown": pd.DataFrame(breakdown, columns=["table", "column", "value", "rows"]),
    }


# Files a dataset folder may declare its name in, in order: `dataset.json` ({"name": ...}, for
# any dataset) and `simulation.json` ({"dataset_name": ...}, written by the simulator).
MANIFESTS: tuple[tuple[str, str], ...] = (
    ("dataset.json", "name"),
    ("simulation.json", "dataset_name"),
)


def dataset_name(path: str | Path) -> str | None:
    """The name a dataset folder declares for itself, or None when it declares none.

    Training uses it to name the registered model, so models of different problems never
    compete for one champion. Raises ValueError when a manifest is unreadable or its name is
    not a non-empty string (a wrong name would file the model under the wrong problem).
    """
    import json

    folder = Path(path)
    for file_name, key in MANIFESTS:
        file = folder / file_name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"dataset manifest {str(file)!r} is not readable JSON: {exc}"
            ) from None
        if not isinstance(data, dict) or key not in data:
            continue
        name = data[key]
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"dataset manifest {str(file)!r}: {key!r} must be a non-empty string, got {name!r}"
            )
        return name.strip()
    return None
