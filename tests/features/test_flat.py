"""Flat datasets: TOML specs, rows dropped with reasons, blank features kept as missing (never
zero-filled), labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.flat import FlatSpec, LabelRule, load_flat, load_spec
from surfacer.cli import run
from tests.support.paths import REPO, TIKTOK_SPEC

SPEC = """
name = "toy"
path = "data.csv"
id = "vid"
text = ["caption"]
numeric = ["views", "likes"]
categorical = ["tier"]
[labels.spam]
column = "status"
equals = "spam"
[labels.banned]
column = "ban"
not_equals = "active"
"""


def _toy(tmp_path: Path, csv: str, spec: str = SPEC) -> Path:
    (tmp_path / "data.csv").write_text(csv)
    (tmp_path / "toy.toml").write_text(spec)
    return tmp_path / "toy.toml"


TOY_CSV = """vid,caption,views,likes,tier,status,ban,unused
1,hello,10,1,gold,spam,active,x
2,world,20,,gold,ok,banned,x
3,,30,3,free,ok,active,x
4,again,forty,4,free,spam,under review,x
5,last,50,5,free,,active,x
6,fine,60.5,6,gold,ok,active,
"""


def test_toy_dataset_drops_and_explains(tmp_path: Path) -> None:
    ds = load_flat(_toy(tmp_path, TOY_CSV))
    assert ds.n_source_rows == 6
    assert ds.frame["item_id"].tolist() == ["1", "2", "3", "6"]
    assert list(ds.frame.columns) == ["item_id", "as_of", "caption", "views", "likes", "tier"]
    assert ds.frame["views"].tolist() == [10.0, 20.0, 30.0, 60.5]
    assert ds.frame["as_of"].isna().all() and str(ds.frame["as_of"].dt.tz) == "UTC"
    # a blank feature is a missing value, not a reason to lose the row (nor a zero)
    row = ds.frame.set_index("item_id")
    assert np.isnan(row.loc["2", "likes"]) and row.loc["3", "caption"] == ""
    assert ds.missing == {"caption": 1, "likes": 1}
    reasons = dict(zip(ds.dropped["vid"], ds.dropped["reason"], strict=True))
    assert reasons == {"4": "not a number: views", "5": "blank: status"}
    assert ds.dropped["row"].tolist() == [3, 4]
    assert "unused" in ds.dropped.columns  # dropped rows keep all their source columns
    labels = ds.labels.pivot(index="item_id", columns="issue", values="label")
    assert labels.loc["1"].to_dict() == {"banned": 0, "spam": 1}
    assert labels.loc["2"].to_dict() == {"banned": 1, "spam": 0}
    assert labels.loc["6"].to_dict() == {"banned": 0, "spam": 0}
    assert ds.labels["label"].dtype == np.int64
    assert ds.drop_reasons() == {"not a number: views": 1, "blank: status": 1}


def test_blank_features_are_missing_in_training_and_said(tmp_path: Path) -> None:
    from training.data import intake_lines, load_training_data

    td = load_training_data(_toy(tmp_path, TOY_CSV))
    assert td.frame["item_id"].tolist() == ["1", "2", "3", "6"]
    assert td.intake["missing"] == {"caption": 1, "likes": 1}
    assert "  kept as missing values (blank): caption 1, likes 1" in intake_lines(td.intake)
    assert run(["data", "validate", str(tmp_path / "toy.toml")]) == 0


def test_rows_to_score_need_no_labels(tmp_path: Path) -> None:
    """New items have no labels yet: loaded to score, a blank label drops no row and the
    label columns may be missing; the labels that are there are still read."""
    ds = load_flat(_toy(tmp_path, TOY_CSV), labels_required=False)
    assert ds.frame["item_id"].tolist() == ["1", "2", "3", "5", "6"]  # 5: a blank status
    assert set(ds.dropped["vid"]) == {"4"}  # an unreadable feature still drops its row
    got = ds.labels.set_index(["item_id", "issue"])["label"].to_dict()
    assert got == {
        ("1", "spam"): 1,
        ("2", "spam"): 0,
        ("3", "spam"): 0,
        ("6", "spam"): 0,  # 5's blank status gives no spam label
        ("1", "banned"): 0,
        ("2", "banned"): 1,
        ("3", "banned"): 0,
        ("5", "banned"): 0,
        ("6", "banned"): 0,
    }
    no_labels = "\n".join(
        ",".join(line.split(",")[:5]) for line in TOY_CSV.strip().splitlines()
    )  # vid,caption,views,likes,tier
    ds = load_flat(_toy(tmp_path, no_labels + "\n"), labels_required=False)
    assert ds.frame["item_id"].tolist() == ["1", "2", "3", "5", "6"] and ds.labels.empty
    with pytest.raises(ValueError, match="lacks column"):
        load_flat(_toy(tmp_path, no_labels + "\n"))  # to train, the labels must be there


def test_na_values_decide_what_counts_as_blank(tmp_path: Path) -> None:
    csv = "vid,caption,views,likes,tier,status,ban\n1,NA,1,1,g,ok,active\n2,b,1,-,g,ok,active\n"
    ds = load_flat(_toy(tmp_path, csv))
    assert ds.frame["caption"].tolist() == [""] and ds.missing == {"caption": 1}
    assert ds.dropped["reason"].tolist() == ["not a number: likes"]
    ds = load_flat(_toy(tmp_path, csv, 'na_values = ["", "-"]\n' + SPEC))
    assert ds.frame["caption"].tolist() == ["NA", "b"]  # a caption that says "NA" is kept
    assert ds.dropped.empty and ds.missing == {"likes": 1}


def test_whole_line_quoted_rows_are_split_back(tmp_path: Path) -> None:
    csv = (
        "vid,caption,views,likes,tier,status,ban\n"
        "1,plain,1,1,g,ok,active\n"
        '"2,""two, with comma"",2,2,g,spam,active"\n'
        '"3,""line\nbreak"",3,3,g,ok,banned"\n'
        '"4,too,few,fields"\n'
    )
    ds = load_flat(_toy(tmp_path, csv))
    assert ds.repaired == 2
    assert ds.frame["caption"].tolist() == ["plain", "two, with comma", "line\nbreak"]
    assert ds.frame["views"].tolist() == [1.0, 2.0, 3.0]
    # the line that cannot be split stays one field: its labels are blank
    assert ds.dropped["reason"].tolist() == ["blank: status, ban"]


def test_several_reasons_on_one_row(tmp_path: Path) -> None:
    csv = "vid,caption,views,likes,tier,status,ban\n1,,many,,gold,,active\n2,a,1,1,gold,ok,active\n"
    ds = load_flat(_toy(tmp_path, csv))
    assert ds.dropped["reason"].tolist() == ["not a number: views; blank: status"]


def test_missing_columns_are_listed_with_available_ones(tmp_path: Path) -> None:
    csv = "vid,caption,views,tier,status\n1,a,1,gold,ok\n"
    with pytest.raises(ValueError) as info:
        load_flat(_toy(tmp_path, csv))
    msg = str(info.value)
    assert "['likes', 'ban']" in msg
    assert "available columns: vid, caption, views, tier, status" in msg


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    csv = "vid,caption,views,likes,tier,status,ban\n1,a,1,1,g,ok,active\n2,b,1,1,g,ok,active\n1,c,1,1,g,ok,active\n"
    with pytest.raises(ValueError, match=r"repeated ids \(e.g. '1' at rows \[0, 2\]\)"):
        load_flat(_toy(tmp_path, csv))


def test_parquet_source_and_integral_float_ids(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "vid": [12.0, 13.0, np.nan],
            "caption": ["a", "b", "c"],
            "views": [1, 2, 3],
            "likes": [0.5, 1.5, 2.5],
            "tier": ["x", "y", "z"],
            "status": ["spam", "ok", "ok"],
            "ban": ["active", "banned", "active"],
        }
    )
    df.to_parquet(tmp_path / "data.parquet", index=False)
    (tmp_path / "toy.toml").write_text(SPEC.replace("data.csv", "data.parquet"))
    ds = load_flat(tmp_path / "toy.toml")
    assert ds.frame["item_id"].tolist() == ["12", "13"]
    assert ds.dropped["reason"].tolist() == ["blank: vid"]


def test_time_column_needs_a_zone_or_a_declared_timezone(tmp_path: Path) -> None:
    spec = SPEC.replace('id = "vid"', 'id = "vid"\ntime = "posted"')
    csv = (
        "vid,posted,caption,views,likes,tier,status,ban\n"
        "1,2026-01-05T10:00:00Z,a,1,1,g,ok,active\n"
        "2,2026-01-05 12:00,b,1,1,g,ok,active\n"
        "3,someday,c,1,1,g,ok,active\n"
    )
    with pytest.raises(ValueError, match=r"without a time zone .*'2026-01-05 12:00'.*timezone"):
        load_flat(_toy(tmp_path, csv, spec))
    ds = load_flat(
        _toy(
            tmp_path,
            csv,
            spec.replace('time = "posted"', 'time = "posted"\ntimezone = "Europe/Berlin"'),
        )
    )
    assert ds.frame["as_of"].tolist() == [
        pd.Timestamp("2026-01-05 10:00", tz="UTC"),
        pd.Timestamp("2026-01-05 11:00", tz="UTC"),  # 12:00 Berlin (CET) = 11:00 UTC
    ]
    assert ds.dropped["reason"].tolist() == ["not a timestamp: posted"]


def test_spec_paths_resolve_against_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "data.csv").write_text(TOY_CSV)
    (tmp_path / "specs" / "toy.toml").write_text(SPEC.replace("data.csv", "../data.csv"))
    spec = load_spec(tmp_path / "specs" / "toy.toml")
    assert spec.path == (tmp_path / "data.csv").resolve()
    assert len(load_flat(spec).frame) == 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: 'colour = "red"\n' + s, "unknown keys \\['colour'\\]"),
        (lambda s: s + 'colour = "red"\n', "\\[labels.banned\\] has unknown keys \\['colour'\\]"),
        (lambda s: s.replace('path = "data.csv"', ""), "lacks required keys \\['path'\\]"),
        (
            lambda s: s.replace('numeric = ["views", "likes"]', 'numeric = ["views", "status"]'),
            "must not also be",
        ),
        (lambda s: s.replace('categorical = ["tier"]', 'categorical = ["views"]'), "one role only"),
        (
            lambda s: s.replace('equals = "spam"', 'equals = "spam"\nnot_equals = "ok"'),
            "exactly one of",
        ),
        (lambda s: s.replace('column = "status"\n', ""), "needs `column`"),
        (lambda s: s.replace("name =", "name = = "), "not valid TOML"),
    ],
)
def test_bad_specs_are_explained(tmp_path: Path, edit: object, message: str) -> None:
    path = _toy(tmp_path, TOY_CSV, edit(SPEC))  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        load_spec(path)


def test_a_spec_without_id_numbers_the_rows(tmp_path: Path) -> None:
    # a file of only text and label (the UCI SMS spam collection) has no id column to name
    ds = load_flat(_toy(tmp_path, TOY_CSV, SPEC.replace('id = "vid"', "")))
    assert ds.frame["item_id"].tolist() == ["0", "1", "2", "5"]  # 0-based source rows
    assert ds.dropped["row"].tolist() == [3, 4]  # as `dropped` numbers them
    assert "vid" not in ds.frame.columns


def test_missing_spec_and_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        load_spec(tmp_path / "nope.toml")
    (tmp_path / "toy.toml").write_text(SPEC)
    with pytest.raises(FileNotFoundError, match=r"data.csv.*toy.toml"):
        load_flat(tmp_path / "toy.toml")


def test_label_rules() -> None:
    values = pd.Series(["claim", " claim ", "opinion", "1"], dtype="str")
    assert LabelRule("c", equals="claim").apply(values).tolist() == [1, 1, 0, 0]
    assert LabelRule("c", not_equals="claim").apply(values).tolist() == [0, 0, 1, 1]
    assert LabelRule("c", equals=1).apply(values).tolist() == [0, 0, 0, 1]
    assert LabelRule("c", equals=True).apply(pd.Series(["true", "0", "yes"])).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="exactly one"):
        LabelRule("c")


def test_spec_objects_can_be_built_in_code(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text(TOY_CSV)
    spec = FlatSpec(
        name="code",
        path=tmp_path / "data.csv",
        id="vid",
        numeric=["views"],
        labels={"spam": LabelRule("status", equals="spam")},
    )
    ds = load_flat(spec)
    assert ds.frame["item_id"].tolist() == ["1", "2", "3", "6"]  # only id/views/status matter
    assert ds.label_rates() == {"spam": 0.25}


# --- the shipped spec for data/tiktok_claims.csv (in the repo) -------------------------------


@pytest.fixture(scope="module")
def tiktok() -> object:
    return load_flat(TIKTOK_SPEC)


def test_tiktok_labels_never_reach_the_features(tiktok) -> None:  # type: ignore[no-untyped-def]
    # claim_status and author_ban_status decide the labels; as features they would leak them
    spec = tiktok.spec
    label_columns = {r.column for r in spec.labels.values()}
    assert label_columns.isdisjoint(tiktok.frame.columns)
    assert set(spec.feature_columns) <= set(tiktok.frame.columns)
    # the data file resolves inside the repo, wherever the clone is
    assert spec.path.is_file() and spec.path.resolve().is_relative_to(REPO)
    assert set(tiktok.labels["issue"]) == set(spec.labels)


def test_tiktok_rows_kept_dropped_and_repaired(tiktok) -> None:  # type: ignore[no-untyped-def]
    # 19,382 data rows: 1,892 were written as one quoted field per line and are split back
    # into columns; 298 have blank labels and counters and are dropped with their reason.
    assert tiktok.n_source_rows == 19_382
    assert tiktok.repaired == 1_892
    assert len(tiktok.dropped) == 298
    assert len(tiktok.frame) == 19_382 - 298
    assert tiktok.frame["item_id"].is_unique
    assert tiktok.dropped["reason"].str.startswith("blank: ").all()
    assert tiktok.dropped["reason"].str.contains("claim_status").all()
    assert tiktok.dropped["claim_status"].isna().all()
    feats = tiktok.frame.drop(columns=["item_id", "as_of"])
    assert not feats.isna().any().any()  # nothing blank, nothing zero-filled
    assert "claim_status" not in tiktok.frame and "author_ban_status" not in tiktok.frame


def test_tiktok_repaired_row_matches_its_line(tiktok) -> None:  # type: ignore[no-untyped-def]
    # Line 4 of the file: "3,claim,9859838091,31,""someone shared ... andrew carnegie ..."
    row = tiktok.frame.set_index("item_id").loc["9859838091"]
    assert row["video_duration_sec"] == 31
    assert "andrew carnegie had a net worth of $475 million usd" in row["video_transcription_text"]
    assert row["video_view_count"] == 902185 and row["video_comment_count"] == 329
    labels = tiktok.labels.query("item_id == '9859838091'").set_index("issue")["label"]
    assert labels.to_dict() == {"claim": 1, "author_ban": 0}


def test_tiktok_label_rates_are_plausible(tiktok) -> None:  # type: ignore[no-untyped-def]
    rates = tiktok.label_rates()
    assert 0.45 < rates["claim"] < 0.55  # claim vs opinion is close to balanced
    assert 0.15 < rates["author_ban"] < 0.25  # most authors are active
    assert len(tiktok.labels) == 2 * len(tiktok.frame)


def test_tiktok_without_repair_drops_the_quoted_rows_with_reasons(tmp_path: Path) -> None:
    text = TIKTOK_SPEC.read_text().replace("../../data", str(REPO / "data"))
    (tmp_path / "t.toml").write_text("repair_quoted_rows = false\n" + text)
    ds = load_flat(tmp_path / "t.toml")
    assert len(ds.dropped) == 298 + 1_892
    assert ds.repaired == 0
    assert ds.dropped["reason"].str.contains("blank: video_id").sum() == 1_892


def test_cli_validate_and_describe_a_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "validate", str(TIKTOK_SPEC)]) == 0
    out = capsys.readouterr().out
    assert "kept 19084, dropped 298" in out
    assert run(["data", "describe", str(TIKTOK_SPEC)]) == 0
    out = capsys.readouterr().out
    assert "label claim: rate 0.50" in out and "label author_ban" in out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace('path = "data.csv"', "path = 5"), "path must be a non-empty string"),
        (lambda s: s.replace('name = "toy"', "name = 5"), "name must be a non-empty string"),
        (lambda s: 'timezone = "Mars/Olympus"\n' + s, "'Mars/Olympus' is not a known time zone"),
        (lambda s: s.replace('equals = "spam"', 'equals = ["spam", "x"]'), "must be one text"),
    ],
)
def test_spec_values_of_the_wrong_type_are_named(
    tmp_path: Path, edit: object, message: str
) -> None:
    # each of these was a TypeError traceback, a ZoneInfo KeyError naming no spec, or (a list
    # as the label value) a rule compared as the list's text that silently matched no row
    path = _toy(tmp_path, TOY_CSV, edit(SPEC))  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        load_flat(load_spec(path))


def test_label_values_a_typed_rule_cannot_read_are_dropped_with_a_reason(tmp_path: Path) -> None:
    csv = "vid,views,y\n1,10,yes\n2,20,no\n3,30,1\n4,40,0\n"
    spec = 'name = "t"\npath = "data.csv"\nid = "vid"\nnumeric = ["views"]\n'
    path = _toy(tmp_path, csv, spec + '[labels.spam]\ncolumn = "y"\nequals = 1\n')
    ds = load_flat(path)
    assert ds.frame["item_id"].tolist() == ["3", "4"]
    assert ds.drop_reasons() == {"not a number: y": 2}
    # a yes/no column read with a numeric rule: every row unreadable -> an error, not a
    # dataset whose every label is 0 (which training reported as "add labels")
    path = _toy(
        tmp_path,
        csv.replace(",1\n", ",yes\n").replace(",0\n", ",no\n"),
        spec + '[labels.spam]\ncolumn = "y"\nequals = 1\n',
    )
    ds = load_flat(path)
    with pytest.raises(ValueError, match=r"every one of its 4 rows is dropped.*not a number: y 4"):
        ds.check_usable()
    assert run(["data", "validate", str(path), "--no-progress"]) == 2
    path = _toy(tmp_path, csv, spec + '[labels.spam]\ncolumn = "y"\nequals = true\n')
    assert load_flat(path).label_rates() == {"spam": 0.5}


def test_a_rule_whose_value_never_occurs_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toy(tmp_path, TOY_CSV, SPEC.replace('equals = "spam"', 'equals = "Spam"'))
    ds = load_flat(path)
    misses = ds.rule_misses()
    assert list(misses) == ["spam"]
    assert "'Spam' on no kept row" in misses["spam"] and "'ok' 3" in misses["spam"]
    assert run(["data", "describe", str(path), "--no-progress"]) == 0
    assert "note: spam: label rule status == 'Spam'" in capsys.readouterr().out
    assert load_flat(_toy(tmp_path, TOY_CSV)).rule_misses() == {}


def test_a_file_with_a_header_only_is_refused_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it was "valid" (kept 0), and training then failed on "stratified split needs 10 rows"
    path = _toy(tmp_path, TOY_CSV.splitlines()[0] + "\n")
    assert len(load_flat(path).frame) == 0
    assert run(["data", "validate", str(path), "--no-progress"]) == 2
    assert "has no rows" in capsys.readouterr().err


def test_an_unreadable_data_file_is_named(tmp_path: Path) -> None:
    path = _toy(tmp_path, "")
    with pytest.raises(ValueError, match=r"data\.csv' is not readable as utf-8 text"):
        load_flat(path)
    # a folder named as the data file was reported as a file that "does not exist"
    path.write_text(SPEC.replace('path = "data.csv"', 'path = "."'))
    with pytest.raises(ValueError, match="is a folder, not a file"):
        load_flat(path)


def test_latin1_csv_reads_with_its_declared_encoding(tmp_path: Path) -> None:
    # Kaggle's spam.csv is latin-1: without `encoding` it is named, with the fix to make
    csv = "v1,v2\nham,caf\xe9 at noon\nspam,WIN \xa3100 now\n"
    (tmp_path / "spam.csv").write_bytes(csv.encode("latin-1"))
    spec = 'name = "s"\npath = "spam.csv"\ntext = ["v2"]\n[labels.spam]\ncolumn = "v1"\nequals = "spam"\n'
    (tmp_path / "s.toml").write_text(spec)
    with pytest.raises(ValueError, match=r"not readable as utf-8 .*set the spec.s `encoding`"):
        load_flat(tmp_path / "s.toml")
    (tmp_path / "s.toml").write_text('encoding = "latin-1"\n' + spec)
    ds = load_flat(tmp_path / "s.toml")
    assert ds.frame["v2"].tolist() == ["caf\xe9 at noon", "WIN \xa3100 now"]
    assert ds.label_rates() == {"spam": 0.5}


def test_a_tab_separated_file_without_header_or_suffix(tmp_path: Path) -> None:
    # the UCI SMS Spam Collection: `label<TAB>text` lines, no header, no file suffix; texts
    # hold commas and quotes, which tab-separated text does not quote
    lines = ["ham\tOk lar... Joking wif u oni", 'spam\tFree "entry", win now', "ham\tsee, you"]
    (tmp_path / "SMSSpamCollection").write_text("\n".join(lines) + "\n")
    spec = (
        'name = "sms"\npath = "SMSSpamCollection"\nseparator = "\\t"\n'
        'columns = ["label", "text"]\ntext = ["text"]\n'
        '[labels.spam]\ncolumn = "label"\nequals = "spam"\n'
    )
    (tmp_path / "sms.toml").write_text(spec)
    ds = load_flat(tmp_path / "sms.toml")
    assert ds.frame["text"].tolist() == [
        "Ok lar... Joking wif u oni",
        'Free "entry", win now',
        "see, you",
    ]
    assert ds.frame["item_id"].tolist() == ["0", "1", "2"] and ds.dropped.empty
    assert ds.labels.query("issue == 'spam'")["label"].tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('encoding = "klingon"', "not a known text encoding"),
        ('separator = ",,"', "separator must be one character"),
        ("columns = []", "columns .* must be a list of unique non-empty strings"),
        ('columns = ["a", "a"]', "unique"),
    ],
)
def test_bad_text_format_keys_are_explained(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_spec(_toy(tmp_path, TOY_CSV, line + "\n" + SPEC))
