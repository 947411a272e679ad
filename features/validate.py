"""Check raw tables against the data contract and turn CSV text into contract dtypes.

Validation collects every problem at once (a user fixing a file wants the whole list, not one
error per run). Each `Problem` names the table, the column, what is wrong, how many rows and
the first few row numbers (0-based positions in the table; in a CSV file, line = row + 2).

`coerce_table` never loses information: a column is converted only when every value parses;
otherwise it is left as it was and `validate_table` reports the values that did not parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import TABLE_ORDER, TABLES, Column, TableSpec
from features.pit import codes_for, to_ns

if TYPE_CHECKING:
    from features.timespan import TimeOutliers

MAX_EXAMPLE_ROWS = 5

# A timestamp string carries a zone when its time part ends in Z, UTC or a +hh[:mm] offset.
# The time part is required so that a bare date like 2024-01-31 is not read as offset -31.
_TZ_SUFFIX = re.compile(
    r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$",
    re.IGNORECASE,
)
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
# Columns that reference items/creators in other tables (checked when both sides are present).
_ITEM_REFERENCING = ("events", "moderation", "appeals", "labels")


@dataclass
class Problem:
    """One contract violation: where it is, what is wrong, how many rows and which ones."""

    table: str
    column: str | None
    message: str
    rows: list[int] = field(default_factory=list)
    count: int = 0

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"{where}: {self.message}"
        if self.count:
            shown = ", ".join(str(r) for r in self.rows)
            more = ", ..." if self.count > len(self.rows) else ""
            text += f" ({self.count} row{'s' if self.count != 1 else ''}: {shown}{more})"
        return text


class ContractError(ValueError):
    """Raised when tables break the contract; `.problems` holds every problem found."""

    def __init__(self, problems: list[Problem], context: str = "dataset") -> None:
        self.problems = list(problems)
        lines = [
            f"{len(self.problems)} contract problem(s) in {context} "
            "(rows are 0-based positions in each table; in a CSV file, line = row + 2):"
        ]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    """Result of reading a column as one contract kind (shared by coerce and validate)."""

    values: pd.Series | None  # the converted column, or None if some value did not convert
    bad: np.ndarray  # rows whose value cannot be read as the kind
    naive: np.ndarray  # timestamp rows without a time zone
    detail: str = ""  # a short reason for the bad rows
    # When some values did not convert: the readable ones (others null), so that range and
    # enum checks can still report problems in the readable rows in the same run.
    partial: pd.Series | None = None


def _mask(s: pd.Series, value: bool = False) -> np.ndarray:
    return np.full(len(s), value, dtype=bool)


def _is_text(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.StringDtype) or s.dtype.kind == "O"


def _non_str(s: pd.Series) -> np.ndarray:
    """Rows holding a non-null value that is not a Python str (for object columns)."""
    if isinstance(s.dtype, pd.StringDtype):
        return _mask(s)
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return _mask(s)  # the common case, checked in C without a Python loop
    notna = s.notna().to_numpy()
    return notna & ~np.fromiter((isinstance(v, str) for v in s), dtype=bool, count=len(s))


def _isin(s: pd.Series, values: Any) -> np.ndarray:
    """`s.isin(values)` as a bool array; Arrow's hash lookup when `s` is Arrow-backed text.

    pandas' isin on Arrow strings is several times slower than pyarrow.compute.is_in, which
    matters for referential checks over millions of events.
    """
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        try:
            arr = pa.array(s.array)
            value_set = pa.array(pd.Series(values, dtype="str").dropna().array).cast(arr.type)
            hit = pc.is_in(arr, value_set=value_set)
            return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)
        except (pa.ArrowException, TypeError, ValueError):
            pass
    return s.isin(values).to_numpy(dtype=bool)


def _dtype_matches(s: pd.Series, kind: str) -> bool:
    """True when the column already has the contract dtype for `kind`."""
    dt = s.dtype
    if kind == "str":
        return isinstance(dt, pd.StringDtype)
    if kind == "float":
        return pd.api.types.is_float_dtype(dt)
    if kind == "int":
        return pd.api.types.is_integer_dtype(dt) and not pd.api.types.is_bool_dtype(dt)
    if kind == "bool":
        return pd.api.types.is_bool_dtype(dt)
    if kind == "timestamp":
        return isinstance(dt, pd.DatetimeTZDtype) and str(dt.tz) == "UTC"
    raise ValueError(f"unknown column kind {kind!r}; expected str, float, int, bool or timestamp")


def _parse_str(s: pd.Series) -> _Parsed:
    if _is_text(s):
        bad = _non_str(s)
        if bad.any():
            return _Parsed(None, bad, _mask(s), "not text", s.where(~bad).astype("str"))
        return _Parsed(s.astype("str"), bad, _mask(s))
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        # Integer ids (e.g. numeric item ids) convert to text losslessly; floats would not.
        out = s.astype("str")
        out[s.isna().to_numpy()] = np.nan
        return _Parsed(out, _mask(s), _mask(s))
    return _Parsed(None, s.notna().to_numpy(), _mask(s), f"{s.dtype} values, expected text")


def _to_numbers(s: pd.Series) -> tuple[pd.Series | None, np.ndarray, str]:
    """Read a column as float64; returns (values, bad rows, reason); bad rows are NaN."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return None, s.notna().to_numpy(), "true/false values, expected numbers"
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype("float64"), _mask(s), ""
    if _is_text(s):
        non_str = _non_str(s)
        text = s.where(~non_str, None) if non_str.any() else s
        stripped = text.astype("str").str.strip()
        num = pd.to_numeric(stripped, errors="coerce").astype("float64")
        bad = (s.notna().to_numpy() & num.isna().to_numpy()) | non_str
        return num, bad, "not a number" if bad.any() else ""
    return None, s.notna().to_numpy(), f"{s.dtype} values, expected numbers"


def _parse_float(s: pd.Series) -> _Parsed:
    num, bad, why = _to_numbers(s)
    if bad.any():
        return _Parsed(None, bad, _mask(s), why, num)
    return _Parsed(num, bad, _mask(s), why)


def _parse_int(s: pd.Series) -> _Parsed:
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return _Parsed(s, _mask(s), _mask(s))
    if pd.api.types.is_bool_dtype(s.dtype):
        # True/False -> 1/0 is lossless (e.g. a 0/1 label kept as bool).
        return _Parsed(s.astype("Int64" if s.isna().any() else "int64"), _mask(s), _mask(s))
    num, bad, why = _to_numbers(s)
    if num is None:
        return _Parsed(None, bad, _mask(s), why)
    frac = num.notna().to_numpy() & (np.mod(num.fillna(0).to_numpy(), 1) != 0)
    if bad.any() or frac.any():
        why = (
            why
            if not frac.any()
            else ("not a whole number" if not bad.any() else f"{why} or not a whole number")
        )
        return _Parsed(None, bad | frac, _mask(s), why, num.where(~frac))
    if num.isna().any():
        # Keep nulls visible (nullable Int64) so validation can report them.
        return _Parsed(num.astype("Int64"), bad, _mask(s))
    return _Parsed(num.astype("int64"), bad, _mask(s))


def _parse_bool(s: pd.Series) -> _Parsed:
    notna = s.notna().to_numpy()
    if pd.api.types.is_bool_dtype(s.dtype):
        return _Parsed(s, _mask(s), _mask(s))
    if pd.api.types.is_numeric_dtype(s.dtype):
        num = s.astype("float64")
        bad = notna & ~num.isin([0.0, 1.0]).to_numpy()
        if bad.any():
            return _Parsed(None, bad, _mask(s), "not 0/1")
        out = num.map({0.0: False, 1.0: True})
    elif _is_text(s):
        non_str = _non_str(s)
        key = s.where(~non_str, None).astype("str").str.strip().str.lower()
        true = key.isin(_TRUE).to_numpy()
        false = key.isin(_FALSE).to_numpy()
        bad = notna & ~(true | false)
        if bad.any():
            return _Parsed(None, bad, _mask(s), "not true/false/1/0")
        out = pd.Series(np.where(true, True, np.where(false, False, None)), index=s.index)
    else:
        return _Parsed(None, notna, _mask(s), f"{s.dtype} values, expected true/false")
    if not notna.all():
        return _Parsed(out.astype("boolean"), _mask(s), _mask(s))
    return _Parsed(out.astype(bool), _mask(s), _mask(s))


def parse_timestamp_text(s: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse text timestamps to UTC; returns (values, unparseable rows, rows without zone).

    Values without a zone are NaT in the result and flagged, never assumed to be UTC.
    """
    text = s.astype("str").str.strip()
    notna = text.notna().to_numpy()
    has_zone = _has_zone(text)
    out = _to_utc(text.where(has_zone))
    bad = has_zone & out.isna().to_numpy()
    naive = notna & ~has_zone
    if naive.any():
        # Only to tell "no zone" from "not a timestamp at all"; these values are not used.
        unreadable = naive & _to_utc(text.where(naive)).isna().to_numpy()
        bad |= unreadable
        naive &= ~unreadable
    return out, bad, naive


def _has_zone(text: pd.Series) -> np.ndarray:
    """Rows whose text ends in a time with a zone (`_TZ_SUFFIX`), matched by Arrow's RE2 in
    one vectorized call: per-row Python regex calls were the largest cost of checking an
    ingest batch (every event has a timestamp)."""
    arr = pa.array(text.to_numpy(dtype=object, na_value=None), type=pa.string())
    hit = pc.match_substring_regex(arr, _TZ_SUFFIX.pattern, ignore_case=True)
    return hit.fill_null(False).to_numpy(zero_copy_only=False)


def _to_utc(text: pd.Series) -> pd.Series:
    out = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    retry = text.notna().to_numpy() & out.isna().to_numpy()
    if retry.any():
        # Non-ISO layouts (e.g. "01/02/2024 10:00 +01:00") are slower to parse; only retry them.
        out = out.copy()
        out[retry] = pd.to_datetime(text[retry], utc=True, format="mixed", errors="coerce")
    return out


def _parse_timestamp(s: pd.Series) -> _Parsed:
    notna = s.notna().to_numpy()
    dt = s.dtype
    if isinstance(dt, pd.DatetimeTZDtype):
        return _Parsed(s.dt.tz_convert("UTC"), _mask(s), _mask(s))
    if pd.api.types.is_datetime64_dtype(dt):
        return _Parsed(None, _mask(s), notna, "")
    if isinstance(dt, pd.StringDtype) or (dt.kind == "O" and not _non_str(s).any()):
        out, bad, naive = parse_timestamp_text(s)
        ok = not bad.any() and not naive.any()
        return _Parsed(out if ok else None, bad, naive, "not a timestamp")
    if dt.kind == "O":
        # Mixed Python objects (datetimes, strings, ...): classify element by element.
        bad, naive = _mask(s), _mask(s)
        values: list[Any] = []
        for i, v in enumerate(s):
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
                values.append(pd.NaT)
            elif isinstance(v, datetime):
                naive[i] = v.tzinfo is None
                values.append(
                    pd.Timestamp(v) if v.tzinfo is None else pd.Timestamp(v).tz_convert("UTC")
                )
            elif isinstance(v, str):
                one, b, n = parse_timestamp_text(pd.Series([v], dtype="str"))
                bad[i], naive[i] = b[0], n[0]
                values.append(one.iloc[0])
            else:
                bad[i] = True
                values.append(pd.NaT)
        if bad.any() or naive.any():
            return _Parsed(None, bad, naive, "not a timestamp")
        return _Parsed(pd.Series(pd.to_datetime(values, utc=True), index=s.index), bad, naive)
    return _Parsed(None, notna, _mask(s), f"{dt} values, expected timestamps")


def _parse(kind: str, s: pd.Series) -> _Parsed:
    """Read column `s` as contract kind `kind` (see `_Parsed`)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        # Categories are judged by their values; the result takes the contract dtype.
        s = s.astype(s.cat.categories.dtype)
    return _PARSERS[kind](s)


_PARSERS = {
    "str": _parse_str,
    "float": _parse_float,
    "int": _parse_int,
    "bool": _parse_bool,
    "timestamp": _parse_timestamp,
}


_NULL_DTYPES = {
    "str": "str",
    "float": "float64",
    "int": "Int64",
    "bool": "boolean",
    "timestamp": "datetime64[us, UTC]",
}


def _spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(
            f"unknown table {name!r}; expected one of {', '.join(TABLE_ORDER)}"
        ) from None


# --------------------------------------------------------------------------- public API


def coerce_table(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Return `df` with each contract column converted to its contract dtype where lossless.

    Text from CSV becomes numbers, booleans (true/false/1/0/yes/no) and UTC timestamps.
    A column with any value that does not convert (or a timestamp without a zone) is left
    unchanged so that `validate_table` reports those rows; nothing becomes NaN silently.
    Extra columns are kept as they are.
    """
    spec = _spec(name)
    out = df.copy(deep=False)  # copy-on-write: replacing columns never touches `df`
    repeated = set(out.columns[out.columns.duplicated()])
    for col in spec.columns:
        # A repeated column name is ambiguous; validate_table reports it, coerce leaves it.
        if col.name not in out.columns or col.name in repeated:
            continue
        if _dtype_matches(out[col.name], col.kind):
            continue
        if out[col.name].isna().all():
            # A column without values fits any kind; give it the kind's null-holding dtype.
            out[col.name] = pd.Series(
                pd.array([None] * len(out), dtype=_NULL_DTYPES[col.kind]), index=out.index
            )
            continue
        parsed = _parse(col.kind, out[col.name])
        if parsed.values is not None:
            out[col.name] = parsed.values
    return out


def _rows(mask: np.ndarray) -> tuple[list[int], int]:
    idx = np.flatnonzero(mask)
    return [int(i) for i in idx[:MAX_EXAMPLE_ROWS]], int(idx.size)


def _problem(table: str, column: str | None, message: str, mask: np.ndarray) -> Problem:
    rows, count = _rows(mask)
    return Problem(table, column, message, rows, count)


# A bad value quoted in a message is cut to this many characters: a 100,000-character
# string would otherwise come back whole in the error (and five of them per column).
MAX_QUOTED = 80


def _quoted(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else f"{text[: MAX_QUOTED - 1]}… ({len(text)} chars)"


def _example(s: pd.Series, mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    if not idx.size:
        return ""
    value = s.iloc[int(idx[0])]
    return _quoted(repr(value.item() if isinstance(value, np.generic) else value))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_column(table: str, col: Column, s: pd.Series) -> list[Problem]:
    problems: list[Problem] = []
    notna = s.notna().to_numpy()
    values = s
    if not _dtype_matches(s, col.kind) and not (notna.size and not notna.any()):
        parsed = _parse(col.kind, s)
        if parsed.bad.any():
            msg = f"{parsed.detail or 'wrong type'} (expected {col.kind}, got {s.dtype}), e.g. {_example(s, parsed.bad)}"
            problems.append(_problem(table, col.name, msg, parsed.bad))
        if parsed.naive.any():
            if pd.api.types.is_datetime64_dtype(s.dtype):
                fix = "localize them (e.g. .dt.tz_localize('UTC')) if that is their zone"
            else:
                fix = "give an explicit offset such as Z or +00:00"
            msg = f"timestamps without time zone, e.g. {_example(s, parsed.naive)}; {fix} (never assumed UTC)"
            problems.append(_problem(table, col.name, msg, parsed.naive))
        if parsed.values is None:
            problems += _check_nulls(table, col, notna)
            if parsed.partial is None:
                return problems
            # Go on with the readable values so their own problems show up in this run too.
            return [*problems, *_check_values(table, col, s, parsed.partial)]
        if not parsed.bad.any() and not parsed.naive.any():
            problems.append(
                Problem(
                    table,
                    col.name,
                    f"stored as {s.dtype}, expected {col.kind} (coerce_table converts it)",
                )
            )
        values = parsed.values
    problems += _check_nulls(table, col, notna)
    return [*problems, *_check_values(table, col, s, values)]


def _check_values(table: str, col: Column, s: pd.Series, values: pd.Series) -> list[Problem]:
    """Enum, range, empty-id and uniqueness checks on converted `values` (nulls skipped)."""
    problems: list[Problem] = []
    notna = values.notna().to_numpy()
    if col.allowed is not None:
        bad = notna & ~_isin(values, col.allowed)
        if bad.any():
            seen = sorted({str(v) for v in values[bad].unique()[:5]})
            quoted = ", ".join(_quoted(repr(v)) for v in seen)
            msg = f"values not allowed: {quoted}; allowed: {', '.join(col.allowed)}"
            problems.append(_problem(table, col.name, msg, bad))
    if col.value_range is not None and col.kind in ("int", "float"):
        lo, hi = col.value_range
        num = values.astype("float64").to_numpy()
        with np.errstate(invalid="ignore"):
            # an open upper end still wants a finite number: an infinite duration or
            # follower count is no measurement
            bad = notna & ((num < lo) | (num > hi) | np.isinf(num))
        if bad.any():
            want = f">= {_fmt(lo)} and finite" if np.isinf(hi) else f"in {_fmt(lo)}..{_fmt(hi)}"
            if col.kind == "int" and hi - lo == 1:
                want = f"{_fmt(lo)} or {_fmt(hi)}"
            msg = f"values out of range (expected {want}), e.g. {_example(s, bad)}"
            problems.append(_problem(table, col.name, msg, bad))
    if col.kind == "str" and col.name.endswith("_id") and not col.nullable:
        empty = notna & (values.astype("str").str.strip() == "").to_numpy()
        if empty.any():
            problems.append(_problem(table, col.name, "empty ids", empty))
    if col.unique:
        dup = (notna & values.duplicated(keep=False).to_numpy()).astype(bool)
        if dup.any():
            n_vals = values[dup].nunique()
            msg = f"duplicate values ({n_vals} value(s) repeated, e.g. {_example(s, dup)})"
            problems.append(_problem(table, col.name, msg, dup))
    return problems


def _check_nulls(table: str, col: Column, notna: np.ndarray) -> list[Problem]:
    if col.nullable or notna.all():
        return []
    return [_problem(table, col.name, "nulls in a non-nullable column", ~notna)]


def validate_table(name: str, df: pd.DataFrame) -> list[Problem]:
    """Return every contract problem of one table (an empty list when it is valid)."""
    spec = _spec(name)
    if not isinstance(df, pd.DataFrame):
        return [Problem(name, None, f"expected a pandas DataFrame, got {type(df).__name__}")]
    problems: list[Problem] = []
    dup_cols = df.columns[df.columns.duplicated()].unique().tolist()
    for c in dup_cols:
        problems.append(Problem(name, str(c), "column appears more than once"))
    for col in spec.columns:
        if col.name not in df.columns:
            problems.append(
                Problem(
                    name,
                    col.name,
                    f"missing column (expected columns: {', '.join(spec.column_names)})",
                )
            )
        elif col.name not in dup_cols:
            problems += _check_column(name, col, df[col.name].reset_index(drop=True))
    if name == "appeals" and not problems:
        early = (df["resolved_at"] < df["filed_at"]).fillna(False).to_numpy(dtype=bool)
        if early.any():
            problems.append(_problem(name, "resolved_at", "resolved before it was filed", early))
    return problems


def validate_dataset(tables: Mapping[str, pd.DataFrame]) -> list[Problem]:
    """Return every problem of a whole dataset: per table, then references between tables.

    `items` must be present; other tables are optional. Unknown table names are problems.
    Cross-table checks run only on columns that passed their own checks.
    """
    problems: list[Problem] = []
    for name in tables:
        if name not in TABLES:
            problems.append(
                Problem(name, None, f"unknown table; expected one of {', '.join(TABLE_ORDER)}")
            )
    for name in TABLE_ORDER:
        if TABLES[name].required and name not in tables:
            problems.append(Problem(name, None, "required table is missing"))
    bad_cols: set[tuple[str, str | None]] = set()
    for name in TABLE_ORDER:
        if name in tables:
            found = validate_table(name, tables[name])
            problems += found
            bad_cols |= {(p.table, p.column) for p in found}

    def usable(table: str, column: str) -> bool:
        df = tables.get(table)
        return (
            isinstance(df, pd.DataFrame)
            and column in df.columns
            and (table, column) not in bad_cols
        )

    if usable("items", "item_id"):
        known = tables["items"]["item_id"]
        for name in _ITEM_REFERENCING:
            if usable(name, "item_id"):
                ids = tables[name]["item_id"].reset_index(drop=True)
                bad = ids.notna().to_numpy() & ~_isin(ids, known)
                if bad.any():
                    msg = f"item_id not in items, e.g. {_example(ids, bad)}"
                    problems.append(_problem(name, "item_id", msg, bad))
    if usable("items", "creator_id") and usable("creators", "creator_id"):
        ids = tables["items"]["creator_id"].reset_index(drop=True)
        bad = ids.notna().to_numpy() & ~_isin(ids, tables["creators"]["creator_id"])
        if bad.any():
            msg = f"creator_id not in creators, e.g. {_example(ids, bad)}"
            problems.append(_problem("items", "creator_id", msg, bad))
    return problems


def check_dataset(tables: Mapping[str, pd.DataFrame], context: str = "dataset") -> None:
    """Raise `ContractError` listing every problem when the dataset breaks the contract."""
    problems = validate_dataset(tables)
    if problems:
        raise ContractError(problems, context)


# --------------------------------------------------------------------------- warnings

# Rows dated before their item was created, per table: (table, its time column).
DATED_AFTER_CREATION = (("events", "ts"), ("moderation", "ts"), ("appeals", "filed_at"))


def dataset_warnings(tables: Mapping[str, pd.DataFrame]) -> list[Problem]:
    """What follows the contract but is probably wrong, for a dataset that passed
    `validate_dataset`: never an error (real data has such rows), always said.

    - timestamps isolated far beyond the rest of the data (`features.timespan`): ignored as
      the end of data;
    - rows dated before their item's `created_at` (clock skew, or a wrong id or time):
      counted in the item's snapshots as they are (the counting rule is not changed);
    - conflicting labels: the same item, issue and `labeled_at` labeled 0 and 1
      (training reads 1, `label_conflicts`).

    The Dask engine (`features.dataset_dask`) finds the first two on the cluster and hands
    them to `warnings_of`, so both engines print the same lines.
    """
    from features.timespan import time_outliers

    items = ItemTimes.of(tables.get("items"))
    early = [
        early_rows(name, column, tables.get(name), items) for name, column in DATED_AFTER_CREATION
    ]
    return warnings_of(time_outliers(tables), early, tables.get("labels"))


def warnings_of(
    outliers: TimeOutliers | None, early: Sequence[EarlyRows | None], labels: pd.DataFrame | None
) -> list[Problem]:
    """The warnings in the order `dataset_warnings` gives them, from the late rows, the rows
    dated before their item (per table of `DATED_AFTER_CREATION`) and the labels table."""
    problems = outliers.problems() if outliers is not None else []
    problems += [e.problem() for e in early if e is not None]
    conflicts = label_conflicts(labels)
    if labels is not None and conflicts.any():
        labels = labels.reset_index(drop=True)
        msg = (
            "the same item, issue and labeled_at labeled both 0 and 1 (training reads 1), "
            f"e.g. {_example(labels['item_id'], conflicts)}"
        )
        problems.append(_problem("labels", "label", msg, conflicts))
    return problems


@dataclass(frozen=True)
class ItemTimes:
    """Each item's `created_at` (ns, NaT as int64 min) by item id: what the rows dated
    before their item are judged against (sent once to every Dask worker)."""

    ids: pd.Index
    created_ns: np.ndarray

    @classmethod
    def of(cls, items: pd.DataFrame | None) -> ItemTimes | None:
        if items is None or not len(items):
            return None
        return cls(pd.Index(items["item_id"].astype("object")), to_ns(items["created_at"]))


@dataclass(frozen=True)
class EarlyRows:
    """Rows of a table (or of a piece of it) dated before their item's `created_at`.

    It keeps what the warning says, so that the pieces of a table (in table order) add up
    to the whole table's warning (`merge_early`): the same count, largest lead and first
    row as one pass over the table.
    """

    table: str
    column: str
    rows: tuple[int, ...]  # the first few, 0-based positions in the table
    count: int
    lead_ns: int  # the largest lead over the item's created_at
    at_ns: int  # the first row's time
    born_ns: int  # the first row's item's created_at

    def problem(self) -> Problem:
        lead = pd.Timedelta(self.lead_ns, unit="ns")
        first = self.rows[0]
        msg = (
            f"dated before the item's created_at (by up to {lead}), e.g. row {first}: "
            f"{pd.Timestamp(self.at_ns, tz='UTC').isoformat()} for an item created "
            f"{pd.Timestamp(self.born_ns, tz='UTC').isoformat()}; counted in the item's "
            "snapshots as they are (a small lead is clock skew)"
        )
        return Problem(self.table, self.column, msg, list(self.rows), self.count)


def early_rows(
    table: str,
    column: str,
    df: pd.DataFrame | None,
    items: ItemTimes | None,
    offset: int = 0,
) -> EarlyRows | None:
    """The rows of `df` (a validated table, or its piece starting at row `offset`) dated by
    `column` before their item's created_at; None when there are none."""
    if items is None or df is None or not len(df):
        return None
    nat = np.iinfo(np.int64).min
    item = codes_for(df["item_id"], items.ids)
    at = to_ns(df[column])
    born = np.where(item >= 0, items.created_ns[np.maximum(item, 0)], nat)
    early = (item >= 0) & (at != nat) & (born != nat) & (at < born)
    if not early.any():
        return None
    idx = np.flatnonzero(early)
    first = int(idx[0])
    return EarlyRows(
        table,
        column,
        tuple(int(i) + offset for i in idx[:MAX_EXAMPLE_ROWS]),
        int(idx.size),
        int((born - at)[early].max()),
        int(at[first]),
        int(born[first]),
    )


def merge_early(pieces: Sequence[EarlyRows | None]) -> EarlyRows | None:
    """The pieces of one table (in table order) as the whole table's `EarlyRows`."""
    found = [p for p in pieces if p is not None]
    if not found:
        return None
    first = found[0]
    return EarlyRows(
        first.table,
        first.column,
        tuple(r for p in found for r in p.rows)[:MAX_EXAMPLE_ROWS],
        sum(p.count for p in found),
        max(p.lead_ns for p in found),
        first.at_ns,
        first.born_ns,
    )


def label_conflicts(labels: pd.DataFrame | None) -> np.ndarray:
    """Rows of `labels` whose item, issue and labeled_at carry both 0 and 1.

    Training resolves such a tie to 1 (`training.labels.labels_after`): an analyst saw
    the issue, so the item is not a clean negative. Reported, never silently.
    """
    if labels is None or not len(labels):
        return np.zeros(0 if labels is None else len(labels), dtype=bool)
    key = [labels["item_id"].astype("object"), labels["issue"].astype("object")]
    key.append(pd.Series(to_ns(labels["labeled_at"]), index=labels.index))
    spread = labels["label"].astype("float64").groupby(key, dropna=True).transform("nunique")
    return (spread > 1).to_numpy(dtype=bool)
