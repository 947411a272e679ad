"""Property: the batch path, the records path and the one-record path give identical vectors.

Random snapshots with NaN/None values, missing keys, unseen categories, numbers where
categories are expected, hostile unicode text and zero denominators; the frame is built from
the very same records, so any difference is a drift between the paths.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.transform import FeatureTransform

COUNTS = ("n_view", "n_like", "n_report", "n_comment", "n_comment_toxic", "n_view_1h")
NUMERIC = ("age_h", "mean_watch_frac", "creator_verified")
CATEGORICAL = ("region", "format")
TEXT = ("caption", "hashtags")
SEEN = {"region": ["US", "DE", "BR"], "format": ["video", "photo", "live"]}


@pytest.fixture(scope="module")
def fitted() -> FeatureTransform:
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame(
        {
            **{c: rng.integers(0, 500, n) for c in COUNTS},
            "age_h": rng.uniform(0, 48, n),
            "mean_watch_frac": rng.uniform(0, 1, n),
            "creator_verified": rng.random(n) < 0.2,
            "region": rng.choice([*SEEN["region"], "rare"], n, p=[0.33, 0.33, 0.33, 0.01]),
            "format": rng.choice(SEEN["format"], n),
            "caption": rng.choice(["hello #fyp", "FREE giveaway!!! link in bio", "ok"], n),
            "hashtags": rng.choice(["fyp viral", "cats", ""], n),
        }
    )
    return FeatureTransform.for_snapshots(
        numeric=NUMERIC,
        counts=COUNTS,
        categorical=CATEGORICAL,
        text=TEXT,
        ratios=(
            ("n_like", "n_view"),
            ("n_report", "n_view"),
            ("n_comment_toxic", "n_comment"),
            ("n_view_1h", "n_view"),
        ),
        hash_dim=1 << 12,
    ).fit(frame)


_missing_or_null = st.sampled_from([None, math.nan])
_count = st.one_of(
    _missing_or_null,
    st.integers(0, 10**12),
    st.integers(0, 2**70),  # beyond int64: object columns, float rounding
    st.floats(0, 1e300, allow_nan=False),
    st.just(0),
)
_number = st.one_of(
    _missing_or_null,
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
_text_chars = st.characters(exclude_categories=("Cs",))  # lone surrogates cannot enter a frame
_text = st.one_of(
    _missing_or_null,
    st.text(_text_chars, max_size=60),
    st.sampled_from(
        [
            "",
            "   ",
            "WIN FREE iPhone!!!!!! link in bio 👉 https://bit.ly/x #giveaway @spam",
            "sooooo cuuuute 😍😍😍 #cats#dogs",
            "Ünïcödé façade — 東京 ٱلْعَرَبِيَّة",
            "\x00\n\t\u200b\ufeff",
        ]
    ),
)


def _category(column: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        _missing_or_null,
        st.sampled_from(SEEN[column]),
        st.text(_text_chars, max_size=8),  # mostly unseen
        st.integers(-5, 5),
    )


def _record() -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {c: _count for c in COUNTS}
    fields |= {c: _number for c in NUMERIC}
    fields |= {c: _category(c) for c in CATEGORICAL}
    fields |= {c: _text for c in TEXT}
    # every key is optional: a missing key must mean the same as a missing column
    return st.fixed_dictionaries({}, optional=fields)


def _frames(records: list[dict[str, Any]]) -> list[pd.DataFrame]:
    frame = pd.DataFrame(records, index=range(len(records)))
    frames = [frame]
    # nullable/arrow dtypes take the vectorised routes of the batch path
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        frames.append(frame.convert_dtypes())
    return frames


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(_record(), min_size=1, max_size=8))
def test_batch_records_and_one_give_identical_vectors(
    fitted: FeatureTransform, records: list[dict[str, Any]]
) -> None:
    ones = np.array([fitted.transform_one(r) for r in records])
    assert ones.shape == (len(records), len(fitted.feature_names_))
    np.testing.assert_array_equal(fitted.transform_records(records), ones)
    for frame in _frames(records):
        np.testing.assert_array_equal(fitted.transform(frame), ones)

        hashed = fitted.text_hashed(frame)
        for i, r in enumerate(records):
            one = fitted.text_hashed_one(r)
            assert (one != hashed[i]).nnz == 0


@settings(max_examples=60, deadline=None)
@given(records=st.lists(_record(), min_size=1, max_size=5))
def test_fit_on_random_frames_then_paths_agree(records: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(records, index=range(len(records)))
    ft = FeatureTransform(
        numeric=NUMERIC,
        counts=COUNTS,
        categorical=CATEGORICAL,
        text=TEXT,
        ratios=(("n_like", "n_view"),),
        min_category_count=1,
    ).fit(frame)
    assert set(ft.feature_names_) >= set(ft.numeric_columns_)
    X = ft.transform(frame)
    for i, r in enumerate(records):
        np.testing.assert_array_equal(ft.transform_one(r), X[i])
