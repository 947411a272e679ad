"""Point-in-time labels: attach to each snapshot row (item, as_of) the label known after it.

A label describes the item as judged later, so it may only come from after the instant the
row is scored at: for post-anchored issues a `labels` row counts for (item, as_of) only if
`labeled_at > as_of` (the latest such label wins: a re-review overrides a first look; a 0
and a 1 at the same instant read as 1). For
`wrongful_enforcement`, the appeal filed after the moderation action decides (overturned 1,
upheld 0, pending or no appeal unlabeled); a `labels` row for that issue fills in otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from models.issues import IssueType
from training.evaluate import label_column

APPEAL_ISSUE = "wrongful_enforcement"
APPEAL_LABEL = {"overturned": 1.0, "upheld": 0.0}


def _utc(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s, utc=True)
    return s.astype("datetime64[ns, UTC]")


def labels_after(rows: pd.DataFrame, labels: pd.DataFrame, issue: str) -> np.ndarray:
    """For each row of `rows` (item_id, as_of), the latest label of `issue` with labeled_at > as_of.

    Returns a float array aligned with `rows` (1.0, 0.0, NaN where no label qualifies).
    """
    out = np.full(len(rows), np.nan)
    if len(rows) == 0 or labels is None or len(labels) == 0:
        return out
    lab = labels.loc[labels["issue"].astype("object") == issue, ["item_id", "label", "labeled_at"]]
    if lab.empty:
        return out
    left = pd.DataFrame(
        {
            "item_id": rows["item_id"].astype("object").to_numpy(),
            "as_of": _utc(rows["as_of"]).to_numpy(),
            "_row": np.arange(len(rows)),
        }
    )
    right = pd.DataFrame(
        {
            "item_id": lab["item_id"].astype("object").to_numpy(),
            "label": lab["label"].astype("float64").to_numpy(),
            "labeled_at": _utc(lab["labeled_at"]).to_numpy(),
        }
    )
    joined = left.merge(right, on="item_id", how="inner")
    joined = joined[joined["labeled_at"] > joined["as_of"]]
    if joined.empty:
        return out
    # latest label per row; a 0 and a 1 at the same labeled_at read as 1 (an analyst saw the
    # issue, so the item is no clean negative); `surfacer train` counts such conflicts
    # (training.data.conflicting_labels) and `data validate` warns about them
    joined = joined.sort_values(["_row", "labeled_at", "label"], kind="stable")
    last = joined.groupby("_row", sort=False).tail(1)
    out[last["_row"].to_numpy()] = last["label"].to_numpy()
    return out


def appeal_labels(rows: pd.DataFrame, appeals: pd.DataFrame) -> np.ndarray:
    """For moderation-anchored rows: the outcome of the first appeal filed at or after as_of.

    overturned -> 1, upheld -> 0, pending or none -> NaN. An appeal answers the action it
    follows, so each row looks forward to the next filing for its item only.
    """
    out = np.full(len(rows), np.nan)
    if len(rows) == 0 or appeals is None or len(appeals) == 0:
        return out
    left = pd.DataFrame(
        {
            "item_id": rows["item_id"].astype("object").to_numpy(),
            "as_of": _utc(rows["as_of"]).to_numpy(),
            "_row": np.arange(len(rows)),
        }
    ).sort_values("as_of", kind="stable")
    right = pd.DataFrame(
        {
            "item_id": appeals["item_id"].astype("object").to_numpy(),
            "filed_at": _utc(appeals["filed_at"]).to_numpy(),
            "outcome": appeals["outcome"].astype("object").to_numpy(),
        }
    ).sort_values("filed_at", kind="stable")
    matched = pd.merge_asof(
        left,
        right,
        left_on="as_of",
        right_on="filed_at",
        by="item_id",
        direction="forward",
        allow_exact_matches=True,
    )
    values = matched["outcome"].map(APPEAL_LABEL).astype("float64").to_numpy()
    out[matched["_row"].to_numpy()] = values
    return out


def attach_labels(
    snapshots: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    issues: Sequence[IssueType],
) -> pd.DataFrame:
    """Add one `label_<issue>` column per issue (NaN on rows of other anchors or unlabeled)."""
    out = snapshots.copy()
    labels = tables.get("labels")
    appeals = tables.get("appeals")
    anchors = (
        out["anchor"].astype("object").to_numpy()
        if "anchor" in out.columns
        else np.full(len(out), "post", dtype=object)
    )
    for issue in issues:
        col = np.full(len(out), np.nan)
        rows = np.flatnonzero(anchors == issue.anchor)
        if len(rows):
            sub = out.iloc[rows]
            values = labels_after(sub, labels, issue.name)
            if issue.name == APPEAL_ISSUE or issue.label_source == "appeals":
                from_appeals = appeal_labels(sub, appeals)
                values = np.where(np.isfinite(from_appeals), from_appeals, values)
            col[rows] = values
        out[label_column(issue.name)] = col
    return out
