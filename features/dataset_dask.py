"""Datasets past one machine: validation part by part on Dask, and events read by the workers.

The big tables (events, moderation, appeals, labels) are read one piece at a time
(`features.io.table_parts`: a part of a partitioned folder, or row groups of one big file) in
Dask tasks, each checked with the same `validate_table` as the pandas path and against the
item ids (broadcast once). Problems from different pieces are merged into the messages the
pandas path prints: the same text (its example is the table's first bad row, since pieces
are in table order), the total count, and the first rows as 0-based positions in the table.
Only items and creators (one row per item or creator, the keys everything refers to) are
read whole on the client.

`check_folder_dask` also gives the warnings of `features.validate.dataset_warnings`, with
the same text: rows of events (moderation, appeals) dated before their item are found piece
by piece in the validation pass with the pandas function (the items' created_at sent once
to every worker) and added up in table order; the end of data and the late events come from
the events' extremes on the cluster (`features.snapshot_dask.end_of_data_on`, as the
snapshots find them, reading only `ts`); moderation, appeals and labels are small and read
on the client for the rest (their late rows, conflicting labels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import TABLE_ORDER, TABLES
from features.io import TablePart, dataset_files, read_table, table_parts
from features.validate import (
    DATED_AFTER_CREATION,
    MAX_EXAMPLE_ROWS,
    ContractError,
    EarlyRows,
    ItemTimes,
    Problem,
    _example,
    _isin,
    _problem,
    early_rows,
    merge_early,
    validate_dataset,
    validate_table,
    warnings_of,
)

# Tables read whole on the client: the keys other tables refer to (unique per row).
KEY_TABLES = ("items", "creators")


@dataclass
class PieceCheck:
    """What one piece of a table showed: its problems (table row numbers) and shape."""

    problems: list[Problem] = field(default_factory=list)
    references: list[Problem] = field(default_factory=list)  # item_id not in items
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    early: EarlyRows | None = None  # rows dated before their item (when asked, valid pieces)


def _shift(problem: Problem, offset: int) -> Problem:
    return Problem(
        problem.table,
        problem.column,
        problem.message,
        [r + offset for r in problem.rows],
        problem.count,
    )


def check_piece(
    name: str,
    piece: TablePart,
    known_items: pd.Series | None,
    *,
    frame: pd.DataFrame | None = None,
    item_times: ItemTimes | None = None,
) -> PieceCheck:
    """Validate one piece (read here unless `frame` is given) with the pandas checks; rows
    become positions in the whole table. With `item_times`, a valid piece of a table with
    a time (`DATED_AFTER_CREATION`) also gives its rows dated before their item."""
    df = piece.read(name) if frame is None else frame
    found = validate_table(name, df)
    early = None
    dated = dict(DATED_AFTER_CREATION)
    if item_times is not None and not found and name in dated:
        early = early_rows(name, dated[name], df, item_times, piece.offset)
    references: list[Problem] = []
    bad_item_id = any(p.column == "item_id" for p in found)
    if known_items is not None and "item_id" in df.columns and not bad_item_id:
        ids = df["item_id"].reset_index(drop=True)
        bad = ids.notna().to_numpy() & ~_isin(ids, known_items)
        if bad.any():
            msg = f"item_id not in items, e.g. {_example(ids, bad)}"
            references.append(_problem(name, "item_id", msg, bad))
    return PieceCheck(
        problems=[_shift(p, piece.offset) for p in found],
        references=[_shift(p, piece.offset) for p in references],
        rows=len(df),
        columns=[str(c) for c in df.columns],
        early=early,
    )


def _kind(problem: Problem) -> tuple[str, str | None, str]:
    """Problems of one kind in different pieces differ only in their example: merge on the rest."""
    message = re.split(r", e\.g\. |: ", problem.message, maxsplit=1)[0]
    return problem.table, problem.column, message


def merge_problems(groups: Sequence[Sequence[Problem]]) -> list[Problem]:
    """Problems of the pieces of a table (in table order) as the whole table's problems."""
    merged: dict[tuple[str, str | None, str], Problem] = {}
    for problems in groups:
        for p in problems:
            key = _kind(p)
            if key not in merged:
                merged[key] = Problem(p.table, p.column, p.message, list(p.rows), p.count)
                continue
            m = merged[key]
            m.rows = (m.rows + p.rows)[:MAX_EXAMPLE_ROWS]
            m.count += p.count
    return list(merged.values())


@dataclass
class FolderCheck:
    """A valid dataset folder checked on Dask: its per-table summary and its warnings."""

    summary: pd.DataFrame
    warnings: list[Problem]


def validate_folder_dask(
    path: str | Path,
    *,
    scheduler: str | None = None,
    progress: bool = False,
    target_rows: int = 2_000_000,
) -> pd.DataFrame:
    """Validate a dataset folder on Dask; return the per-table summary (table, rows,
    columns, extra_columns) as `features.io.table_summary` does, or raise ContractError
    with the problems the pandas path reports (no warnings: see `check_folder_dask`)."""
    check = check_folder_dask(
        path, scheduler=scheduler, progress=progress, target_rows=target_rows, warnings=False
    )
    return check.summary


def check_folder_dask(
    path: str | Path,
    *,
    scheduler: str | None = None,
    progress: bool = False,
    target_rows: int = 2_000_000,
    warnings: bool = True,
) -> FolderCheck:
    """`validate_folder_dask`, and (`warnings`) the folder's `dataset_warnings` as the pandas
    path gives them, the events never whole on the client (see the module doc)."""
    from common.cluster import dask_client

    folder = Path(path)
    files = dataset_files(folder)
    if "items" not in files:
        raise FileNotFoundError(
            f"dataset folder {str(folder)!r} has no items table; expected items.parquet or "
            f"items.csv (optional: {', '.join(n for n in TABLE_ORDER if n != 'items')})"
        )
    keys = {n: read_table(n, files[n]) for n in KEY_TABLES if n in files}
    key_problems = validate_dataset(keys)  # key tables and the items -> creators reference
    bad_cols = {(p.table, p.column) for p in key_problems}
    known = keys["items"]["item_id"] if ("items", "item_id") not in bad_cols else None
    item_times = None
    if warnings and known is not None and ("items", "created_at") not in bad_cols:
        item_times = ItemTimes.of(keys["items"])
    big = [n for n in TABLE_ORDER if n in files and n not in KEY_TABLES]
    pieces = {n: table_parts(files[n], target_rows=target_rows) for n in big}
    checks: dict[str, list[PieceCheck]] = {}
    total = sum(len(v) for v in pieces.values())
    with dask_client(scheduler, announce=progress) if total else nullcontext() as client:
        if total:
            checks = _check_pieces(client, pieces, known, item_times, progress)
        problems = _folder_problems(key_problems, keys, checks)
        if problems:
            raise ContractError(problems, context=f"dataset {str(folder)!r}")
        found = _folder_warnings(files, keys, pieces, checks) if warnings else []
    return FolderCheck(_summary(keys, checks), found)


def _check_pieces(
    client: Any,
    pieces: Mapping[str, list[TablePart]],
    known: pd.Series | None,
    item_times: ItemTimes | None,
    progress: bool,
) -> dict[str, list[PieceCheck]]:
    """`check_piece` of every piece on the cluster, per table in table order."""
    import dask

    from common.cluster import gather_with_progress

    known_future, times_future = client.scatter([known, item_times], broadcast=True, hash=False)
    tasks = [
        dask.delayed(check_piece)(
            n, piece, known_future, item_times=times_future, dask_key_name=f"check-{n}-{i}"
        )
        for n in pieces
        for i, piece in enumerate(pieces[n])
    ]
    results = gather_with_progress(client, tasks, "validate (dask)", progress=progress, unit="part")
    it = iter(results)
    return {n: [next(it) for _ in pieces[n]] for n in pieces}


def _folder_problems(
    key_problems: list[Problem],
    keys: Mapping[str, pd.DataFrame],
    checks: Mapping[str, list[PieceCheck]],
) -> list[Problem]:
    """Same order as validate_dataset: each table's own problems in contract order, then
    the references between tables."""
    own: list[Problem] = []
    references: list[Problem] = []
    key_own = [p for p in key_problems if not p.message.startswith("creator_id not in")]
    key_refs = [p for p in key_problems if p.message.startswith("creator_id not in")]
    for name in TABLE_ORDER:
        if name in keys:
            own += [p for p in key_own if p.table == name]
        elif name in checks:
            table_problems = merge_problems([c.problems for c in checks[name]])
            own += table_problems
            if not any(p.column == "item_id" for p in table_problems):
                references += merge_problems([c.references for c in checks[name]])
    return own + references + key_refs


def _folder_warnings(
    files: Mapping[str, Path],
    keys: Mapping[str, pd.DataFrame],
    pieces: Mapping[str, list[TablePart]],
    checks: Mapping[str, list[PieceCheck]],
) -> list[Problem]:
    """`dataset_warnings` of a valid folder: the events' late rows from their extremes on the
    cluster, every table's rows dated before their item added up from its pieces, and the
    small tables (read here) for the rest."""
    from features.snapshot_dask import end_of_data_on
    from features.timespan import time_outliers

    small = dict(keys)
    small |= {n: read_table(n, files[n]) for n in ("moderation", "appeals", "labels") if n in files}
    count = sum(c.rows for c in checks.get("events", ()))
    if count:
        _, outliers = end_of_data_on(_event_times(pieces["events"]), count, small)
    else:
        outliers = time_outliers(small)
    early = [merge_early([c.early for c in checks.get(n, ())]) for n, _ in DATED_AFTER_CREATION]
    return warnings_of(outliers, early, small.get("labels"))


def _event_times(pieces: Sequence[TablePart]) -> Any:
    """The events' `ts` (ns) and each row's position in the table (ROW), a dask DataFrame
    read piece by piece on the workers: what `end_of_data_on` reads (only that column of a
    Parquet piece is read)."""
    import dask
    import dask.dataframe as dd

    from features.snapshot_dask import ROW

    meta = pd.DataFrame(
        {"ts": pd.Series(dtype="datetime64[ns, UTC]"), ROW: pd.Series(dtype="int64")}
    )
    return dd.from_delayed([dask.delayed(_piece_times)(p) for p in pieces], meta=meta)


def _piece_times(piece: TablePart) -> pd.DataFrame:
    from features.snapshot_dask import ROW

    ts = piece.read("events", columns=["ts"])["ts"].dt.as_unit("ns")
    rows = np.arange(piece.offset, piece.offset + len(ts), dtype=np.int64)
    return pd.DataFrame({"ts": ts, ROW: rows}, index=ts.index)


def _summary(keys: Mapping[str, pd.DataFrame], checks: Mapping[str, list[PieceCheck]]) -> Any:
    rows = []
    for name in TABLE_ORDER:
        if name in keys:
            columns = [str(c) for c in keys[name].columns]
            n = len(keys[name])
        elif name in checks:
            columns = checks[name][0].columns if checks[name] else []
            n = int(np.sum([c.rows for c in checks[name]]))
        else:
            continue
        known = set(TABLES[name].column_names)
        rows.append(
            {
                "table": name,
                "rows": n,
                "columns": len(columns),
                "extra_columns": [c for c in columns if c not in known],
            }
        )
    return pd.DataFrame(rows, columns=["table", "rows", "columns", "extra_columns"])


def _read_kinds(piece: TablePart, known_items: pd.Series | None, kinds: Sequence[str]) -> Any:
    from features.snapshot_dask import ROW, _read_checked

    df = _read_checked(piece, known_items)
    return df[df["kind"].astype("str").isin(list(kinds)).to_numpy()].drop(columns=[ROW])


def load_dataset_dask(
    path: str | Path,
    *,
    event_kinds: Sequence[str],
    scheduler: str | None = None,
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """A dataset folder as `load_dataset` returns it, except that the events keep only the
    rows of `event_kinds` (in table order): the workers read and validate every piece and
    send back just those rows, so a step that reads a few kinds of events (discovery: the
    comments and reports) never holds the views on the client."""
    import dask

    from common.cluster import dask_client, gather_with_progress
    from features.validate import check_dataset

    folder = Path(path)
    files = dataset_files(folder)
    if "items" not in files:
        raise FileNotFoundError(
            f"dataset folder {str(folder)!r} has no items table; expected items.parquet or "
            "items.csv"
        )
    tables = {n: read_table(n, f) for n, f in files.items() if n != "events"}
    check_dataset(tables, context=f"dataset {str(folder)!r}")
    if "events" in files:
        pieces = table_parts(files["events"])
        with dask_client(scheduler, announce=progress) as client:
            [known] = client.scatter([tables["items"]["item_id"]], broadcast=True, hash=False)
            tasks = [dask.delayed(_read_kinds)(p, known, tuple(event_kinds)) for p in pieces]
            frames = gather_with_progress(
                client, tasks, "events (dask)", progress=progress, unit="part"
            )
        tables["events"] = pd.concat(frames, ignore_index=True)
    return {n: tables[n] for n in TABLE_ORDER if n in tables}
