"""Evaluation against planted incidents (the simulator's incidents.json) and a truth-based scorer.

found: a detection of the same issue whose segment has every (dimension, value) of the planted
one (equal or more specific) and that fired within `within` of the planted start.
false alarm: a detection matching no planted incident even loosely (same issue, compatible
segment, during the incident or up to `tail` after it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def _ts(value: Any) -> pd.Timestamp | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _compatible(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return all(a[d] == b[d] for d in set(a) & set(b)) and (
        set(a.items()) <= set(b.items())
        or set(b.items()) <= set(a.items())
        or bool(set(a) & set(b))
    )


def match_incidents(
    detected: Sequence[Mapping[str, Any]],
    planted: Sequence[Mapping[str, Any]],
    *,
    data_start: pd.Timestamp,
    data_end: pd.Timestamp,
    within: pd.Timedelta = pd.Timedelta(hours=24),
    tail: pd.Timedelta = pd.Timedelta(hours=48),
) -> dict[str, Any]:
    """Found share of planted incidents and false alarms per simulated week."""
    found: dict[str, dict[str, Any] | None] = {}
    for p in planted:
        start = _ts(p["start"])
        seg = {str(k): str(v) for k, v in p["segment"].items()}
        hit = None
        for d in detected:
            dseg = {str(k): str(v) for k, v in d["segment"].items()}
            at = _ts(d["detected_at"])
            if (
                d["issue"] == p["issue"]
                and set(seg.items()) <= set(dseg.items())
                and start <= at <= start + within
            ):
                hit = dict(d)
                break
        found[str(p["id"])] = hit
    false_alarms = []
    for d in detected:
        dseg = {str(k): str(v) for k, v in d["segment"].items()}
        at = _ts(d["detected_at"])
        ok = False
        for p in planted:
            start = _ts(p["start"])
            end = _ts(p.get("end")) or data_end
            if (
                d["issue"] == p["issue"]
                and _compatible(dseg, {str(k): str(v) for k, v in p["segment"].items()})
                and start <= at <= end + tail
            ):
                ok = True
                break
        if not ok:
            false_alarms.append(dict(d))
    weeks = (data_end - data_start) / pd.Timedelta(days=7)
    return {
        "planted": len(planted),
        "found": sum(v is not None for v in found.values()),
        "found_rate": (sum(v is not None for v in found.values()) / len(planted))
        if planted
        else float("nan"),
        "false_alarms": len(false_alarms),
        "weeks": weeks,
        "false_alarms_per_week": len(false_alarms) / weeks if weeks > 0 else float("nan"),
        "matches": found,
        "false_alarm_list": false_alarms,
    }


def scores_from_truth(
    truth: pd.DataFrame,
    items: pd.DataFrame,
    *,
    noise: float = 1.0,
    threshold: float = 0.5,
    random_state: int = 0,
) -> pd.DataFrame:
    """A stand-in for `surfacer score` output built from the simulator's latent truth.

    Each issue's score is sigmoid(logit(p_issue) + N(0, noise)): an imperfect scorer that knows
    what the latent model knows. Post-anchored issues get one row per item at posting + 1 h;
    wrongful_enforcement one row per actioned item at its action time.
    """
    rng = np.random.default_rng(random_state)
    created = pd.to_datetime(
        items.set_index(items["item_id"].astype("str"))["created_at"], utc=True
    )
    t = truth.assign(item_id=truth["item_id"].astype("str"))
    issues = [c[2:] for c in t.columns if c.startswith("p_")]
    post_issues = [i for i in issues if i != "wrongful_enforcement"]

    def noisy(p: pd.Series) -> np.ndarray:
        x = np.clip(p.to_numpy(dtype=float), 1e-6, 1 - 1e-6)
        z = np.log(x / (1 - x)) + rng.normal(0.0, noise, len(x))
        return 1.0 / (1.0 + np.exp(-z))

    post = pd.DataFrame(
        {
            "item_id": t["item_id"],
            "as_of": t["item_id"].map(created) + pd.Timedelta(hours=1),
            "anchor": "post",
        }
    )
    for issue in post_issues:
        post[issue] = noisy(t[f"p_{issue}"])
    if "wrongful_enforcement" in issues:
        post["wrongful_enforcement"] = np.nan
    frames = [post]
    if "wrongful_enforcement" in issues and "actioned_at" in t.columns:
        acted = t[t["actioned_at"].notna() & t["p_wrongful_enforcement"].notna()]
        mod = pd.DataFrame(
            {"item_id": acted["item_id"], "as_of": acted["actioned_at"], "anchor": "moderation"}
        )
        for issue in post_issues:
            mod[issue] = np.nan
        mod["wrongful_enforcement"] = noisy(acted["p_wrongful_enforcement"])
        frames.append(mod)
    scores = pd.concat(frames, ignore_index=True)
    cols = [i for i in issues if i in scores.columns]
    probs = scores[cols].to_numpy(dtype=float)
    scores["flagged"] = [
        " ".join(c for c, v in zip(cols, row, strict=True) if v >= threshold) for row in probs
    ]
    return scores
