"""Contract validation: every problem kind is found, named (table, column, rows) and counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import FORMATS, TABLES
from features.validate import (
    ContractError,
    Problem,
    check_dataset,
    coerce_table,
    validate_dataset,
    validate_table,
)
from tests.support.tables import T0, make_tables


def _only(problems: list[Problem], table: str, column: str | None) -> Problem:
    found = [p for p in problems if p.table == table and p.column == column]
    assert len(found) == 1, problems
    return found[0]


def test_valid_dataset_has_no_problems(tables: dict[str, pd.DataFrame]) -> None:
    assert validate_dataset(tables) == []
    check_dataset(tables)  # does not raise
    for name, df in tables.items():
        assert validate_table(name, df) == []


def test_only_items_is_required(tables: dict[str, pd.DataFrame]) -> None:
    assert validate_dataset({"items": tables["items"]}) == []
    problems = validate_dataset({k: v for k, v in tables.items() if k != "items"})
    p = _only(problems, "items", None)
    assert "required table is missing" in p.message


def test_unknown_table_name_is_a_problem(tables: dict[str, pd.DataFrame]) -> None:
    problems = validate_dataset({**tables, "itemz": tables["items"]})
    assert "unknown table" in _only(problems, "itemz", None).message
    with pytest.raises(ValueError, match="unknown table 'itemz'"):
        validate_table("itemz", tables["items"])


def test_missing_column(tables: dict[str, pd.DataFrame]) -> None:
    problems = validate_table("events", tables["events"].drop(columns=["kind", "ts"]))
    assert {(p.table, p.column) for p in problems} == {("events", "kind"), ("events", "ts")}
    assert all("missing column" in p.message for p in problems)


def test_extra_columns_are_kept_not_rejected(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(score_v2=[1, 2, 3, 4], note="x")
    assert validate_table("items", items) == []
    assert list(coerce_table("items", items).columns[-2:]) == ["score_v2", "note"]


def test_text_in_float_column_is_reported_with_rows(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(duration_s=["12.5", "n/a", "3", "long"])
    p = _only(validate_table("items", coerce_table("items", items)), "items", "duration_s")
    assert p.rows == [1, 3]
    assert p.count == 2
    assert "not a number" in p.message and "'n/a'" in p.message


def test_coerce_keeps_unparseable_column_instead_of_nan(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(duration_s=["12.5", "oops", None, "0"])
    out = coerce_table("items", items)
    # The column is left as text: "oops" is still there for the problem report, not NaN.
    assert out["duration_s"].tolist()[:2] == ["12.5", "oops"]
    assert items["duration_s"].tolist()[1] == "oops"  # input not modified


def test_wrong_dtype_for_text_and_int_columns(tables: dict[str, pd.DataFrame]) -> None:
    creators = tables["creators"].assign(follower_count=[1.0, 2.5, 3.0])
    p = _only(
        validate_table("creators", coerce_table("creators", creators)), "creators", "follower_count"
    )
    assert p.rows == [1] and "whole number" in p.message
    items = tables["items"].assign(region=[1.5, 2.5, 3.5, 4.5])
    p = _only(validate_table("items", items), "items", "region")
    assert p.count == 4 and "expected str" in p.message


def test_right_values_in_wrong_dtype_ask_for_coercion(tables: dict[str, pd.DataFrame]) -> None:
    creators = tables["creators"].assign(follower_count=["1", "2", "3"])
    p = _only(validate_table("creators", creators), "creators", "follower_count")
    assert "coerce_table" in p.message
    assert validate_table("creators", coerce_table("creators", creators)) == []


def test_bad_enum_value_names_allowed_values(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(format=["video", "gif", "reel", "video"])
    p = _only(validate_table("items", items), "items", "format")
    assert p.rows == [1, 2] and p.count == 2
    assert "'gif'" in p.message and "'reel'" in p.message
    assert all(v in p.message for v in FORMATS)


def test_nulls_in_non_nullable_column(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(creator_id=["c1", None, "c2", None])
    p = _only(validate_table("items", items), "items", "creator_id")
    assert p.rows == [1, 3] and "null" in p.message
    # Nullable columns may hold nulls.
    assert validate_table("items", tables["items"].assign(caption=None)) == []


def test_duplicate_ids(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(item_id=["i1", "i2", "i1", "i2"])
    p = _only(validate_table("items", items), "items", "item_id")
    assert p.rows == [0, 1, 2, 3] and "duplicate" in p.message
    creators = tables["creators"].assign(creator_id=["c1", "c1", "c3"])
    assert _only(validate_table("creators", creators), "creators", "creator_id").rows == [0, 1]


def test_empty_ids_are_problems(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(item_id=["i1", " ", "i3", "i4"])
    assert _only(validate_table("items", items), "items", "item_id").rows == [1]


@pytest.mark.parametrize(
    ("table", "column", "values", "bad_rows", "expected"),
    [
        ("events", "watch_frac", [0.5, 1.5, -0.1, None, None, 1.0], [1, 2], "0..1"),
        ("creators", "follower_count", [10, -1, 0], [1], ">= 0"),
        ("labels", "label", [0, 2, 1], [1], "0 or 1"),
        ("items", "duration_s", [1.0, -3.0, None, 0.0], [1], ">= 0"),
        # an open upper end is no licence for infinity ("inf" in a CSV reads as a float)
        ("items", "duration_s", [1.0, float("inf"), None, 0.0], [1], ">= 0 and finite"),
    ],
)
def test_values_out_of_range(
    tables: dict[str, pd.DataFrame],
    table: str,
    column: str,
    values: list[float | None],
    bad_rows: list[int],
    expected: str,
) -> None:
    df = tables[table].assign(**{column: values})
    p = _only(validate_table(table, df), table, column)
    assert p.rows == bad_rows
    assert "out of range" in p.message and expected in p.message


def test_naive_datetimes_are_problems_not_assumed_utc(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(created_at=tables["items"]["created_at"].dt.tz_localize(None))
    out = coerce_table("items", items)
    assert out["created_at"].dt.tz is None  # not silently localized
    p = _only(validate_table("items", out), "items", "created_at")
    assert "without time zone" in p.message and p.count == 4


def test_naive_iso_strings_are_problems(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(
        created_at=[
            "2026-01-05T10:00:00Z",
            "2026-01-05 11:00",
            "2026-01-05",
            "2026-01-05T13:00+01:00",
        ]
    )
    out = coerce_table("items", items)
    problems = validate_table("items", out)
    p = _only(problems, "items", "created_at")
    assert p.rows == [1, 2] and "without time zone" in p.message


def test_unreadable_timestamps_are_told_apart_from_zoneless(
    tables: dict[str, pd.DataFrame],
) -> None:
    items = tables["items"].assign(
        created_at=["2026-01-05T10:00:00Z", "yesterday", "2026-01-05 11:00", "2026-13-45T00:00Z"]
    )
    problems = [p for p in validate_table("items", items) if p.column == "created_at"]
    by_kind = {("zone" in p.message): p.rows for p in problems}
    assert by_kind == {False: [1, 3], True: [2]}


def test_coerce_csv_strings_to_contract_dtypes(tables: dict[str, pd.DataFrame]) -> None:
    creators = pd.DataFrame(
        {
            "creator_id": ["c1", "c2", "c3", "c4"],
            "created_at": [
                "2026-01-05T10:00:00Z",
                "2026-01-05T12:00:00+02:00",
                "2026-01-05 10:00:00+00:00",
                "2026-01-05T10:00:00.123456 UTC",
            ],
            "region": ["us", "de", "br", "us"],
            "verified": ["true", "False", "1", "0"],
            "follower_count": ["10", "0", " 7 ", "123456789012"],
        },
        dtype="str",
    )
    out = coerce_table("creators", creators)
    assert validate_table("creators", out) == []
    assert str(out["created_at"].dt.tz) == "UTC"
    assert out["created_at"].iloc[1] == out["created_at"].iloc[0]  # 12:00+02:00 == 10:00Z
    assert out["created_at"].iloc[3].microsecond == 123456
    assert out["verified"].tolist() == [True, False, True, False]
    assert out["follower_count"].dtype == np.int64
    assert out["follower_count"].tolist() == [10, 0, 7, 123456789012]


def test_bad_bool_text_is_reported(tables: dict[str, pd.DataFrame]) -> None:
    creators = tables["creators"].assign(verified=["true", "maybe", "0"])
    p = _only(
        validate_table("creators", coerce_table("creators", creators)), "creators", "verified"
    )
    assert p.rows == [1] and "'maybe'" in p.message


def test_non_utc_aware_timestamps_become_utc(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(
        created_at=tables["items"]["created_at"].dt.tz_convert("America/New_York")
    )
    out = coerce_table("items", items)
    assert str(out["created_at"].dt.tz) == "UTC"
    assert (out["created_at"] == tables["items"]["created_at"]).all()


def test_integer_ids_convert_to_text(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["items"].assign(item_id=[7017666017, 2, 3, 4])
    out = coerce_table("items", items)
    assert out["item_id"].tolist()[0] == "7017666017"
    assert validate_table("items", out) == []


def test_all_null_optional_columns_fit_any_kind(tables: dict[str, pd.DataFrame]) -> None:
    events = tables["events"].assign(reason=None, text=None, watch_frac=None)
    out = coerce_table("events", events)
    assert validate_table("events", out) == []
    assert out["watch_frac"].dtype == np.float64


def test_appeal_resolved_before_filed(tables: dict[str, pd.DataFrame]) -> None:
    appeals = tables["appeals"].assign(resolved_at=[T0, pd.NaT])
    p = _only(validate_table("appeals", appeals), "appeals", "resolved_at")
    assert p.rows == [0]


@pytest.mark.parametrize("table", ["events", "moderation", "appeals", "labels"])
def test_item_references_must_exist(tables: dict[str, pd.DataFrame], table: str) -> None:
    df = tables[table].copy()
    df.loc[df.index[-1], "item_id"] = "ghost"
    p = _only(validate_dataset({**tables, table: df}), table, "item_id")
    assert p.rows == [len(df) - 1] and "'ghost'" in p.message and "not in items" in p.message


def test_creator_references_checked_when_creators_present(tables: dict[str, pd.DataFrame]) -> None:
    creators = tables["creators"].iloc[:2]
    p = _only(validate_dataset({**tables, "creators": creators}), "items", "creator_id")
    assert p.rows == [3] and "'c3'" in p.message
    # Without a creators table the reference cannot be checked and is not a problem.
    assert validate_dataset({"items": tables["items"]}) == []


def test_every_problem_is_reported_at_once(tables: dict[str, pd.DataFrame]) -> None:
    bad = make_tables()
    bad["items"] = bad["items"].assign(format="gif", item_id=["i1", "i1", "i3", "i4"])
    bad["items"] = bad["items"].drop(columns=["language"])
    bad["events"] = bad["events"].assign(watch_frac=[2.0, None, 1.0, None, None, None])
    bad["creators"] = bad["creators"].assign(follower_count=[-5, 1, 2])
    bad["labels"] = bad["labels"].assign(source=["review", "survey", "import"])
    with pytest.raises(ContractError) as info:
        check_dataset(bad)
    got = {(p.table, p.column) for p in info.value.problems}
    assert got == {
        ("items", "format"),
        ("items", "item_id"),
        ("items", "language"),
        ("events", "watch_frac"),
        ("creators", "follower_count"),
        ("labels", "source"),
    }
    text = str(info.value)
    assert text.startswith("6 contract problem(s)")
    for table, column in got:
        assert f"{table}.{column}" in text
    assert isinstance(info.value, ValueError)


def test_example_rows_are_capped_with_full_count(tables: dict[str, pd.DataFrame]) -> None:
    n = 40
    events = pd.concat([tables["events"]] * 7, ignore_index=True).iloc[:n]
    events = events.assign(kind=["bogus"] * n)
    p = _only(validate_table("events", events), "events", "kind")
    assert p.rows == [0, 1, 2, 3, 4] and p.count == n
    assert f"{n} rows: 0, 1, 2, 3, 4, ..." in str(p)


def test_row_numbers_are_positions_not_index_labels(tables: dict[str, pd.DataFrame]) -> None:
    items = (
        tables["items"]
        .set_index(pd.Index([10, 20, 30, 40]))
        .assign(format=["video", "video", "gif", "video"])
    )
    assert _only(validate_table("items", items), "items", "format").rows == [2]


def test_contract_specs_cover_every_table() -> None:
    # The fixture exercises every column of the contract, so the checks above cover it all.
    tables = make_tables()
    for name, spec in TABLES.items():
        assert list(tables[name].columns) == list(spec.column_names)


def test_categorical_columns_are_judged_by_their_values(tables: dict[str, pd.DataFrame]) -> None:
    events = tables["events"].astype({"kind": "category", "item_id": "category"})
    out = coerce_table("events", events)
    assert validate_table("events", out) == []
    assert isinstance(out["kind"].dtype, pd.StringDtype)
    bad = events.assign(kind=pd.Categorical(["view", "zap", "view", "view", "like", "zap"]))
    assert _only(validate_table("events", coerce_table("events", bad)), "events", "kind").rows == [
        1,
        5,
    ]


def test_bool_labels_become_ints(tables: dict[str, pd.DataFrame]) -> None:
    labels = tables["labels"].assign(label=[False, True, True])
    out = coerce_table("labels", labels)
    assert out["label"].tolist() == [0, 1, 1] and out["label"].dtype == np.int64


def test_repeated_column_names_are_reported(tables: dict[str, pd.DataFrame]) -> None:
    items = pd.concat([tables["items"], tables["items"][["region"]]], axis=1)
    coerced = coerce_table("items", items)  # does not fail on the ambiguous column
    p = _only(validate_table("items", coerced), "items", "region")
    assert "more than once" in p.message


def test_naive_datetime_message_says_how_to_fix(tables: dict[str, pd.DataFrame]) -> None:
    moderation = tables["moderation"].assign(ts=tables["moderation"]["ts"].dt.tz_localize(None))
    p = _only(validate_table("moderation", moderation), "moderation", "ts")
    assert "tz_localize" in p.message and "never assumed UTC" in p.message


def test_non_dataframe_table_is_a_problem(tables: dict[str, pd.DataFrame]) -> None:
    problems = validate_dataset({**tables, "events": [1, 2, 3]})  # type: ignore[dict-item]
    assert "expected a pandas DataFrame" in _only(problems, "events", None).message


def test_unreadable_and_out_of_range_values_in_one_run(tables: dict[str, pd.DataFrame]) -> None:
    events = tables["events"].assign(watch_frac=["0.5", "x", "2.0", None, "-1", None])
    problems = validate_table("events", coerce_table("events", events))
    by_message = {p.message.split(" (")[0].split(",")[0]: p.rows for p in problems}
    assert by_message == {"not a number": [1], "values out of range": [2, 4]}
    creators = tables["creators"].assign(follower_count=["1.5", "-3", "7"])
    problems = validate_table("creators", coerce_table("creators", creators))
    assert [(p.rows, "whole number" in p.message, "range" in p.message) for p in problems] == [
        ([0], True, False),
        ([1], False, True),
    ]
    events = tables["events"].assign(kind=[1, "zap", "view", "view", "like", "view"])
    problems = validate_table("events", events)
    assert [p.rows for p in problems] == [[0], [1]]
    assert "not text" in problems[0].message and "'zap'" in problems[1].message


def test_long_bad_values_are_quoted_cut(tables: dict[str, pd.DataFrame]) -> None:
    """A bad value is quoted in the message cut to a few dozen characters with its length:
    whole, a 100,000-character value came back in the error (an HTTP 422 body, five per
    column)."""
    long = "x" * 100_000
    items = tables["items"].assign(format=["video", long, long + "y", "video"])
    p = _only(validate_table("items", items), "items", "format")
    assert p.rows == [1, 2] and len(p.message) < 400
    assert "(100002 chars)" in p.message and "(100003 chars)" in p.message
    items = tables["items"].assign(duration_s=["12.5", long, "3", "4"])
    p = _only(validate_table("items", coerce_table("items", items)), "items", "duration_s")
    assert p.rows == [1] and len(p.message) < 400 and "'xxx" in p.message
