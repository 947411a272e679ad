"""Flat datasets: one row per item with counters already aggregated, described by a TOML spec.

The spec names the file and each column's role (id, time, text, numeric, categorical) and the
issue labels with their positive value. Without an `id` column (a file of just text and
label, like the UCI SMS spam collection) an item's id is its 0-based row number in the file.
A row with a blank id, time or (to train) label, or an unreadable value (a number, time or
label that cannot be read), is dropped and reported with a reason. A blank feature is kept
as missing, never filled with zeros: an empty text, a missing number (the models handle
missing values), an empty category; `FlatDataset.missing` counts them. Example spec (paths
resolve against the spec file's folder):

    name = "tiktok_claims"
    path = "../../data/tiktok_claims.csv"
    id = "video_id"
    text = ["video_transcription_text"]
    numeric = ["video_duration_sec", "video_view_count"]
    categorical = ["verified_status"]
    [labels.claim]
    column = "claim_status"
    equals = "claim"
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.validate import parse_timestamp_text

SPEC_KEYS = frozenset(
    {
        "name",
        "path",
        "id",
        "time",
        "timezone",
        "text",
        "numeric",
        "categorical",
        "labels",
        "repair_quoted_rows",
        "na_values",
        "description",
        "encoding",
        "separator",
        "columns",
    }
)
LABEL_KEYS = frozenset({"column", "equals", "not_equals"})
# Frame columns the loader creates; a spec column with one of these names would be shadowed.
RESERVED = ("item_id", "as_of")

# The cell texts pandas reads as missing by default; a repaired row must read the same way.
NA_TOKENS = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND"),
    *("1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)

LabelValue = str | int | float | bool


@dataclass(frozen=True)
class LabelRule:
    """How one issue's 0/1 label is read from a column: `equals` or `not_equals` a value."""

    column: str
    equals: LabelValue | None = None
    not_equals: LabelValue | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise ValueError(f"label rule column must be a non-empty string, got {self.column!r}")
        if (self.equals is None) == (self.not_equals is None):
            raise ValueError(
                f"label rule on column {self.column!r} needs exactly one of equals / not_equals, "
                f"got equals={self.equals!r}, not_equals={self.not_equals!r}"
            )
        target = self.target
        if not isinstance(target, str | int | float | bool):
            # a list or table would be compared as its text and match nothing
            raise ValueError(
                f"label rule on column {self.column!r}: equals / not_equals must be one text, "
                f"number or true/false, got {target!r}"
            )

    @property
    def target(self) -> LabelValue:
        return self.equals if self.equals is not None else self.not_equals  # type: ignore[return-value]

    def describe(self) -> str:
        return f"{self.column} {'==' if self.equals is not None else '!='} {self.target!r}"

    def unreadable(self, values: pd.Series) -> np.ndarray:
        """Non-blank values the rule cannot compare: not numbers for a numeric target, not
        true/false/yes/no/1/0 for a true/false one (a text target reads every value)."""
        target = self.target
        blank = _blank(values)
        if isinstance(target, bool):
            text = values.astype("str").str.strip().str.lower()
            known = text.isin({"true", "1", "yes", "t", "y", "false", "0", "no", "f", "n"})
            return ~blank & ~known.to_numpy(dtype=bool)
        if isinstance(target, int | float):
            num = pd.to_numeric(values.astype("str").str.strip(), errors="coerce")
            return ~blank & num.isna().to_numpy()
        return np.zeros(len(values), dtype=bool)

    def apply(self, values: pd.Series) -> pd.Series:
        """Return 0/1 labels (int64) for non-blank `values`."""
        hit = _matches(values, self.target)
        if self.not_equals is not None:
            hit = ~hit
        return hit.astype("int64")


def _matches(values: pd.Series, target: LabelValue | None) -> pd.Series:
    # Compare numerically when both sides are numbers (1 == 1.0 == "1"); else as trimmed text.
    if isinstance(target, bool):
        text = values.astype("str").str.strip().str.lower()
        truthy = {"true", "1", "yes", "t", "y"} if target else {"false", "0", "no", "f", "n"}
        return text.isin(truthy)
    if isinstance(target, int | float):
        return pd.to_numeric(values, errors="coerce").eq(float(target))
    return values.astype("str").str.strip().eq(str(target))


@dataclass
class FlatSpec:
    """A flat dataset's file and column roles (see the module docstring for the TOML form)."""

    name: str
    path: Path
    id: str | None = None  # None: an item's id is its 0-based source row number
    time: str | None = None
    text: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    labels: dict[str, LabelRule] = field(default_factory=dict)
    timezone: str | None = None  # declares the zone of naive times; never assumed otherwise
    repair_quoted_rows: bool = True
    # Cell texts read as blank in a CSV; None means pandas' defaults (NA_TOKENS).
    na_values: list[str] | None = None
    source: Path | None = None  # the TOML file this spec came from
    # Delimited text: its encoding (a Python codec name), the field separator (default ","
    # for .csv and "\t" for .tsv) and, for a file without a header row, its column names.
    encoding: str = "utf-8"
    separator: str | None = None
    header: list[str] | None = None

    @property
    def sep(self) -> str:
        """The field separator of delimited text: `separator`, else a tab for .tsv, else ","."""
        return self.separator or ("\t" if self.path.suffix.lower() == ".tsv" else ",")

    @property
    def feature_columns(self) -> list[str]:
        return [*self.text, *self.numeric, *self.categorical]

    @property
    def issues(self) -> list[str]:
        return list(self.labels)

    def columns(self) -> list[str]:
        """Every source column the spec names (id, time, features, labels), in order, unique."""
        cols = [*([self.id] if self.id else []), *([self.time] if self.time else [])]
        cols += self.feature_columns
        cols += [r.column for r in self.labels.values()]
        return list(dict.fromkeys(cols))

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._check()

    def _check(self) -> None:
        where = f"flat spec {self.name!r}"
        if not self.labels:
            raise ValueError(f"{where} declares no [labels.<issue>] tables; expected at least one")
        roles: dict[str, list[str]] = {}
        for role, cols in (
            ("id", [self.id] if self.id is not None else []),
            ("time", [self.time] if self.time else []),
            ("text", self.text),
            ("numeric", self.numeric),
            ("categorical", self.categorical),
        ):
            for c in cols:
                if not isinstance(c, str) or not c:
                    raise ValueError(
                        f"{where}: {role} column names must be non-empty strings, got {c!r}"
                    )
                roles.setdefault(c, []).append(role)
        clash = {c: r for c, r in roles.items() if len(r) > 1}
        if clash:
            detail = "; ".join(f"{c!r} as {' and '.join(r)}" for c, r in clash.items())
            raise ValueError(f"{where}: a column may have one role only, got {detail}")
        label_cols = {r.column for r in self.labels.values()}
        leaked = sorted(label_cols & set(roles))
        if leaked:
            # A label used as a feature (or as the id/time) would leak the answer into the model.
            raise ValueError(
                f"{where}: label column(s) {leaked} must not also be id, time or features"
            )
        reserved = sorted(set(self.feature_columns) & set(RESERVED))
        if reserved:
            raise ValueError(f"{where}: feature column names {reserved} are reserved by the loader")


def load_spec(path: str | Path) -> FlatSpec:
    """Read a flat-dataset TOML spec; a relative `path` in it resolves against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"flat dataset spec {str(path)!r} does not exist")
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"flat dataset spec {str(path)!r} is not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"flat dataset spec {str(path)!r} is not valid TOML: {exc}") from exc
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise ValueError(
            f"flat dataset spec {str(path)!r} has unknown keys {unknown}; "
            f"expected keys: {', '.join(sorted(SPEC_KEYS))}"
        )
    missing = [k for k in ("name", "path", "labels") if k not in raw]
    if missing:
        raise ValueError(f"flat dataset spec {str(path)!r} lacks required keys {missing}")
    for key in ("text", "numeric", "categorical"):
        if not isinstance(raw.get(key, []), list):
            raise ValueError(
                f"flat dataset spec {str(path)!r}: {key} must be a list of column names"
            )
    if not isinstance(raw["labels"], dict):
        raise ValueError(f"flat dataset spec {str(path)!r}: labels must be [labels.<issue>] tables")
    labels: dict[str, LabelRule] = {}
    for issue, rule in raw["labels"].items():
        extra = sorted(set(rule) - LABEL_KEYS) if isinstance(rule, dict) else []
        if extra:
            raise ValueError(
                f"flat dataset spec {str(path)!r}: [labels.{issue}] has unknown keys {extra}; "
                f"expected {', '.join(sorted(LABEL_KEYS))}"
            )
        if not isinstance(rule, dict) or "column" not in rule:
            raise ValueError(
                f"flat dataset spec {str(path)!r}: [labels.{issue}] needs `column` and one of "
                f"`equals` / `not_equals` (got {rule!r})"
            )
        labels[issue] = LabelRule(**rule)
    for key in ("name", "path", "id", "time", "timezone"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise ValueError(
                f"flat dataset spec {str(path)!r}: {key} must be a non-empty string, "
                f"got {raw[key]!r}"
            )
    if "repair_quoted_rows" in raw and not isinstance(raw["repair_quoted_rows"], bool):
        raise ValueError(
            f"flat dataset spec {str(path)!r}: repair_quoted_rows must be true or false, "
            f"got {raw['repair_quoted_rows']!r}"
        )
    if "timezone" in raw:
        _check_timezone(path, raw["timezone"])
    _check_text_format(path, raw)
    data = Path(raw["path"])
    if not data.is_absolute():
        data = (path.parent / data).resolve()
    return FlatSpec(
        name=str(raw["name"]),
        path=data,
        id=raw.get("id"),
        time=raw.get("time"),
        text=list(raw.get("text", [])),
        numeric=list(raw.get("numeric", [])),
        categorical=list(raw.get("categorical", [])),
        labels=labels,
        timezone=raw.get("timezone"),
        repair_quoted_rows=raw.get("repair_quoted_rows", True),
        na_values=_na_values(path, raw.get("na_values")),
        source=path.resolve(),
        encoding=raw.get("encoding", "utf-8"),
        separator=raw.get("separator"),
        header=raw.get("columns"),
    )


def _check_text_format(path: Path, raw: dict[str, Any]) -> None:
    """`encoding` a codec Python knows, `separator` one character, `columns` unique names."""
    import codecs

    where = f"flat dataset spec {str(path)!r}"
    if "encoding" in raw:
        try:
            codecs.lookup(str(raw["encoding"]))
        except LookupError:
            raise ValueError(
                f"{where}: encoding {raw['encoding']!r} is not a known text encoding "
                "(e.g. utf-8, latin-1, cp1252)"
            ) from None
        if not isinstance(raw["encoding"], str):
            raise ValueError(f"{where}: encoding must be a string, got {raw['encoding']!r}")
    sep = raw.get("separator")
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1 or sep in '"\r\n'):
        raise ValueError(
            f'{where}: separator must be one character (e.g. "," or "\\t"), got {sep!r}'
        )
    names = raw.get("columns")
    if names is not None and (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"{where}: columns (the names of a file without a header row) must be a list of "
            f"unique non-empty strings, got {names!r}"
        )


def _check_timezone(path: Path, zone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"flat dataset spec {str(path)!r}: timezone {zone!r} is not a known time zone; "
            'expected an IANA name such as "UTC" or "Europe/Paris"'
        ) from None


def _na_values(path: Path, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"flat dataset spec {str(path)!r}: na_values must be a list of strings, got {value!r}"
        )
    return list(value)


@dataclass
class FlatDataset:
    """A loaded flat dataset: features per item, long-form labels, and what was dropped why.

    frame: item_id (str), as_of (UTC, NaT without a time column), then the feature columns.
    labels: item_id, issue, label (int 0/1) for every kept item and issue.
    dropped: the dropped source rows (all their columns), their 0-based source `row` and a
    `reason` naming the blank or unreadable columns.
    repaired: rows that arrived as one quoted field and were split back into columns.
    """

    spec: FlatSpec
    frame: pd.DataFrame
    labels: pd.DataFrame
    dropped: pd.DataFrame
    n_source_rows: int = 0
    repaired: int = 0
    # label column -> counts of its kept values (most common first), to explain a rule
    values: dict[str, pd.Series] = field(default_factory=dict)
    # feature column -> kept rows whose value was blank, kept as missing (only columns with any)
    missing: dict[str, int] = field(default_factory=dict)

    def label_rates(self) -> dict[str, float]:
        """Share of positive labels per issue among the kept items."""
        if self.labels.empty:
            return {issue: float("nan") for issue in self.spec.issues}
        rates = self.labels.groupby("issue", sort=False)["label"].mean()
        return {issue: float(rates.get(issue, float("nan"))) for issue in self.spec.issues}

    def check_usable(self) -> None:
        """Raise ValueError when the file has no rows, or every one was dropped (naming the
        commonest reasons): training, scoring and validation have nothing to work on."""
        if len(self.frame):
            return
        if not self.n_source_rows:
            raise ValueError(
                f"flat dataset {self.spec.name!r} ({str(self.spec.path)!r}) has no rows"
            )
        counts = self.drop_reasons()
        shown = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
        raise ValueError(
            f"flat dataset {self.spec.name!r} ({str(self.spec.path)!r}): every one of its "
            f"{self.n_source_rows} rows is dropped, so nothing is left to use ("
            + "; ".join(f"{reason} {n} rows" for reason, n in shown)
            + "); check the spec's columns, label rules and na_values against the file"
        )

    def rule_misses(self) -> dict[str, str]:
        """Issues whose label rule's value never occurs in the kept rows, and what does.

        Such a rule gives one class only: a typo ("Claim" for "claim") or a rule on the wrong
        column, unless the file really holds no positive (or no negative) of the issue.
        """
        kept = set(self.frame["item_id"])
        out: dict[str, str] = {}
        for issue, rule in self.spec.labels.items():
            lab = self.labels.loc[self.labels["issue"] == issue, "label"]
            if not len(lab) or not kept:
                continue
            hits = int(lab.sum()) if rule.equals is not None else int(len(lab) - lab.sum())
            if hits:
                continue
            seen = self.values.get(rule.column)
            shown = (
                ", ".join(f"{v!r} {n:,}" for v, n in seen.head(5).items())
                if seen is not None
                else "?"
            )
            out[issue] = (
                f"label rule {rule.describe()} holds the value {rule.target!r} on no kept row, "
                f"so the issue has one class only (the column's values: {shown}); check the "
                f"spec's [labels.{issue}]"
            )
        return out

    def drop_reasons(self) -> dict[str, int]:
        """How many dropped rows carry each reason (a row may carry several)."""
        if self.dropped.empty:
            return {}
        parts = self.dropped["reason"].str.split("; ").explode()
        return {str(k): int(v) for k, v in parts.value_counts().items()}


def _read(spec: FlatSpec) -> pd.DataFrame:
    path = spec.path
    if not path.is_file():
        where = f" (from spec {str(spec.source)!r})" if spec.source else ""
        if path.exists():
            raise ValueError(f"flat dataset file {str(path)!r} is a folder, not a file{where}")
        raise FileNotFoundError(f"flat dataset file {str(path)!r} does not exist{where}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    # Delimited text: .csv, .tsv, .txt, or a file without a suffix (the UCI SMS collection).
    if path.suffix.lower() not in (".csv", ".tsv", ".txt", ""):
        raise ValueError(
            f"flat dataset file {str(path)!r}: expected a .parquet file or delimited text "
            "(.csv, .tsv, .txt or no suffix)"
        )
    sep = spec.sep
    options: dict[str, Any] = {"dtype": "str", "sep": sep, "encoding": spec.encoding}
    if sep == "\t":
        options["quoting"] = csv.QUOTE_NONE  # tab-separated text quotes nothing
    if spec.header is not None:
        options |= {"header": None, "names": spec.header}
    if spec.na_values is not None:
        options |= {"keep_default_na": False, "na_values": spec.na_values}
    # All text: numbers are converted by the loader so unreadable values can be reported.
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        hint = (
            ' (set the spec\'s `encoding`, e.g. "latin-1")'
            if isinstance(exc, UnicodeDecodeError)
            else ""
        )
        raise ValueError(
            f"flat dataset file {str(path)!r} is not readable as {spec.encoding} text "
            f"separated by {sep!r}: {exc}{hint}"
        ) from None


def _repair_quoted_rows(
    df: pd.DataFrame, na_tokens: tuple[str, ...] | list[str]
) -> tuple[pd.DataFrame, int]:
    """Split rows that a CSV writer quoted as one whole field back into their columns.

    Such a row reads as a first column holding the comma-joined line and every other column
    blank. It is repaired only when it splits into exactly the header's number of fields.
    """
    if df.shape[1] < 2:
        return df, 0
    first = df.iloc[:, 0]
    rest_blank = df.iloc[:, 1:].isna().all(axis=1)
    cand = rest_blank & first.astype("str").str.contains(",", regex=False, na=False)
    if not cand.any():
        return df, 0
    positions = np.flatnonzero(cand.to_numpy())
    lines = first.to_numpy()[positions].astype(str).tolist()
    fixed: dict[int, list[str]] = {}
    for pos, line in zip(positions, lines, strict=True):
        try:
            fields = next(csv.reader([line]))  # one cell at a time: a cell may hold newlines
        except (csv.Error, StopIteration):
            continue
        if len(fields) == df.shape[1]:
            fixed[int(pos)] = fields
    if not fixed:
        return df, 0
    out = df.copy()
    rows = pd.DataFrame.from_dict(fixed, orient="index", columns=df.columns, dtype="str")
    # Fields of a repaired line are text like the rest of a CSV read; NA tokens become blank.
    rows = rows.mask(rows.isin(na_tokens))
    out.iloc[list(fixed)] = rows.to_numpy()
    return out, len(fixed)


def _blank(s: pd.Series) -> np.ndarray:
    isna = s.isna().to_numpy().copy()
    if isinstance(s.dtype, pd.StringDtype) or s.dtype.kind == "O":
        isna |= s.astype("str").str.strip().eq("").fillna(False).to_numpy(dtype=bool)
    return isna


def _item_ids(s: pd.Series) -> pd.Series:
    # Integral float ids (a Parquet artefact of nulls in an int column) must not become "12.0".
    if pd.api.types.is_float_dtype(s.dtype):
        whole = s.dropna()
        if (whole % 1 == 0).all():
            s = s.astype("Int64")
    out = s.astype("str").str.strip()
    out[s.isna().to_numpy()] = np.nan
    return out


def load_flat(spec: FlatSpec | str | Path, *, labels_required: bool = True) -> FlatDataset:
    """Load a flat dataset (CSV or Parquet) by its spec; see `FlatDataset` for the result.

    Raises ValueError when named columns are missing (listing the available ones), when ids
    repeat, or when times have no zone and the spec declares no `timezone`.

    `labels_required=False` loads rows to score: new items have no labels yet, so the label
    columns may be missing and a blank or unreadable label drops no row; the labels that
    are there are still read.
    """
    if not isinstance(spec, FlatSpec):
        spec = load_spec(spec)
    raw = _read(spec).reset_index(drop=True)
    n_source = len(raw)
    repaired = 0
    if spec.repair_quoted_rows and spec.path.suffix != ".parquet" and spec.sep == ",":
        na_tokens = NA_TOKENS if spec.na_values is None else spec.na_values
        raw, repaired = _repair_quoted_rows(raw, na_tokens)

    rules = {
        issue: rule
        for issue, rule in spec.labels.items()
        if labels_required or rule.column in raw.columns
    }
    label_columns = {r.column for r in spec.labels.values()} - {r.column for r in rules.values()}
    missing = [c for c in spec.columns() if c not in raw.columns and c not in label_columns]
    if missing:
        raise ValueError(
            f"flat dataset {spec.name!r} ({str(spec.path)!r}) lacks column(s) {missing}; "
            f"available columns: {', '.join(map(str, raw.columns))}"
        )

    reasons: dict[str, np.ndarray] = {}
    # Blank ids, times and labels drop a row: it cannot be told apart, split or learnt from.
    # A blank feature is a missing value the models handle (an item without a caption).
    needed = [*([spec.id] if spec.id else []), *([spec.time] if spec.time else [])]
    if labels_required:
        needed += [r.column for r in rules.values()]
    needed = list(dict.fromkeys(needed))
    blanks = {c: _blank(raw[c]) for c in dict.fromkeys([*needed, *spec.feature_columns])}

    numbers: dict[str, pd.Series] = {}
    for c in spec.numeric:
        col = raw[c]
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            numbers[c] = col.astype("float64")
            continue
        num = pd.to_numeric(col.astype("str").str.strip(), errors="coerce").astype("float64")
        numbers[c] = num
        reasons[f"not a number: {c}"] = ~blanks[c] & num.isna().to_numpy()

    as_of = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    if spec.time:
        as_of, bad_time = _read_times(spec, raw[spec.time], blanks[spec.time])
        reasons[f"not a timestamp: {spec.time}"] = bad_time

    for rule in rules.values() if labels_required else ():
        if isinstance(rule.target, bool):
            reasons[f"not true/false: {rule.column}"] = rule.unreadable(raw[rule.column])
        elif isinstance(rule.target, int | float):
            reasons[f"not a number: {rule.column}"] = rule.unreadable(raw[rule.column])
    for c in needed:
        reasons[f"blank: {c}"] = blanks[c]
    drop = np.zeros(len(raw), dtype=bool)
    for mask in reasons.values():
        drop |= mask

    if spec.id is None:  # row numbers: unique by construction
        ids = pd.Series(np.arange(len(raw)).astype(str), index=raw.index, dtype="object")
        dup = np.zeros(len(raw), dtype=bool)
    else:
        ids = _item_ids(raw[spec.id])
        dup = ~blanks[spec.id] & ids.duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)[:5].tolist()
        raise ValueError(
            f"flat dataset {spec.name!r}: id column {spec.id!r} has {int(dup.sum())} rows with "
            f"repeated ids (e.g. {ids.iloc[rows[0]]!r} at rows {rows}); ids must be unique"
        )

    dropped = raw.loc[drop].copy()
    dropped.insert(0, "row", np.flatnonzero(drop))
    dropped["reason"] = _reason_text(reasons, drop)
    dropped = dropped.reset_index(drop=True)

    keep = ~drop
    kept = raw.loc[keep].reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "item_id": ids[keep].reset_index(drop=True),
            "as_of": as_of[keep].reset_index(drop=True),
        }
    )
    for c in spec.text:
        frame[c] = kept[c].astype("str").where(~blanks[c][keep], "")
    for c in spec.numeric:
        frame[c] = numbers[c][keep].reset_index(drop=True)
    for c in spec.categorical:
        frame[c] = kept[c].astype("str").str.strip().where(~blanks[c][keep], "")
    missing = {c: int(blanks[c][keep].sum()) for c in spec.feature_columns}

    parts = []
    for issue, rule in rules.items():
        values = kept[rule.column]
        # with labels required, every kept row passed the blank and unreadable checks above;
        # rows to score may have neither
        known = (
            np.ones(len(values), dtype=bool)
            if labels_required
            else ~_blank(values) & ~rule.unreadable(values)
        )
        lab = rule.apply(values[known])
        parts.append(
            pd.DataFrame(
                {"item_id": frame["item_id"][known], "issue": issue, "label": lab.to_numpy()}
            )
        )
    labels = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"item_id": [], "issue": [], "label": np.array([], dtype="int64")})
    )
    labels = labels.astype({"issue": "str", "item_id": "str"})
    values = {
        r.column: kept[r.column].astype("str").str.strip().value_counts() for r in rules.values()
    }
    return FlatDataset(
        spec,
        frame,
        labels,
        dropped,
        n_source_rows=n_source,
        repaired=repaired,
        values=values,
        missing={c: n for c, n in missing.items() if n},
    )


def _reason_text(reasons: dict[str, np.ndarray], drop: np.ndarray) -> list[str]:
    # Group reasons by kind so a row says e.g. "blank: a, b; not a number: c".
    out: list[str] = []
    idx = np.flatnonzero(drop)
    for i in idx:
        kinds: dict[str, list[str]] = {}
        for key, mask in reasons.items():
            if mask[i]:
                kind, col = key.split(": ", 1)
                kinds.setdefault(kind, []).append(col)
        out.append("; ".join(f"{k}: {', '.join(cols)}" for k, cols in kinds.items()))
    return out


def _read_times(spec: FlatSpec, s: pd.Series, blank: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Parse the time column to UTC; returns (times, unreadable rows). Naive needs `timezone`."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC"), np.zeros(len(s), dtype=bool)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        text = s.dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
        text[s.isna().to_numpy()] = np.nan
    else:
        text = s.astype("str")
    out, bad, naive = parse_timestamp_text(text)
    naive &= ~blank
    if naive.any():
        if not spec.timezone:
            rows = np.flatnonzero(naive)[:5].tolist()
            raise ValueError(
                f"flat dataset {spec.name!r}: time column {spec.time!r} has {int(naive.sum())} "
                f"values without a time zone (e.g. {text.iloc[rows[0]]!r} at rows {rows}); add "
                'an offset to the data or declare the zone with `timezone = "UTC"` in the spec'
            )
        local = pd.to_datetime(text.where(naive), format="ISO8601", errors="coerce")
        local = local.dt.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT")
        local = local.dt.tz_convert("UTC").astype(out.dtype)
        bad |= naive & local.isna().to_numpy()
        out = out.where(~naive, local)
    return out, bad & ~blank
