"""One feature transform for batch training and online scoring.

`FeatureTransform` turns a snapshot (a DataFrame, a list of dicts or one dict posted to the
scoring service) into the model's feature vector. Both paths share one implementation:

1. *extract*: every input cell goes through the same scalar kernel (`_as_float`,
   `_category_key`, `features.text.text_stats`) into a float matrix of raw inputs. Fast
   routes are taken only where they are exact by construction: numeric frame columns cast
   to float64, category codes and text statistics computed once per distinct value, and
   plain int/float/bool/None record values converted by one ``np.array`` call;
2. *compute*: one function (`_compute`) applies the numpy ops (log1p, ratios, copies) to
   that matrix, whether it has one row or a million.

So the vectors are identical bit for bit, which `tests/features/test_transform_property.py`
proves with hypothesis. The one-record path builds no pandas object.

Feature families (output order):

- ``numeric``: the value as float (bools -> 0/1); NaN stays NaN (LightGBM handles it).
- ``counts``: ``log1p(count)``; negative counts are rejected.
- ``ratios``: ``num / (den + 1)`` for each (num, den) pair. Add-one smoothing makes the rate
  defined at zero (0 views -> 0), shrinks rates backed by little evidence (1 like of 1 view
  -> 0.5, 100 of 100 -> 0.99) and keeps it monotone in both counts. NaN if either is NaN.
- ``categorical``: integer codes learned in `fit`: values seen at least
  ``min_category_count`` times get codes 1..k (sorted by value); rare and unseen values get
  the reserved code 0 (``OTHER_CODE``); null or missing -> NaN. Their positions are in
  ``categorical_indices_`` for LightGBM (or one-hot encoding in a linear baseline).
- ``text``: the dense statistics of `features.text.TEXT_STAT_NAMES` per text column. A
  column named ``hashtags`` (or ending in ``hashtags``) is a space-separated tag list.
  Null or missing text: ``has_text`` 0 and the other statistics NaN; "" gives zeros.

Hashed word n-grams of all text columns (`text_hashed`, `text_hashed_one`) are separate,
for a linear text model: see `features.text.hashed_ngrams` (CRC32 buckets, l2-normalised
term frequencies).

A column absent from the frame at fit time produces no features (a ratio needs both of its
columns). Absent at transform time, or a key missing from a record, gives NaN.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from features.schema import (
    EVENT_COUNT_COLUMNS,
    REPORT_REASON_COLUMNS,
    VELOCITY_COLUMNS,
    WINDOWS_H,
)
from features.text import (
    TEXT_STAT_NAMES,
    hashed_char_ngrams_rows,
    hashed_ngrams_rows,
    text_stats,
    text_stats_many,
    text_stats_recent,
)

OTHER_CODE = 0  # the categorical code of rare and unseen values
_NAN = math.nan


class _Missing:
    """Marks a key absent from a record (distinct from an explicit None)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __reduce__(self) -> str:
        return "_MISSING"


_MISSING = _Missing()
_NA_SCALARS = (pd.NA, pd.NaT)
# Python types np.array(..., dtype=float64) converts exactly like `_as_float`.
_PLAIN_NUMBER_TYPES = frozenset({int, float, bool, type(None)})


def _as_float(value: Any, field: str) -> float:
    """One numeric cell as float: None/NaN/missing -> NaN, bool -> 0/1; strings are an error."""
    t = type(value)
    if t is float:
        return value
    if t is int:
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"field {field!r}: number {value} is too large for float64") from None
    if value is None or value is _MISSING:
        return _NAN
    if t is bool or isinstance(value, np.bool_):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if any(value is na for na in _NA_SCALARS):
        return _NAN
    raise ValueError(
        f"field {field!r}: expected a number, bool or null, got {type(value).__name__} "
        f"{_short(value)}"
    )


def _category_key(value: Any, field: str) -> str | None:
    """One categorical cell as its string key (None when null or missing).

    JSON callers may send 3 where the frame holds 3.0 or "3": integral numbers become
    "3" either way, bools "true"/"false", so a value gets the same code on both paths.
    """
    t = type(value)
    if t is str:
        return value
    if value is None or value is _MISSING:
        return None
    if isinstance(value, str):  # str subclasses such as numpy.str_
        return str(value)
    if t is bool or isinstance(value, np.bool_):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v != v:
            return None
        if v.is_integer():
            return str(int(v))
        return repr(v)
    if any(value is na for na in _NA_SCALARS):
        return None
    raise ValueError(
        f"field {field!r}: expected a category (string, number, bool or null), got "
        f"{type(value).__name__} {_short(value)}"
    )


def _as_text(value: Any, field: str) -> str | None:
    """One text cell: a string, or None when null or missing; anything else is an error."""
    if type(value) is str:
        return value
    if value is None or value is _MISSING:
        return None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (float, np.floating)) and value != value:
        return None
    if any(value is na for na in _NA_SCALARS):
        return None
    raise ValueError(
        f"field {field!r}: expected text (a string or null), got {type(value).__name__} "
        f"{_short(value)}"
    )


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _is_tag_list(column: str) -> bool:
    return column.endswith("hashtags")


class FeatureTransform(BaseEstimator):
    """Snapshot -> model feature vector, identical for a frame, records and one record."""

    # Defaults for transforms pickled before these options existed: word n-grams only.
    char_ngram_range: tuple[int, int] | None = None
    text_groups: Sequence[Sequence[str]] = ()

    def __init__(
        self,
        numeric: Sequence[str] = (),
        counts: Sequence[str] = (),
        categorical: Sequence[str] = (),
        text: Sequence[str] = (),
        ratios: Sequence[tuple[str, str]] = (),
        hash_dim: int = 2**18,
        ngram_range: tuple[int, int] = (1, 2),
        min_category_count: int = 5,
        char_ngram_range: tuple[int, int] | None = (3, 5),
        text_groups: Sequence[Sequence[str]] = (),
    ) -> None:
        self.numeric = numeric
        self.counts = counts
        self.categorical = categorical
        self.text = text
        self.ratios = ratios
        self.hash_dim = hash_dim
        self.ngram_range = ngram_range
        self.min_category_count = min_category_count
        self.char_ngram_range = char_ngram_range
        self.text_groups = text_groups

    # ------------------------------------------------------------------ configuration

    @classmethod
    def for_snapshots(cls, **overrides: Any) -> FeatureTransform:
        """The default configuration for the snapshot columns of `features.schema`."""
        counts = (
            EVENT_COUNT_COLUMNS
            + VELOCITY_COLUMNS
            + ("n_viewers", "n_reporters")
            + REPORT_REASON_COLUMNS
            + (
                "n_comment_toxic",
                "creator_followers",
                "creator_n_items",
                "creator_prior_removals",
                "creator_prior_overturned",
                "mod_n_actions",
            )
        )
        numeric = (
            "duration_s",
            "age_h",
            "horizon_h",
            "mean_watch_frac",
            "comment_mean_len",
            "creator_age_d",
            "creator_verified",
            "mod_removed",
            "mod_restricted",
        )
        categorical = (
            "format",
            "region",
            "language",
            "category",
            "anchor",
            "action",
            "action_source",
            "action_policy",
        )
        per_view = ("like", "share", "comment", "report", "not_interested", "download", "follow")
        ratios: list[tuple[str, str]] = [(f"n_{k}", "n_view") for k in per_view]
        ratios += [("n_comment_toxic", "n_comment"), ("n_reporters", "n_viewers")]
        for w in WINDOWS_H:
            # velocity: how much of the activity is recent, and recent rates themselves
            ratios += [(f"n_{k}_{w}h", f"n_{k}") for k in ("view", "report", "not_interested")]
            ratios += [(f"n_{k}_{w}h", f"n_view_{w}h") for k in ("like", "report", "share")]
        ratios += [(c, "n_report") for c in REPORT_REASON_COLUMNS]
        ratios += [
            ("n_view", "creator_followers"),
            ("creator_prior_removals", "creator_n_items"),
            ("creator_prior_overturned", "creator_prior_removals"),
        ]
        params: dict[str, Any] = {
            "numeric": numeric,
            "counts": counts,
            "categorical": categorical,
            "text": ("caption", "hashtags"),
            # the comments' own hashed space, for a text model of its own (harmful_interactions)
            "text_groups": (("comment_text",),),
            "ratios": tuple(ratios),
        }
        params.update(overrides)
        return cls(**params)

    # ------------------------------------------------------------------ fit

    def fit(self, frame: pd.DataFrame, y: Any = None) -> Self:
        """Keep the configured columns present in `frame`, learn category codes, name features."""
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"fit expects a pandas DataFrame, got {type(frame).__name__}")
        lo, hi = self.ngram_range
        if not (1 <= lo <= hi):
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
        if int(self.hash_dim) < 1:
            raise ValueError(f"hash_dim must be a positive integer, got {self.hash_dim}")
        if int(self.min_category_count) < 1:
            raise ValueError(f"min_category_count must be >= 1, got {self.min_category_count}")
        for pair in self.ratios:
            if len(pair) != 2:
                raise ValueError(f"ratios must be (numerator, denominator) pairs, got {pair!r}")

        cols = set(frame.columns)
        numeric = [c for c in dict.fromkeys(self.numeric) if c in cols]
        counts = [c for c in dict.fromkeys(self.counts) if c in cols]
        ratios = [
            (n, d) for n, d in dict.fromkeys(map(tuple, self.ratios)) if n in cols and d in cols
        ]
        categorical = [c for c in dict.fromkeys(self.categorical) if c in cols]
        text = [c for c in dict.fromkeys(self.text) if c in cols]
        if self.char_ngram_range is not None:
            c_lo, c_hi = self.char_ngram_range
            if not (1 <= c_lo <= c_hi):
                raise ValueError(
                    f"char_ngram_range must be (lo, hi) with 1 <= lo <= hi, got {(c_lo, c_hi)}"
                )
        groups = [
            [c for c in dict.fromkeys(g) if c in cols and c not in text] for g in self.text_groups
        ]
        self.text_group_columns_ = [g for g in groups if g]

        # Raw inputs, laid out so the output is mostly slices of them:
        # [numeric | counts | ratio-only columns | category codes | text stats].
        ratio_only = [
            c for c in dict.fromkeys(c for p in ratios for c in p) if c not in numeric + counts
        ]
        raw_numeric = numeric + counts + ratio_only
        for c in dict.fromkeys(raw_numeric):
            _numeric_column(frame[c], c)  # type check now rather than at the first transform

        categories: dict[str, list[str]] = {}
        for c in categorical:
            tally = _category_tally(frame[c], c)
            categories[c] = sorted(k for k, n in tally.items() if n >= self.min_category_count)

        self.numeric_columns_ = numeric
        self.count_columns_ = counts
        self.ratio_pairs_ = ratios
        self.categorical_columns_ = categorical
        self.text_columns_ = text
        self.raw_numeric_columns_ = raw_numeric
        self.categories_ = categories
        self.category_codes_ = {
            c: {k: i + 1 for i, k in enumerate(vals)} for c, vals in categories.items()
        }

        names = list(numeric)
        names += [f"log1p_{c}" for c in counts]
        names += [f"{n}_per_{d}" for n, d in ratios]
        first_cat = len(names)
        names += categorical
        names += [f"{c}__{s}" for c in text for s in TEXT_STAT_NAMES]
        self.feature_names_ = names
        self.categorical_indices_ = list(range(first_cat, first_cat + len(categorical)))
        self.n_features_out_ = len(names)
        self._compile()
        return self

    # Compiled lookups are derived from the fitted attributes; pickles carry only the latter.
    _COMPILED = ("_plan", "_getter", "_cat_plan", "_text_plan")

    def _compile(self) -> None:
        """Index arrays and getters for the hot paths, derived from the fitted attributes."""
        raw_numeric = self.raw_numeric_columns_
        first = {}
        for i, c in enumerate(raw_numeric):
            first.setdefault(c, i)
        a = len(self.numeric_columns_)
        b = a + len(self.count_columns_)
        r = len(self.ratio_pairs_)
        k_num = len(raw_numeric)
        n_stats = len(TEXT_STAT_NAMES)
        k_raw = k_num + len(self.categorical_columns_) + n_stats * len(self.text_columns_)
        self._plan = (
            k_raw,
            a,
            b,
            r,
            k_num,
            np.asarray([first[n] for n, _ in self.ratio_pairs_], dtype=np.intp),
            np.asarray([first[d] for _, d in self.ratio_pairs_], dtype=np.intp),
        )
        # itemgetter: one C call for all numeric fields when the record has every key.
        if k_num == 0:
            self._getter = None
        elif k_num == 1:
            only = raw_numeric[0]
            self._getter = lambda record: (record[only],)
        else:
            self._getter = operator.itemgetter(*raw_numeric)
        self._cat_plan = [(c, self.category_codes_[c]) for c in self.categorical_columns_]
        self._text_plan = [(c, _is_tag_list(c)) for c in self.text_columns_]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in self._COMPILED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if hasattr(self, "feature_names_"):
            self._compile()

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The input columns the fitted transform reads (numeric, count, ratio, categorical
        and text columns, each once): a record without one of them has no value for it."""
        self._check_fitted()
        return tuple(
            dict.fromkeys(
                [
                    *self.raw_numeric_columns_,
                    *self.categorical_columns_,
                    *self.text_columns_,
                    *(c for g in self.hashed_groups for c in g.columns),
                ]
            )
        )

    @property
    def hashed_groups(self) -> list[HashedGroup]:
        """The blocks of the hashed-text matrix (`text_hashed`), in column order.

        The main group holds the text columns' word n-grams in [0, hash_dim) and, with
        `char_ngram_range`, their character n-grams in [hash_dim, 2 * hash_dim). Each
        `text_groups` entry (e.g. the comments) follows with its own word-n-gram block, so a
        text model of its own reads it apart from the captions. Every block of a row is
        l2-normalised on its own.
        """
        self._check_fitted()
        dim = int(self.hash_dim)
        char = self.char_ngram_range
        groups = []
        start = 0
        if self.text_columns_:
            blocks = ((start, start + dim),) + (
                () if char is None else ((start + dim, start + 2 * dim),)
            )
            groups.append(HashedGroup("text", tuple(self.text_columns_), blocks, char))
            start = blocks[-1][1]
        for cols in getattr(self, "text_group_columns_", ()):
            groups.append(HashedGroup("_".join(cols), tuple(cols), ((start, start + dim),), None))
            start += dim
        return groups

    @property
    def hashed_width(self) -> int:
        """Columns of the hashed-text matrix (hash_dim, all empty, without text columns)."""
        groups = self.hashed_groups
        return groups[-1].blocks[-1][1] if groups else int(self.hash_dim)

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise ValueError("FeatureTransform is not fitted: call fit(frame) first")

    # ------------------------------------------------------------------ shared compute

    def _compute(self, raw: np.ndarray) -> np.ndarray:
        """Raw inputs (n, k_raw) -> features (n, d): the only numeric code of every path.

        `raw` is column-major (a single row is both), so each block below is contiguous and
        numpy runs the same inner loop whether there is one row or a million.
        """
        _, a, b, r, k_num, num, den = self._plan
        out = np.empty((raw.shape[0], self.n_features_out_), dtype=np.float64)
        out[:, :a] = raw[:, :a]
        if b > a:
            c = raw[:, a:b]
            # fmin ignores NaN (missing counts), so this sees any negative value
            if c.size and np.fmin.reduce(c, axis=None) < 0:
                bad = self.count_columns_[int(np.argmax((c < 0).any(axis=0)))]
                raise ValueError(f"field {bad!r}: counts must be >= 0, got a negative value")
            out[:, a:b] = np.log1p(c)
        if r:
            out[:, b : b + r] = raw.take(num, axis=1) / (raw.take(den, axis=1) + 1.0)
        out[:, b + r :] = raw[:, k_num:]
        return out

    def _record_raw(self, record: Mapping[str, Any], *, text: bool = True) -> list[Any]:
        """One record's raw inputs as a flat list (the scalar kernels; no pandas); without
        the text statistics, which come last, when `text` is False."""
        get = record.get
        getter = self._getter
        if getter is None:
            row: list[Any] = []
        else:
            try:
                row = list(getter(record))
            except KeyError:
                row = [get(c) for c in self.raw_numeric_columns_]
            # None, int, float and bool convert in np.array exactly as `_as_float` does;
            # anything else (strings, numpy scalars, huge ints) goes through the kernel.
            if not _PLAIN_NUMBER_TYPES.issuperset(map(type, row)):
                row = [_as_float(v, c) for v, c in zip(row, self.raw_numeric_columns_, strict=True)]
        for c, codes in self._cat_plan:
            v = get(c)
            if type(v) is str:
                row.append(codes.get(v, OTHER_CODE))
            else:
                key = _category_key(v, c)
                row.append(_NAN if key is None else codes.get(key, OTHER_CODE))
        if text:
            for c, tags in self._text_plan:
                v = get(c)
                if type(v) is str:
                    row.extend(text_stats_recent(v, tags))
                else:
                    row.extend(text_stats(_as_text(v, c), tag_list=tags))
        return row

    def _records_raw(self, rows: list[list[Any]], width: int | None = None) -> np.ndarray:
        try:
            raw = np.array(rows, dtype=np.float64, order="F")
        except OverflowError:
            # an int beyond float64: the kernel names the field
            for row in rows:
                for v, c in zip(row, self.raw_numeric_columns_, strict=False):
                    _as_float(v, c)
            raise
        return raw.reshape(len(rows), self._plan[0] if width is None else width, order="F")

    # ------------------------------------------------------------------ online paths

    def transform_one(self, record: Mapping[str, Any]) -> np.ndarray:
        """One record (e.g. a JSON dict) -> feature vector (d,). Builds no pandas object."""
        if not isinstance(record, Mapping):
            raise ValueError(f"transform_one expects a mapping, got {type(record).__name__}")
        self._check_fitted()
        return self._compute(self._records_raw([self._record_raw(record)]))[0]

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Records -> feature matrix (n, d), the online batch path. Builds no pandas object.

        The scalar kernels per record, except text statistics: those are computed per text
        column for all records at once (`text_stats_many`, equal to `text_stats` per text).
        """
        self._check_fitted()
        rows = []
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ValueError(f"record {i} is a {type(record).__name__}, expected a mapping")
            try:
                rows.append(self._record_raw(record, text=False))
            except ValueError as e:
                raise ValueError(f"record {i}: {e}") from None
        if not rows:
            return np.empty((0, self.n_features_out_), dtype=np.float64)
        n_stats = len(TEXT_STAT_NAMES)
        n_text = n_stats * len(self._text_plan)
        raw = np.empty((len(rows), self._plan[0]), dtype=np.float64, order="F")
        j = self._plan[0] - n_text
        if j:
            raw[:, :j] = self._records_raw(rows, width=j)
        for c, tags in self._text_plan:
            texts = []
            for i, record in enumerate(records):
                v = record.get(c)
                try:
                    texts.append(v if type(v) is str else _as_text(v, c))
                except ValueError as e:
                    raise ValueError(f"record {i}: {e}") from None
            raw[:, j : j + n_stats] = text_stats_many(texts, tag_list=tags)
            j += n_stats
        return self._compute(raw)

    def text_hashed_records(self, records: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Hashed word n-grams of many records, an (n, hash_dim) CSR matrix; row i equals
        `text_hashed_one(records[i])` (the vectorised `hashed_ngrams_rows`)."""
        self._check_fitted()
        parts = []
        for g in self.hashed_groups:
            rows = [[_as_text(record.get(c, _MISSING), c) for c in g.columns] for record in records]
            parts.append(self._hash_group(g, rows))
        return _hstack(parts, len(records), self.hashed_width)

    def text_hashed_one(self, record: Mapping[str, Any]) -> sp.csr_matrix:
        """Hashed word n-grams of one record's text columns, a (1, hash_dim) CSR row."""
        idx, val = self.ngrams_one(record)
        return sp.csr_matrix(
            (
                np.array(val, dtype=np.float64),
                np.array(idx, dtype=np.int32),
                np.array([0, len(idx)], dtype=np.int32),
            ),
            shape=(1, self.hashed_width),
        )

    def ngrams_one(self, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """One record's hashed-text row as sorted (indices, values) arrays, no sparse matrix:
        the single-item path (the same kernels as `text_hashed_records`, one row)."""
        self._check_fitted()
        dim = int(self.hash_dim)
        lo_hi = tuple(self.ngram_range)
        idx: list[np.ndarray] = []
        val: list[np.ndarray] = []
        for g in self.hashed_groups:
            texts = [_as_text(record.get(c, _MISSING), c) for c in g.columns]
            # the compiled batch twin on one row (equal bit for bit to `hashed_ngrams`,
            # tested): faster than the Python loop per n-gram already for a caption
            _, i, v = hashed_ngrams_rows([texts], dim, lo_hi)
            idx.append(i.astype(np.int64) + g.blocks[0][0])
            val.append(v)
            if g.char_range is not None:
                _, i, v = hashed_char_ngrams_rows([texts], dim, tuple(g.char_range))
                idx.append(i.astype(np.int64) + g.blocks[1][0])
                val.append(v)
        if not idx:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return np.concatenate(idx), np.concatenate(val)

    def _hash_group(self, g: HashedGroup, rows: Sequence[Sequence[str | None]]) -> sp.csr_matrix:
        # one group's blocks side by side, (n, width of the group)
        dim = int(self.hash_dim)
        word = hashed_texts(rows, dim, tuple(self.ngram_range))
        if g.char_range is None:
            return word
        indptr, idx, val = hashed_char_ngrams_rows(rows, dim, tuple(g.char_range))
        char = sp.csr_matrix((val, idx, indptr), shape=(len(rows), dim))
        return sp.hstack([word, char], format="csr")

    # ------------------------------------------------------------------ batch paths

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Frame -> feature matrix (n, d) float64; the batch path."""
        self._check_fitted()
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"transform expects a pandas DataFrame, got {type(frame).__name__}")
        n = len(frame)
        raw = np.empty((n, self._plan[0]), dtype=np.float64, order="F")
        present = set(frame.columns)
        done: dict[str, int] = {}
        j = 0
        for c in self.raw_numeric_columns_:
            if c in done:
                raw[:, j] = raw[:, done[c]]
            else:
                raw[:, j] = _numeric_column(frame[c], c) if c in present else _NAN
                done[c] = j
            j += 1
        for c in self.categorical_columns_:
            raw[:, j] = self._category_column(frame[c], c) if c in present else _NAN
            j += 1
        n_stats = len(TEXT_STAT_NAMES)
        for c, tags in self._text_plan:
            if c in present:
                raw[:, j : j + n_stats] = _text_stats_column(frame[c], c, tags)
            else:
                raw[:, j : j + n_stats] = text_stats(None)
            j += n_stats
        return self._compute(raw)

    def fit_transform(self, frame: pd.DataFrame, y: Any = None) -> np.ndarray:
        """`fit` then `transform` on the same frame."""
        return self.fit(frame).transform(frame)

    def text_hashed(self, frame: pd.DataFrame) -> sp.csr_matrix:
        """Hashed word n-grams of the frame's text columns, an (n, hash_dim) CSR matrix."""
        self._check_fitted()
        n = len(frame)
        parts = []
        for g in self.hashed_groups:
            columns = [
                [_as_text(v, c) for v in frame[c].tolist()] if c in frame.columns else [None] * n
                for c in g.columns
            ]
            # Snapshot rows of one item at several horizons repeat its texts: hash each once.
            distinct, which = _distinct(zip(*columns, strict=True), n)
            hashed = self._hash_group(g, distinct)
            parts.append(hashed if len(distinct) == n else hashed[which])
        return _hstack(parts, n, self.hashed_width)

    def _category_column(self, series: pd.Series, field: str) -> np.ndarray:
        """Codes of a column: the scalar kernel once per distinct value, then a lookup."""
        codes_of = self.category_codes_[field]
        if series.dtype == object:
            # Mixed Python objects: factorize would merge True with 1; go value by value
            # (strings, the common case, are memoised).
            cache: dict[str, float] = {}
            out = np.empty(len(series), dtype=np.float64)
            for i, v in enumerate(series.tolist()):
                if type(v) is str:
                    code = cache.get(v)
                    if code is None:
                        code = cache[v] = float(codes_of.get(v, OTHER_CODE))
                else:
                    key = _category_key(v, field)
                    code = _NAN if key is None else float(codes_of.get(key, OTHER_CODE))
                out[i] = code
            return out
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        lut = np.empty(len(uniques) + 1, dtype=np.float64)
        for i, v in enumerate(uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)):
            key = _category_key(v, field)
            lut[i] = _NAN if key is None else float(codes_of.get(key, OTHER_CODE))
        lut[-1] = _NAN  # code -1 (NA) indexes the last slot
        return lut[codes]


def _category_tally(series: pd.Series, field: str) -> dict[str, int]:
    """How often each category key occurs (nulls left out), via the scalar kernel."""
    tally: dict[str, int] = {}
    if series.dtype == object:
        values: Iterable[tuple[Any, int]] = ((v, 1) for v in series.tolist())
    else:
        vc = series.value_counts(dropna=True)
        values = zip(vc.index.tolist(), vc.tolist(), strict=True)
    for value, n in values:
        key = _category_key(value, field)
        if key is not None:
            tally[key] = tally.get(key, 0) + n
    return tally


def _numeric_column(series: pd.Series, field: str) -> np.ndarray:
    """A numeric input column as float64; the scalar kernel for object columns."""
    dtype = series.dtype
    if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return np.fromiter(
            (_as_float(v, field) for v in series.tolist()), np.float64, count=len(series)
        )
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=_NAN)
    if pd.api.types.is_string_dtype(dtype):
        present = series.dropna()
        if len(present):
            _as_float(present.iloc[0], field)  # raises, naming the field and the value
        return np.full(len(series), _NAN)
    raise ValueError(f"field {field!r}: expected a numeric column, got dtype {dtype}")


def _hstack(parts: list[sp.csr_matrix], n: int, width: int) -> sp.csr_matrix:
    if not parts:
        return sp.csr_matrix((n, width), dtype=np.float64)
    return parts[0] if len(parts) == 1 else sp.hstack(parts, format="csr")


@dataclass(frozen=True)
class HashedGroup:
    """A set of text columns hashed together: its name, columns, column blocks [start, stop)
    of the hashed-text matrix (word n-grams, then character n-grams when `char_range`)."""

    name: str
    columns: tuple[str, ...]
    blocks: tuple[tuple[int, int], ...]
    char_range: tuple[int, int] | None


def hashed_texts(
    rows: Sequence[Sequence[str | None]], hash_dim: int, ngram_range: tuple[int, int]
) -> sp.csr_matrix:
    """`features.text.hashed_ngrams_rows` as an (n, hash_dim) CSR matrix."""
    indptr, idx, val = hashed_ngrams_rows(rows, hash_dim, ngram_range)
    return sp.csr_matrix((val, idx, indptr), shape=(len(rows), hash_dim))


def _text_stats_column(series: pd.Series, field: str, tag_list: bool) -> np.ndarray:
    """Text statistics of a column: `text_stats_many` once per distinct string."""
    distinct, which = _distinct((_as_text(v, field) for v in series.tolist()), len(series))
    if not distinct:
        return np.empty((0, len(TEXT_STAT_NAMES)), dtype=np.float64)
    return text_stats_many(distinct, tag_list=tag_list)[which]


def _distinct(values: Iterable[Hashable], n: int) -> tuple[list[Any], np.ndarray]:
    """The distinct values of `n` values in first-seen order, and each value's index there
    (so `computed_on_distinct[which]` gives one result per original value)."""
    first: dict[Hashable, int] = {}
    which = np.fromiter((first.setdefault(v, len(first)) for v in values), dtype=np.int64, count=n)
    return list(first), which
