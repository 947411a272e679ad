"""Model health: the champion's inputs and scores now against its training reference.

Per feature of the scored snapshots (`post` anchors): numeric columns are binned at the
reference's deciles, categorical ones by the reference's frequent values, text fields
(caption, hashtags) by the reference's frequent tokens, each with an "other" bin, so new
values or words land there. Each feature gets the population stability index (PSI, the
effect size) and a two-sample test from scipy (Kolmogorov-Smirnov for numbers, chi-square
on the bins otherwise, the p-value Bonferroni-adjusted over the features). A feature drifts
when both say so: p below `alpha` and PSI at least `psi_min` (0.2, the usual "significant
shift" convention); with large samples a test alone flags shifts too small to matter, and
PSI alone flags noise in small ones. Scores per issue are compared the same way. Features
that grow with calendar time by construction (a creator's age and history) are left out.

A drift becomes a `model_health` incident record (for `ReviewStore.upsert_incidents` with
kind "model_health"): one for the inputs naming the drifting features and, per feature,
the single-dimension segments where it moved most; one per issue whose score distribution
shifted. Live precision from the review sample is on the console's Model quality page.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TEXT_FIELDS = ("caption", "hashtags")
CATEGORICAL = ("format", "region", "language", "category", "action", "action_source")
SEGMENT_DIMS = ("region", "format", "category", "language")
# Columns that identify a row or its time, not what the model sees as a distribution.
IDENTITY = {"item_id", "as_of", "anchor", "horizon_h", "creator_id", "created_at", "audio_id"}
# Features that grow with calendar time by construction (a creator's age and history up to
# as_of): later data always differs from the training period there, and that is the
# calendar, not a changed population. They are left out of the comparison.
CUMULATIVE = {
    "age_h",
    "creator_age_d",
    "creator_n_items",
    "creator_prior_removals",
    "creator_prior_overturned",
}
SKIP = IDENTITY | CUMULATIVE
_TOKEN = re.compile(r"[\w#]+", re.UNICODE)
EPS = 1e-4


@dataclass(frozen=True)
class Drift:
    """One feature's (or issue score's) shift: PSI, adjusted p-value, whether it drifts."""

    name: str
    kind: str  # numeric, categorical, text, score
    psi: float
    p_value: float
    drifted: bool
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "psi": round(self.psi, 4),
            "p_value": self.p_value,
            "drifted": self.drifted,
            **self.detail,
        }


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    pe = np.maximum(e / e.sum(), EPS)
    pa = np.maximum(a / a.sum(), EPS)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def _chi2(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import chi2_contingency

    table = np.vstack([ref, cur]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table)[1])


def _numeric(ref: pd.Series, cur: pd.Series) -> tuple[float, float, dict[str, Any]]:
    from scipy.stats import ks_2samp

    r = pd.to_numeric(ref, errors="coerce").dropna().to_numpy(float)
    c = pd.to_numeric(cur, errors="coerce").dropna().to_numpy(float)
    if len(r) < 20 or len(c) < 20:
        return 0.0, 1.0, {"note": "too few values"}
    edges = np.unique(np.quantile(r, np.linspace(0.1, 0.9, 9)))
    rb = np.bincount(np.searchsorted(edges, r, side="right"), minlength=len(edges) + 1)
    cb = np.bincount(np.searchsorted(edges, c, side="right"), minlength=len(edges) + 1)
    p = float(ks_2samp(r, c).pvalue)
    return (
        psi(rb, cb),
        p,
        {"reference_mean": round(float(r.mean()), 4), "current_mean": round(float(c.mean()), 4)},
    )


def _bins(
    ref_values: Sequence[str], cur_values: Sequence[str], top: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rc, cc = Counter(ref_values), Counter(cur_values)
    keep = [v for v, _ in rc.most_common(top)]
    kept = set(keep)
    r = np.array([rc[v] for v in keep] + [sum(n for v, n in rc.items() if v not in kept)])
    c = np.array([cc[v] for v in keep] + [sum(n for v, n in cc.items() if v not in kept)])
    new = [v for v, _ in cc.most_common() if v not in rc][:10]
    return r, c, new


def _categorical(
    ref: pd.Series, cur: pd.Series, top: int = 30
) -> tuple[float, float, dict[str, Any]]:
    r, c, new = _bins(ref.astype("str").tolist(), cur.astype("str").tolist(), top)
    return psi(r, c), _chi2(r, c), {"new_values": new}


def tokens(texts: pd.Series) -> list[str]:
    """Lower-cased word and #tag tokens of a text column (missing text: none)."""
    out: list[str] = []
    for t in texts.dropna().astype("str"):
        out.extend(_TOKEN.findall(t.lower()))
    return out


def _text(ref: pd.Series, cur: pd.Series, top: int = 200) -> tuple[float, float, dict[str, Any]]:
    rt, ct = tokens(ref), tokens(cur)
    if len(rt) < 50 or len(ct) < 50:
        return 0.0, 1.0, {"note": "too little text"}
    r, c, new = _bins(rt, ct, top)
    unseen = set(ct) - set(rt)
    share = sum(n for v, n in Counter(ct).items() if v in unseen) / len(ct)
    return psi(r, c), _chi2(r, c), {"new_tokens": new, "unseen_token_share": round(share, 4)}


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    alpha: float = 0.01,
    psi_min: float = 0.2,
) -> list[Drift]:
    """Drift of every feature column the two snapshot frames share (post anchors)."""
    ref, cur = _posts(reference), _posts(current)
    out = []
    columns = [c for c in ref.columns if c in cur.columns and c not in SKIP]
    raw = []
    for col in columns:
        if col in TEXT_FIELDS:
            kind, (value, p, detail) = "text", _text(ref[col], cur[col])
        elif col in CATEGORICAL or not pd.api.types.is_numeric_dtype(ref[col]):
            kind, (value, p, detail) = "categorical", _categorical(ref[col], cur[col])
        else:
            kind, (value, p, detail) = "numeric", _numeric(ref[col], cur[col])
        raw.append((col, kind, value, p, detail))
    n = max(len(raw), 1)
    for col, kind, value, p, detail in raw:
        adj = min(1.0, p * n)
        out.append(Drift(col, kind, value, adj, adj < alpha and value >= psi_min, detail))
    return out


def score_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    issues: Sequence[str],
    *,
    alpha: float = 0.01,
    psi_min: float = 0.2,
) -> list[Drift]:
    """Shift of each issue's score distribution (columns named by issue in both frames)."""
    out = []
    present = [i for i in issues if i in reference.columns and i in current.columns]
    for issue in present:
        value, p, detail = _numeric(reference[issue], current[issue])
        adj = min(1.0, p * max(len(present), 1))
        out.append(Drift(issue, "score", value, adj, adj < alpha and value >= psi_min, detail))
    return out


def _posts(frame: pd.DataFrame) -> pd.DataFrame:
    if "anchor" in frame.columns:
        frame = frame[frame["anchor"].astype("str") == "post"]
    return frame.reset_index(drop=True)


def drift_segments(
    reference: pd.DataFrame, current: pd.DataFrame, drift: Drift, *, top: int = 3
) -> list[dict[str, Any]]:
    """The single-dimension segments where one drifting feature moved most (by PSI)."""
    ref, cur = _posts(reference), _posts(current)
    found = []
    for dim in SEGMENT_DIMS:
        if dim not in ref.columns or dim not in cur.columns:
            continue
        for value in cur[dim].astype("str").value_counts().index[:20]:
            r = ref.loc[ref[dim].astype("str") == value, drift.name]
            c = cur.loc[cur[dim].astype("str") == value, drift.name]
            if len(r) < 30 or len(c) < 30:
                continue
            fn = {"text": _text, "categorical": _categorical}.get(drift.kind, _numeric)
            found.append({"segment": {dim: value}, "psi": round(fn(r, c)[0], 4)})
    return sorted(found, key=lambda s: -s["psi"])[:top]


def health_records(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    reference_scores: pd.DataFrame | None = None,
    current_scores: pd.DataFrame | None = None,
    issues: Sequence[str] = (),
    alpha: float = 0.01,
    psi_min: float = 0.2,
) -> tuple[list[dict[str, Any]], list[Drift]]:
    """Model-health incident records for drifts of `current` from `reference`, and every
    feature's and score's drift measure (drifting or not)."""
    drifts = feature_drift(reference, current, alpha=alpha, psi_min=psi_min)
    scores: list[Drift] = []
    if reference_scores is not None and current_scores is not None:
        scores = score_drift(reference_scores, current_scores, issues, alpha=alpha, psi_min=psi_min)
    times = pd.to_datetime(_posts(current)["as_of"], utc=True)
    start, end = times.min(), times.max()
    window = {"start": start.isoformat(), "end": end.isoformat(), "detected_at": end.isoformat()}
    records = []
    moved = sorted((d for d in drifts if d.drifted), key=lambda d: -d.psi)
    if moved:
        records.append(
            {
                "issue": "model_inputs",
                "segment": {},
                **window,
                "severity": _severity(moved),
                "signal": "feature_drift",
                "evidence": {
                    "drifting": [d.name for d in moved],
                    "features": [
                        {**d.to_dict(), "segments": drift_segments(reference, current, d)}
                        for d in moved
                    ],
                    "checked": len(drifts),
                    "alpha": alpha,
                    "psi_min": psi_min,
                },
            }
        )
    for d in scores:
        if d.drifted:
            records.append(
                {
                    "issue": d.name,
                    "segment": {},
                    **window,
                    "severity": _severity([d]),
                    "signal": "score_drift",
                    "evidence": {"drifting": [f"score:{d.name}"], "score": d.to_dict()},
                }
            )
    return records, drifts + scores


def _severity(drifts: Sequence[Drift]) -> float:
    p = min(max(d.p_value, 1e-300) for d in drifts)
    return round(min(-np.log10(p), 300.0), 3)


def summarize(drifts: Sequence[Drift]) -> Mapping[str, Any]:
    """Counts for a one-line report."""
    return {
        "checked": len(drifts),
        "drifting": [d.name for d in drifts if d.drifted],
    }
