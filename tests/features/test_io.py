"""Dataset folders: round-trips through Parquet and CSV, atomic writes, clear load errors, CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import TABLE_ORDER
from features.io import describe_dataset, load_dataset, table_summary, write_dataset
from features.validate import ContractError, coerce_table
from surfacer.cli import run
from tests.support.tables import make_tables

# Any text except a lone carriage return, which pandas' to_csv leaves unquoted and every CSV
# reader then takes for a line break (the loader reports the broken rows; see test below).
_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r")


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def _assert_same(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    assert list(got) == [n for n in TABLE_ORDER if n in want]
    for name, df in want.items():
        pd.testing.assert_frame_equal(got[name], coerce_table(name, df), check_dtype=True)


def test_parquet_round_trip(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    out = write_dataset(tables, tmp_path / "ds")
    assert out == tmp_path / "ds"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in tables)
    _assert_same(load_dataset(out), tables)
    assert _siblings(out) == ["ds"]  # no temp folder left behind


def test_csv_round_trip(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    for name, df in tables.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    got = load_dataset(folder)
    _assert_same(got, tables)
    # An empty cell in a non-nullable text column is "" (no hashtags), in a nullable one null.
    assert got["items"]["hashtags"].tolist()[1] == ""
    assert got["items"]["caption"].isna().tolist() == [False, True, False, False]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    captions=st.lists(st.one_of(st.none(), st.text(_TEXT, min_size=1)), min_size=4, max_size=4),
    hashtags=st.lists(st.text(_TEXT, max_size=12), min_size=4, max_size=4),
)
def test_csv_keeps_any_text(
    tmp_path: Path, captions: list[str | None], hashtags: list[str]
) -> None:
    # Commas, quotes, newlines, unicode, "NA"-like words and empty hashtags all survive CSV.
    items = make_tables()["items"].assign(caption=captions, hashtags=hashtags)
    folder = tmp_path / "csv"
    folder.mkdir(exist_ok=True)
    items.to_csv(folder / "items.csv", index=False)
    pd.testing.assert_frame_equal(load_dataset(folder)["items"], coerce_table("items", items))


def test_broken_csv_rows_are_reported_not_guessed(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    tables["items"].assign(caption=["a\rb", None, "c", "d"]).to_csv(
        tmp_path / "items.csv", index=False
    )
    with pytest.raises(ContractError, match=r"items\.created_at"):
        load_dataset(tmp_path)


def test_csv_with_text_cells_that_look_like_nulls(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    tables["items"].assign(caption=["NA", "null", "None", None]).to_csv(
        folder / "items.csv", index=False
    )
    got = load_dataset(folder)["items"]["caption"]
    assert got.tolist()[:3] == ["NA", "null", "None"] and pd.isna(got.iloc[3])


def test_mixed_formats_and_optional_tables(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    tables["items"].to_parquet(folder / "items.parquet", index=False)
    tables["events"].to_csv(folder / "events.csv", index=False)
    (folder / "README.txt").write_text("not a table")
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    got = load_dataset(folder)
    assert list(got) == ["items", "events"]
    _assert_same(got, {"items": tables["items"], "events": tables["events"]})


def test_extra_columns_survive_the_round_trip(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    tables["items"] = tables["items"].assign(quality=[0.1, 0.2, 0.3, 0.4])
    got = load_dataset(write_dataset(tables, tmp_path / "ds"))
    assert got["items"]["quality"].tolist() == [0.1, 0.2, 0.3, 0.4]
    summary = table_summary(got).set_index("table")
    assert summary.loc["items", "extra_columns"] == ["quality"]
    assert summary.loc["events", "extra_columns"] == []


def test_table_in_both_formats_is_an_error(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    tables["items"].to_parquet(tmp_path / "items.parquet", index=False)
    tables["items"].to_csv(tmp_path / "items.csv", index=False)
    with pytest.raises(ValueError, match=r"items.parquet, items.csv"):
        load_dataset(tmp_path)


def test_missing_items_names_folder_and_expected_files(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    tables["events"].to_parquet(tmp_path / "events.parquet", index=False)
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "items.parquet" in str(info.value) and "items.csv" in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_load_reports_problems_of_all_tables(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    tables["items"].assign(created_at="2026-01-05 10:00").to_csv(
        tmp_path / "items.csv", index=False
    )
    tables["events"].assign(watch_frac=["0.5", "x", "", "", "", ""]).to_csv(
        tmp_path / "events.csv", index=False
    )
    with pytest.raises(ContractError) as info:
        load_dataset(tmp_path)
    got = {(p.table, p.column): p.rows for p in info.value.problems}
    assert got == {("items", "created_at"): [0, 1, 2, 3], ("events", "watch_frac"): [1]}
    assert str(tmp_path) in str(info.value)


def test_bad_input_writes_nothing(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    tables["events"] = tables["events"].assign(kind="teleport")
    out = tmp_path / "ds"
    with pytest.raises(ContractError, match=r"events\.kind"):
        write_dataset(tables, out, extra_files={"truth.parquet": b"x"})
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_unless_asked(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    out = write_dataset(tables, tmp_path / "ds", extra_files={"incidents.json": b"[1]"})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_dataset({"items": tables["items"]}, out)
    assert (out / "incidents.json").read_bytes() == b"[1]"  # untouched
    write_dataset({"items": tables["items"].iloc[:2]}, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["items.parquet"]  # old files gone
    assert len(load_dataset(out)["items"]) == 2
    assert _siblings(out) == ["ds"]  # neither temp nor old folder left behind


def test_writes_into_an_existing_empty_folder(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    (tmp_path / "ds").mkdir()
    write_dataset({"items": tables["items"]}, tmp_path / "ds")
    assert len(load_dataset(tmp_path / "ds")["items"]) == 4


def test_failed_write_keeps_the_old_dataset(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    out = write_dataset(tables, tmp_path / "ds")
    # A valid table whose extra column Parquet cannot store makes the write fail midway.
    broken = tables["items"].assign(blob=[object(), object(), object(), object()])
    with pytest.raises(ValueError, match=r"column blob"):
        write_dataset({**tables, "items": broken}, out, overwrite=True)
    assert _siblings(out) == ["ds"]
    _assert_same(load_dataset(out), tables)


def test_extra_files_are_written_and_checked(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    out = write_dataset(
        {"items": tables["items"]},
        tmp_path / "sim" / "run1",  # parent folders are created
        extra_files={"truth.parquet": b"PAR1", "incidents.json": b'[{"id": "inc1"}]'},
    )
    assert (out / "truth.parquet").read_bytes() == b"PAR1"
    assert (out / "incidents.json").read_text() == '[{"id": "inc1"}]'
    assert list(load_dataset(out)) == ["items"]  # extra files are not tables
    for bad in ("../escape.json", "items.parquet", "sub/x.json"):
        with pytest.raises(ValueError, match="extra file name"):
            write_dataset({"items": tables["items"]}, tmp_path / "other", extra_files={bad: b""})
    assert not (tmp_path / "other").exists()


def test_describe_dataset(tables: dict[str, pd.DataFrame]) -> None:
    info = describe_dataset({n: coerce_table(n, df) for n, df in tables.items()})
    per_table = info["tables"].set_index("table")
    assert per_table.loc["events", "rows"] == 6
    assert per_table.loc["items", "start"] == tables["items"]["created_at"].min()
    assert per_table.loc["items", "end"] == tables["items"]["created_at"].max()
    rates = info["labels"].set_index("issue")["rate"].to_dict()
    assert rates == {"harmful_interactions": 1.0, "low_quality": 0.5}
    kinds = info["breakdown"].query("table == 'events'").set_index("value")["rows"]
    assert kinds.sum() == 6 and kinds["view"] == 2


def test_cli_validate_good_and_bad(
    tables: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_dataset(tables, tmp_path / "good")
    assert run(["data", "validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "valid (6 tables)" in out and "events" in out

    bad = tmp_path / "bad"
    bad.mkdir()
    tables["items"].assign(format=["video", "gif", "live", "video"]).to_csv(
        bad / "items.csv", index=False
    )
    assert run(["data", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "items.format" in err and "'gif'" in err and "1 row: 1" in err


def test_cli_describe(
    tables: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_dataset(tables, tmp_path / "good")
    assert run(["data", "describe", str(good)]) == 0
    out = capsys.readouterr().out
    assert "label rates" in out and "low_quality" in out and "2026-01-05" in out
    assert run(["data", "describe", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_load_progress_bar_goes_to_stderr(
    tables: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = write_dataset(tables, tmp_path / "ds")
    load_dataset(out, progress=True)
    captured = capsys.readouterr()
    assert "load" in captured.err and "7/7" in captured.err
    assert captured.out == ""


def test_an_unreadable_csv_names_its_table_and_file(
    tables: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # pandas' own messages ("No columns to parse from file", a bare UnicodeDecodeError) named
    # neither the table nor the file
    folder = tmp_path / "ds"
    folder.mkdir()
    tables["items"].to_csv(folder / "items.csv", index=False)
    (folder / "labels.csv").write_text("")
    with pytest.raises(ValueError, match=r"labels table .*labels\.csv' is not a readable"):
        load_dataset(folder)
    (folder / "labels.csv").unlink()
    (folder / "items.csv").write_bytes("item_id,caption\ni1,caf\xe9\n".encode("latin-1"))
    assert run(["data", "validate", str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: items table ") and "items.csv" in err and "UTF-8" in err


def test_files_that_are_no_table_are_named_not_silently_skipped(
    tables: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from features.io import ignored_files

    folder = tmp_path / "ds"
    folder.mkdir()
    tables["items"].to_csv(folder / "items.csv", index=False)
    tables["events"].to_csv(folder / "event.csv", index=False)  # a misspelt table name
    (folder / "truth.parquet").write_bytes(b"")  # the simulator's ground truth: expected
    (folder / "notes.txt").write_text("not data")
    assert ignored_files(folder) == ["event.csv"]
    assert run(["data", "validate", str(folder), "--no-progress"]) == 0
    assert "note: not read, no contract table: event.csv" in capsys.readouterr().out
