"""Point-in-time labels: only labels from after as_of count; appeals label moderation rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.issues import DEFAULT_ISSUES
from training.labels import appeal_labels, attach_labels, labels_after


def ts(hours: float) -> pd.Timestamp:
    return pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(hours=hours)


ROWS = pd.DataFrame(
    {
        "item_id": ["a", "a", "b", "c"],
        "as_of": [ts(1), ts(24), ts(1), ts(1)],
        "anchor": ["post", "post", "post", "post"],
    }
)
LABELS = pd.DataFrame(
    {
        "item_id": ["a", "a", "b", "b", "c"],
        "issue": [
            "low_quality",
            "low_quality",
            "low_quality",
            "low_quality",
            "harmful_interactions",
        ],
        "label": [1, 0, 1, 0, 1],
        # a: labelled 1 at 10h then re-labelled 0 at 30h; b: 0 at 0.5h (before as_of), 1 at 5h
        "labeled_at": [ts(10), ts(30), ts(5), ts(0.5), ts(2)],
        "source": ["review"] * 5,
    }
)


def test_only_labels_after_as_of_count_and_the_latest_wins() -> None:
    got = labels_after(ROWS, LABELS, "low_quality")
    # a@1h: labels at 10h (1) and 30h (0) -> latest 0; a@24h: only 30h -> 0
    # b@1h: 0.5h is before as_of, 5h -> 1; c: no low_quality label
    np.testing.assert_array_equal(got, [0.0, 0.0, 1.0, np.nan])
    early = ROWS.assign(as_of=[ts(1), ts(12), ts(1), ts(1)])
    np.testing.assert_array_equal(labels_after(early, LABELS, "low_quality"), [0, 0, 1, np.nan])
    late = ROWS.assign(as_of=[ts(31), ts(31), ts(6), ts(3)])
    assert np.isnan(labels_after(late, LABELS, "low_quality")).all()


def test_appeal_outcomes_label_the_action_they_follow() -> None:
    rows = pd.DataFrame(
        {
            "item_id": ["m1", "m2", "m3", "m4", "m1"],
            "as_of": [ts(2), ts(2), ts(2), ts(2), ts(40)],
            "anchor": ["moderation"] * 5,
        }
    )
    appeals = pd.DataFrame(
        {
            "item_id": ["m1", "m2", "m3", "m1"],
            "filed_at": [ts(3), ts(5), ts(1), ts(41)],
            "resolved_at": [ts(20), pd.NaT, ts(2), ts(50)],
            "outcome": ["overturned", "pending", "upheld", "upheld"],
        }
    )
    got = appeal_labels(rows, appeals)
    # m1@2h -> appeal at 3h overturned; m2 pending; m3's appeal predates the action; m4 none;
    # m1@40h -> the later appeal (upheld)
    np.testing.assert_array_equal(got, [1.0, np.nan, np.nan, np.nan, 0.0])


def test_attach_labels_respects_anchors() -> None:
    rows = pd.concat(
        [
            ROWS,
            pd.DataFrame({"item_id": ["a"], "as_of": [ts(3)], "anchor": ["moderation"]}),
        ],
        ignore_index=True,
    )
    appeals = pd.DataFrame(
        {
            "item_id": ["a"],
            "filed_at": [ts(4)],
            "resolved_at": [ts(9)],
            "outcome": ["overturned"],
        }
    )
    out = attach_labels(rows, {"labels": LABELS, "appeals": appeals}, DEFAULT_ISSUES)
    np.testing.assert_array_equal(out["label_low_quality"], [0, 0, 1, np.nan, np.nan])
    np.testing.assert_array_equal(out["label_harmful_interactions"], [np.nan] * 3 + [1.0, np.nan])
    np.testing.assert_array_equal(out["label_wrongful_enforcement"], [np.nan] * 4 + [1.0])


def test_conflicting_labels_read_as_1_and_are_counted_in_the_intake(tmp_path) -> None:
    """A tie (same item, issue and labeled_at; 0 and 1) resolved to 1 without a word; the
    rule stays, and the train report now counts the conflicts. One appeal and one event
    dated 2099 are dropped (the appeal labels nothing) and counted, and the end of data
    stays where the rest of the data ends."""
    from features.io import write_dataset
    from simulator.config import SimConfig
    from simulator.core import simulate
    from training.data import intake_lines, load_training_data

    tables = dict(simulate(SimConfig(n_items=300, days=4, seed=1)).tables)
    clean = load_training_data(write_dataset(tables, tmp_path / "clean"))
    labels = tables["labels"]
    first = labels.iloc[[0]]
    tables["labels"] = pd.concat([labels, first.assign(label=1 - first["label"])])
    far = pd.Timestamp("2099-01-01", tz="UTC")
    tables["events"] = pd.concat([tables["events"], tables["events"].iloc[[0]].assign(ts=far)])
    appeal = tables["appeals"].iloc[[0]].assign(filed_at=far, resolved_at=far)
    tables["appeals"] = pd.concat([tables["appeals"].iloc[1:], appeal])
    td = load_training_data(write_dataset(tables, tmp_path / "hostile"))

    issue = str(first["issue"].iloc[0])
    assert td.intake["label_conflicts"] == {issue: 2}
    assert td.intake["dropped"] == {
        **{k: 1 for k in td.intake["dropped"] if k.startswith(("events rows", "appeals rows"))},
        **clean.intake["dropped"],
    }
    assert len(td.intake["dropped"]) == len(clean.intake["dropped"]) + 2
    assert len(td.frame) == len(clean.frame)
    text = "\n".join(intake_lines(td.intake))
    assert "2 labels conflict" in text and "read as 1" in text
    assert "dropped 1: events rows dated far beyond the rest" in text
    # the far appeal labels nothing: the rows are as without it
    tables["appeals"] = tables["appeals"].iloc[:-1]
    without = load_training_data(write_dataset(tables, tmp_path / "without"))
    pd.testing.assert_frame_equal(td.frame, without.frame)
