"""Discovery into a system of record: incident records, their evidence pools and fix effects.

Nothing here touches a database: `incident_records` turns a discovery run into plain dicts
an incident store upserts (`ReviewStore.upsert_incidents`), and `measure_effects` works
against any store with `pending_effects` and `set_effect`. Everything is deterministic for
the same data (seeded samples, a closed-form effect interval), so a rerun proposes the same values and
the store changes nothing.

Evidence pool: when the run had model scores, each incident carries a sample of the scored
`post` snapshots of its segment whose as_of falls in its window, flagged for its issue and
not; acknowledging the incident queues them for review. Without scores there is no pool
(the raw proxies score no item).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from discovery.pipeline import DiscoveryResult, Trend
from discovery.rootcause import format_table
from discovery.series import canonical, segment_key, segment_mask
from discovery.signals import item_dimensions

# Scored rows per stratum (flagged / unflagged) kept in an incident's evidence pool.
POOL_PER_STRATUM = 40
# Items-table fields copied into a pooled item's snapshot (what the console shows).
SNAPSHOT_FIELDS = ("caption", "hashtags", "region", "category", "format", "language", "audio_id")
# Each table's time column, for cutting a dataset to a sliding window.
TIME_COLUMNS = {
    "items": "created_at",
    "events": "ts",
    "moderation": "ts",
    "appeals": "filed_at",
    "labels": "labeled_at",
}
_SCORE_KEYS = {"item_id", "as_of", "anchor", "flagged", "disabled", "horizon_h", "model_version"}


class IncidentStore(Protocol):
    """What recording a run needs of an incident store (`ReviewStore` is one)."""

    def upsert_incidents(self, detected: Sequence[Mapping[str, Any]]) -> Any: ...

    def pending_effects(self) -> Sequence[Any]: ...

    def set_effect(self, incident_id: int, effect: Mapping[str, Any]) -> Any: ...


def record_run(
    store: IncidentStore,
    result: DiscoveryResult,
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame | None = None,
    *,
    model_version: str = "batch",
    window_days: float = 7.0,
    min_days: float = 3.0,
) -> tuple[Any, list[tuple[int, dict[str, Any]]]]:
    """Upsert a run's incidents, then measure every recorded fix the data now covers."""
    summary = store.upsert_incidents(
        incident_records(result, tables, scores, model_version=model_version)
    )
    effects = measure_effects(store, tables, scores, window_days=window_days, min_days=min_days)
    return summary, effects


def trend_dict(trend: Trend) -> dict[str, Any]:
    """A chart series as JSON: bucket times, observed and baseline rates, marked window."""

    def num(v: Any) -> float | None:
        v = float(v)
        return round(v, 8) if np.isfinite(v) else None

    return {
        "times": [pd.Timestamp(t).isoformat() for t in trend.times],
        "observed": [num(v) for v in trend.observed],
        "baseline": [num(v) for v in trend.baseline],
        "marked": [pd.Timestamp(t).isoformat() for t in trend.marked] if trend.marked else None,
    }


def incident_records(
    result: DiscoveryResult,
    tables: Mapping[str, pd.DataFrame] | None = None,
    scores: pd.DataFrame | None = None,
    *,
    model_version: str = "batch",
    per_stratum: int = POOL_PER_STRATUM,
    drilldown_rows: int = 10,
) -> list[dict[str, Any]]:
    """One upsertable dict per incident: the incidents.json fields plus end, signal, chart
    series, drill-down rows and (given tables and scores) the evidence pool."""
    dims = item_dimensions(tables) if tables is not None and scores is not None else None
    scored = _post_scores(scores) if scores is not None else None
    out = []
    for i, inc in enumerate(result.incidents):
        d = inc.to_dict()
        d["end"] = inc.end.isoformat()
        d["signal"] = inc.signal
        evidence = dict(d["evidence"])
        if inc.drilldown is not None:
            evidence["drilldown"] = format_table(inc.drilldown.head(drilldown_rows))
        d["evidence"] = evidence
        if i < len(result.trends):
            d["trend"] = trend_dict(result.trends[i])
        if dims is not None and scored is not None and tables is not None:
            d["sample_pool"] = evidence_pool(
                scored,
                tables,
                dims,
                inc.issue,
                inc.segment,
                inc.start,
                inc.end,
                model_version=model_version,
                per_stratum=per_stratum,
            )
        out.append(d)
    return out


def _post_scores(scores: pd.DataFrame) -> pd.DataFrame:
    frame = scores
    if "anchor" in frame.columns:
        frame = frame[frame["anchor"].astype("str") == "post"]
    frame = frame.assign(_as_of=pd.to_datetime(frame["as_of"], utc=True))
    return frame.reset_index(drop=True)


def evidence_pool(
    scored: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    dims: Any,
    issue: str,
    segment: Any,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    model_version: str = "batch",
    per_stratum: int = POOL_PER_STRATUM,
) -> list[dict[str, Any]]:
    """Up to `per_stratum` flagged and unflagged scored snapshots of the segment in the window,
    drawn with a seed from the issue and segment (the same draw on every rerun)."""
    if issue not in scored.columns:
        return []
    in_window = scored[(scored["_as_of"] >= start) & (scored["_as_of"] <= end)]
    if in_window.empty:
        return []
    frame = (
        in_window[["item_id"]]
        .astype({"item_id": "str"})
        .merge(dims.items, on="item_id", how="left")
    )
    try:
        mask = segment_mask(frame, dims, segment)
    except ValueError:
        return []
    rows = in_window[mask]
    if rows.empty:
        return []
    flagged = rows["flagged"].fillna("").astype("str").str.split(",").map(lambda f: issue in f)
    issues = [c for c in scored.columns if c not in _SCORE_KEYS and not c.startswith("_")]
    items = tables["items"].astype({"item_id": "str"}).set_index("item_id")
    fields = [f for f in SNAPSHOT_FIELDS if f in items.columns]
    seed = zlib.crc32(f"{issue}|{segment_key(segment)}".encode())
    rng = np.random.default_rng(seed)
    pool: list[dict[str, Any]] = []
    for stratum, pick in (("flagged", flagged.to_numpy()), ("unflagged", ~flagged.to_numpy())):
        part = rows[pick]
        if len(part) > per_stratum:
            part = part.iloc[np.sort(rng.choice(len(part), per_stratum, replace=False))]
        # itertuples renames fields that start with "_" (namedtuple rules): a plain name
        part = part.rename(columns={"_as_of": "scored_as_of"})
        for r in part.itertuples(index=False):
            item_id = str(r.item_id)
            snap: dict[str, Any] = {"item_id": item_id, "as_of": r.scored_as_of.isoformat()}
            if item_id in items.index:
                src = items.loc[item_id]
                for f in fields:
                    v = src[f]
                    snap[f] = None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
            probs = {}
            for iss in issues:
                v = getattr(r, iss, None)
                if v is not None and np.isfinite(float(v)):
                    probs[iss] = round(float(v), 6)
            pool.append(
                {
                    "item_id": item_id,
                    "as_of": r.scored_as_of.isoformat(),
                    "anchor": "post",
                    "snapshot": snap,
                    "scores": probs,
                    "flagged": [f for f in str(r.flagged or "").split(",") if f],
                    "reasons": {},
                    "model_version": model_version,
                    # the snapshot time: a later real scoring of the item supersedes this one
                    "scored_at": r.scored_as_of.isoformat(),
                    "reach": 0.0,
                    "sampled": False,
                    "stratum": stratum,
                }
            )
    return pool


def data_end(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp | None:
    """The latest time in any table's time column (None for an empty dataset)."""
    ends = []
    for name, col in TIME_COLUMNS.items():
        t = tables.get(name)
        if t is not None and col in t.columns and len(t):
            ends.append(pd.to_datetime(t[col], utc=True).max())
    return max(ends) if ends else None


def window_tables(
    tables: Mapping[str, pd.DataFrame], start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """The dataset cut to [start, end] by each table's time column (creators stay whole):
    the items posted in the window and, of the other tables, the rows in the window that
    concern those items (so the cut is a valid dataset under the contract)."""
    out = {}
    for name, t in tables.items():
        col = TIME_COLUMNS.get(name)
        if col is None or col not in t.columns:
            out[name] = t
            continue
        ts = pd.to_datetime(t[col], utc=True)
        out[name] = t[(ts >= start) & (ts <= end)].reset_index(drop=True)
    if "items" in out and "item_id" in out["items"].columns:
        kept = set(out["items"]["item_id"].astype("str"))
        for name, t in out.items():
            if name != "items" and name in TIME_COLUMNS and "item_id" in t.columns:
                out[name] = t[t["item_id"].astype("str").isin(kept)].reset_index(drop=True)
    return out


def measure_effects(
    store: IncidentStore,
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame | None = None,
    *,
    window_days: float = 7.0,
    min_days: float = 3.0,
) -> list[tuple[int, dict[str, Any]]]:
    """Measure the effect of every recorded fix that has `min_days` of data after it.

    Difference-in-differences of the incident's issue rate in its segment against the rest of
    the platform, daily buckets, over up to `window_days` each side of the fix: before it
    only while the incident ran (from its start), after it as far as the data goes. So the
    question is whether the rate came down from where the incident took it. The interval is
    day-clustered, with Student's t (discovery.effect.diff_in_diff). Fewer days after the fix: the
    effect stays `waiting`, naming the time it needs. Returns (incident id, effect) pairs.
    """
    end = data_end(tables)
    done = []
    for inc in store.pending_effects():
        fix_at = pd.Timestamp(inc.fix_at)
        fix_at = fix_at.tz_localize("UTC") if fix_at.tzinfo is None else fix_at.tz_convert("UTC")
        needed = fix_at + pd.Timedelta(days=min_days)
        if end is None or end < needed:
            effect: dict[str, Any] = {
                "status": "waiting",
                "verdict": f"waiting for data until {needed.isoformat()} "
                f"({min_days:g} days after the fix)",
                "needs_until": needed.isoformat(),
            }
        else:
            effect = _measure(inc, tables, scores, fix_at, end, window_days)
        store.set_effect(inc.id, effect)
        done.append((inc.id, effect))
    return done


def _measure(inc, tables, scores, fix_at, end, window_days: float) -> dict[str, Any]:
    from discovery.effect import effect_of_fix

    # Before the fix means while the incident ran: from its start (or the data's, if later).
    start = max(t for t in (data_start(tables), pd.Timestamp(inc.start)) if t is not None)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    after = (end - fix_at) / pd.Timedelta(days=1)
    before = (fix_at - start) / pd.Timedelta(days=1)
    days = float(np.floor(min(window_days, after, before)))
    segment = canonical(inc.segment.items())
    if days < 2 or not segment:
        return {
            "status": "not_measurable",
            "verdict": "not measurable: "
            + ("the platform as a whole has no control" if not segment else "too few days"),
        }
    try:
        try:
            res = effect_of_fix(
                tables,
                inc.issue,
                segment,
                fix_at,
                scores=scores,
                signal=inc.signal,
                window_days=days,
            )
        except ValueError:  # the incident's signal needs scores this run lacks: the issue's first
            res = effect_of_fix(tables, inc.issue, segment, fix_at, scores=scores, window_days=days)
    except ValueError as exc:
        return {"status": "not_measurable", "verdict": f"not measurable: {exc}"}
    out = res.to_dict()
    out["status"] = "measured"
    out["window_days"] = days
    lo, hi, did = out["ci_low"], out["ci_high"], out["did"]
    if np.isfinite(hi) and hi < 0:
        out["verdict"] = (
            f"the rate fell: {did:+.4g} per unit beyond the control "
            f"(95% interval {lo:+.4g} to {hi:+.4g})"
        )
    else:
        out["verdict"] = (
            f"no measurable fall: {did:+.4g} (95% interval {lo:+.4g} to {hi:+.4g} "
            "includes zero or lies above it)"
        )
    return out


def data_start(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp | None:
    """The earliest time in any table's time column."""
    starts = []
    for name, col in TIME_COLUMNS.items():
        t = tables.get(name)
        if t is not None and col in t.columns and len(t):
            starts.append(pd.to_datetime(t[col], utc=True).min())
    return min(starts) if starts else None
