"""FeatureTransform: each feature family with known values, unseen categories, errors, pickling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.base import clone

from features.schema import SNAPSHOT_COLUMNS
from features.text import TEXT_STAT_NAMES
from features.transform import OTHER_CODE, FeatureTransform


def _frame() -> pd.DataFrame:
    # 12 rows: "US" x6, "DE" x5 (both >= 5), "FR" x1 (rare -> other).
    regions = ["US"] * 6 + ["DE"] * 5 + ["FR"]
    return pd.DataFrame(
        {
            "n_view": [0, 9, 99, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            "n_like": [0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "age_h": [1.5, np.nan, 24.0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            "creator_verified": [True, False] * 6,
            "region": regions,
            "caption": ["Hi there!", None, "FREE giveaway link in bio https://x.io #fyp"]
            + [""] * 9,
        }
    )


def _ft(**kw: object) -> FeatureTransform:
    params: dict[str, object] = {
        "numeric": ("age_h", "creator_verified"),
        "counts": ("n_view", "n_like"),
        "ratios": (("n_like", "n_view"),),
        "categorical": ("region",),
        "text": ("caption",),
    }
    params.update(kw)
    return FeatureTransform(**params)  # type: ignore[arg-type]


def _col(ft: FeatureTransform, X: np.ndarray, name: str) -> np.ndarray:
    return X[:, ft.feature_names_.index(name)]


def test_feature_names_and_order() -> None:
    ft = _ft().fit(_frame())
    stats = [f"caption__{s}" for s in TEXT_STAT_NAMES]
    assert ft.feature_names_ == [
        "age_h",
        "creator_verified",
        "log1p_n_view",
        "log1p_n_like",
        "n_like_per_n_view",
        "region",
        *stats,
    ]
    assert ft.categorical_indices_ == [5]
    assert ft.transform(_frame()).shape == (12, len(ft.feature_names_))
    assert ft.transform(_frame()).dtype == np.float64


def test_numeric_counts_ratios_known_values() -> None:
    ft = _ft().fit(_frame())
    X = ft.transform(_frame())
    np.testing.assert_array_equal(_col(ft, X, "age_h")[:3], [1.5, np.nan, 24.0])
    np.testing.assert_array_equal(_col(ft, X, "creator_verified")[:2], [1.0, 0.0])
    assert _col(ft, X, "log1p_n_view")[:3].tolist() == [0.0, math.log1p(9), math.log1p(99)]
    # smoothed rate: num / (den + 1); zero views -> 0, not NaN or inf
    assert _col(ft, X, "n_like_per_n_view")[:3].tolist() == [0.0, 0.1, 0.09]


def test_ratio_is_nan_when_a_side_is_missing() -> None:
    ft = _ft().fit(_frame())
    v = ft.transform_one({"n_like": 3})
    assert math.isnan(v[ft.feature_names_.index("n_like_per_n_view")])
    assert v[ft.feature_names_.index("log1p_n_like")] == math.log1p(3)


def test_categorical_codes_rare_unseen_and_missing() -> None:
    ft = _ft().fit(_frame())
    assert ft.categories_ == {"region": ["DE", "US"]}
    i = ft.feature_names_.index("region")
    assert ft.transform_one({"region": "DE"})[i] == 1.0
    assert ft.transform_one({"region": "US"})[i] == 2.0
    assert ft.transform_one({"region": "FR"})[i] == OTHER_CODE  # seen once: rare
    assert ft.transform_one({"region": "never-seen"})[i] == OTHER_CODE
    assert math.isnan(ft.transform_one({"region": None})[i])
    assert math.isnan(ft.transform_one({})[i])
    X = ft.transform(pd.DataFrame({"region": ["US", "Mars", None]}))
    np.testing.assert_array_equal(X[:, i], [2.0, OTHER_CODE, np.nan])


def test_min_category_count_is_respected() -> None:
    ft = _ft(min_category_count=1).fit(_frame())
    assert ft.categories_ == {"region": ["DE", "FR", "US"]}
    ft = _ft(min_category_count=6).fit(_frame())
    assert ft.categories_ == {"region": ["US"]}


def test_json_numbers_get_the_same_category_code_as_the_frame() -> None:
    frame = pd.DataFrame({"region": [3.0] * 5 + [1.5] * 5})
    ft = FeatureTransform(categorical=("region",)).fit(frame)
    assert ft.categories_ == {"region": ["1.5", "3"]}
    assert ft.transform_one({"region": 3})[0] == ft.transform_one({"region": "3"})[0] == 2.0
    np.testing.assert_array_equal(ft.transform(frame)[:, 0], [2.0] * 5 + [1.0] * 5)


def test_text_stats_in_the_vector() -> None:
    ft = _ft().fit(_frame())
    X = ft.transform(_frame())
    assert _col(ft, X, "caption__n_chars")[0] == 9.0
    assert _col(ft, X, "caption__n_exclaims")[0] == 1.0
    assert _col(ft, X, "caption__has_text")[1] == 0.0  # null caption
    assert math.isnan(_col(ft, X, "caption__n_chars")[1])
    assert _col(ft, X, "caption__n_urls")[2] == 1.0
    assert _col(ft, X, "caption__n_hashtags")[2] == 1.0
    assert _col(ft, X, "caption__spam_share")[2] > 0.0
    assert _col(ft, X, "caption__n_chars")[3] == 0.0  # empty string: zeros, not NaN


def test_group_absent_at_fit_is_not_produced() -> None:
    frame = _frame().drop(columns=["n_like", "caption"])
    ft = _ft().fit(frame)
    assert ft.feature_names_ == ["age_h", "creator_verified", "log1p_n_view", "region"]
    assert ft.text_columns_ == []
    assert ft.ratio_pairs_ == []  # a ratio needs both sides


def test_column_absent_at_transform_gives_nan() -> None:
    ft = _ft().fit(_frame())
    X = ft.transform(pd.DataFrame({"n_view": [1, 2]}))
    assert X.shape == (2, len(ft.feature_names_))
    assert np.isnan(_col(ft, X, "age_h")).all()
    assert np.isnan(_col(ft, X, "region")).all()
    assert (_col(ft, X, "caption__has_text") == 0).all()
    assert np.isnan(_col(ft, X, "caption__n_chars")).all()
    np.testing.assert_array_equal(X, ft.transform_records([{"n_view": 1}, {"n_view": 2}]))


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"n_view": "12"}, "n_view"),
        ({"n_like": "many"}, "n_like"),
        ({"age_h": "2026-01-01T00:00:00Z"}, "age_h"),
        ({"region": [1, 2]}, "region"),
        ({"caption": 12}, "caption"),
        ({"n_view": -1}, "n_view"),
        ({"n_view": None, "n_like": -0.5}, "n_like"),  # a NaN beside must not hide it
        ({"n_view": 10**400}, "n_view"),
        ({"age_h": {"h": 1}}, "age_h"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(record: dict, field: str) -> None:
    ft = _ft().fit(_frame())
    with pytest.raises(ValueError, match=repr(field)):
        ft.transform_one(record)
    with pytest.raises(ValueError, match=repr(field)):
        ft.transform_records([{}, record])


def test_string_count_column_in_a_frame_raises_naming_it() -> None:
    frame = _frame().assign(n_view=[str(i) for i in range(12)])
    with pytest.raises(ValueError, match="'n_view'"):
        _ft().fit(frame)
    ft = _ft().fit(_frame())
    with pytest.raises(ValueError, match="'n_view'"):
        ft.transform(frame)


def test_transform_before_fit_raises() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        _ft().transform_one({})


def test_sklearn_contract_and_pickle_round_trip() -> None:
    ft = _ft()
    assert ft.get_params()["ratios"] == (("n_like", "n_view"),)
    assert ft.get_params()["hash_dim"] == 2**18
    assert clone(ft).get_params() == ft.get_params()
    assert ft.fit(_frame()) is ft
    restored = pickle.loads(pickle.dumps(ft))
    np.testing.assert_array_equal(restored.transform(_frame()), ft.transform(_frame()))
    rec = {"n_view": 5, "region": "US", "caption": "yo"}
    np.testing.assert_array_equal(restored.transform_one(rec), ft.transform_one(rec))
    assert (restored.text_hashed_one(rec) != ft.text_hashed_one(rec)).nnz == 0


def test_online_paths_build_no_pandas_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    ft = FeatureTransform.for_snapshots(min_category_count=1).fit(_frame())
    rec = _frame().iloc[2].to_dict()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the online path built a pandas object")

    monkeypatch.setattr(pd.DataFrame, "__init__", forbidden)
    monkeypatch.setattr(pd.Series, "__init__", forbidden)
    with pytest.raises(AssertionError):  # the guard works
        pd.Series([1])
    v = ft.transform_one(rec)
    m = ft.transform_records([rec, {}])
    h = ft.text_hashed_one(rec)
    monkeypatch.undo()
    np.testing.assert_array_equal(v, ft.transform(_frame())[2])
    np.testing.assert_array_equal(m[0], v)
    assert h.shape == (1, ft.hashed_width) and h.nnz > 0
    assert ft.hashed_width == 2 * 2**18  # word and character n-grams of the text columns


def test_for_snapshots_turns_every_column_it_names_into_features() -> None:
    from features.snapshot import build_snapshots
    from tests.support.tables import make_tables

    snap = build_snapshots(make_tables())
    ft = FeatureTransform.for_snapshots(hash_dim=1024, min_category_count=1)
    configured = set(ft.numeric) | set(ft.counts) | set(ft.categorical) | set(ft.text)
    configured |= {c for pair in ft.ratios for c in pair}
    configured |= {c for group in ft.text_groups for c in group}
    assert configured <= set(SNAPSHOT_COLUMNS)  # it reads nothing the snapshots lack
    ft.fit(snap)
    names, present = set(ft.feature_names_), set(snap.columns)
    missing = [c for c in (*ft.numeric, *ft.categorical) if c in present and c not in names]
    missing += [c for c in ft.counts if c in present and f"log1p_{c}" not in names]
    missing += [
        f"{n}_per_{d}"
        for n, d in ft.ratios
        if n in present and d in present and f"{n}_per_{d}" not in names
    ]
    assert missing == []
    # caption + hashtags: word and character n-grams; comment_text: its own word block
    assert [g.name for g in ft.hashed_groups] == ["text", "comment_text"]
    assert ft.text_hashed(snap).shape == (len(snap), 3 * 1024)
    assert "comment_text" in ft.input_columns


def test_text_hashed_matches_one_and_is_l2_normalised() -> None:
    ft = _ft(hash_dim=1 << 12).fit(_frame())
    H = ft.text_hashed(_frame())
    assert H.shape == (12, 2 << 12)  # word n-grams, then character n-grams
    for block in (H[:, : 1 << 12], H[:, 1 << 12 :]):  # each l2-normalised on its own
        norms = np.sqrt(np.asarray(block.multiply(block).sum(axis=1))).ravel()
        np.testing.assert_allclose(norms[[0, 2]], 1.0)
        assert norms[1] == 0.0  # null caption: empty row
    for i, rec in enumerate(_frame().to_dict("records")):
        one = ft.text_hashed_one(rec)
        assert one.shape == (1, 2 << 12)
        np.testing.assert_array_equal(one.toarray(), H[i].toarray())


def test_numpy_scalars_and_plain_python_values_give_the_same_vector() -> None:
    ft = _ft().fit(_frame())
    plain = {"n_view": 7, "n_like": 2, "age_h": 1.5, "creator_verified": True, "region": "US"}
    numpy_typed = {
        "n_view": np.int64(7),
        "n_like": np.uint8(2),
        "age_h": np.float32(1.5),
        "creator_verified": np.bool_(True),
        "region": np.str_("US"),
    }
    np.testing.assert_array_equal(ft.transform_one(numpy_typed), ft.transform_one(plain))


def test_records_error_names_the_record() -> None:
    ft = _ft().fit(_frame())
    with pytest.raises(ValueError, match=r"record 1: field 'n_view'"):
        ft.transform_records([{"n_view": 1}, {"n_view": "x"}])


def test_index_dtypes_and_empty_frames_do_not_matter() -> None:
    ft = _ft().fit(_frame())
    base = ft.transform(_frame())
    shuffled = _frame().set_axis([f"r{i}" for i in range(11, -1, -1)])
    np.testing.assert_array_equal(ft.transform(shuffled), base)
    as_category = _frame().astype({"region": "category", "caption": "object"})
    np.testing.assert_array_equal(ft.transform(as_category), base)
    nullable = _frame().convert_dtypes()
    np.testing.assert_array_equal(ft.transform(nullable), base)
    assert ft.transform(_frame().iloc[:0]).shape == (0, len(ft.feature_names_))
    assert ft.transform_records([]).shape == (0, len(ft.feature_names_))
    assert ft.text_hashed(_frame().iloc[:0]).shape == (0, ft.hashed_width)


def test_real_snapshots_frame_records_and_json_agree() -> None:
    from features.snapshot import build_snapshots
    from tests.support.tables import make_tables

    snap = build_snapshots(make_tables())
    assert len(snap) > 0
    ft = FeatureTransform.for_snapshots(min_category_count=1).fit(snap)
    assert {"log1p_n_view", "n_like_per_n_view", "caption__n_words"} <= set(ft.feature_names_)
    X = ft.transform(snap)
    records = snap.to_dict("records")  # Timestamps, numpy scalars, NaN as they come
    np.testing.assert_array_equal(ft.transform_records(records), X)
    # what the scoring service receives: JSON, timestamps as ISO strings, NaN as null
    posted = orjson.loads(orjson.dumps(records, default=str, option=orjson.OPT_SERIALIZE_NUMPY))
    for i, rec in enumerate(posted):
        np.testing.assert_array_equal(ft.transform_one(rec), X[i])
