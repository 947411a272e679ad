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
