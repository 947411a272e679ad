"""`discover`: signals -> segment series -> detection at several scales -> incidents -> report data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from common.progress import Progress
from discovery import DEFAULT_SEVERITY_ALPHA
from discovery.clusters import candidate_clusters
from discovery.detect import DetectorConfig, detect_counts
from discovery.incidents import (
    Episode,
    Incident,
    episodes_from,
    merge_episodes,
    severity_floors,
    suppress_explained,
)
from discovery.rootcause import UnitFrame
from discovery.series import SegmentSeries, build_series, hour_grid
from discovery.signals import (
    ABUSE_POLICIES,
    LOW_QUALITY_POLICIES,
    ItemDimensions,
    Signal,
    build_signals,
    disabled_issues,
    item_dimensions,
)


@dataclass(frozen=True)
class Scale:
    """One bucket width and its detector settings."""

    name: str
    width_h: int
    detector: DetectorConfig
    max_gap: int = 1


# BH at 5 % per bucket and family; a minimum count, a minimum rate ratio and persistence
# (3 hours, two 6 h buckets, or one day) keep false alarms under one a week on the simulator.
DEFAULT_SCALES: tuple[Scale, ...] = (
    Scale(
        "hourly",
        1,
        DetectorConfig(
            period=24, window=168, min_history=48, alpha=0.05, persistence=3, min_count=5
        ),
        max_gap=2,
    ),
    Scale(
        "6h",
        6,
        DetectorConfig(period=4, window=28, min_history=8, alpha=0.05, persistence=2, min_count=5),
        max_gap=1,
    ),
    Scale(
        "daily",
        24,
        DetectorConfig(period=1, window=7, min_history=3, alpha=0.05, persistence=1, min_count=5),
        max_gap=1,
    ),
)


# Raw enforcement volume is only a misfire proxy, and actions citing a spam or abuse policy
# rise wherever spam or abuse does: such incidents are dropped where that issue explains them.
# So are flagged-action incidents during a spam or abuse incident on the same items: a model
# that mistakes some of the (rightful) extra actions for wrongful ones fires there too, e.g.
# on the removals of a spam ring's items. A misfire on exactly those items would be masked.
EXPLAINED_BY: dict[str, tuple[str, ...]] = {
    "wrongful_enforcement:auto_actions": ("low_quality", "harmful_interactions"),
    "wrongful_enforcement:flagged": ("low_quality", "harmful_interactions"),
    **{f"wrongful_enforcement:auto_actions:{p}": ("harmful_interactions",) for p in ABUSE_POLICIES},
    **{f"wrongful_enforcement:flagged:{p}": ("low_quality",) for p in LOW_QUALITY_POLICIES},
    **{f"wrongful_enforcement:flagged:{p}": ("harmful_interactions",) for p in ABUSE_POLICIES},
}


# The only events discovery reads (toxic comments in discovery.signals, spam reports in
# discovery.clusters): with --engine dask the workers send back just these rows.
EVENT_KINDS_USED: tuple[str, ...] = ("comment", "report")


@dataclass(frozen=True)
class DiscoveryConfig:
    """Knobs of one discovery run."""

    scales: tuple[Scale, ...] = DEFAULT_SCALES
    pairs: bool = True
    min_items: int = 30  # a hashtag/audio needs this many items to be a segment
    threshold: float = 0.5  # score threshold when the scores file has no `flagged` column
    # A post-anchored item counts as flagged only at this probability or more too (None: the
    # scores' own flags alone); the review queue's capacity threshold is far laxer.
    post_min_probability: float | None = 0.5
    random_state: int = 0
    # Family-wise level of a severity floor from the size of the scan (Bonferroni over the
    # segments scanned for an issue: discovery.incidents.severity_floors); None: the fixed
    # floor of merge_episodes (-log10 p >= 6). The fixed floor misses small incidents in small
    # data (oracle scores, 20k items: 2 of 4 found within 24 h in drawn world 2) and is an
    # arbitrary bar in large data. 0.05 was held back while spill-overs of the gaming abuse
    # wave into gaming hashtags counted as false alarms at 100k (7 in 4 weeks, default world);
    # with those folded into the wave (_absorb_spillovers, 2026-12-05, oracle scores, data
    # seed 0): 20k items, default world and drawn worlds 1-5, 23/24 found (worst world 2: 3/4),
    # <= 0.5 false alarms/week in every world, 0 duplicates, effect coverage 12/12; 100k
    # items, same worlds: 24/24 found, <= 0.75 false alarms/week in every world (worst:
    # worlds 1 and 2), default world 0.5 (was 1.75). Per-world figures: bench/discovery.py.
    severity_alpha: float | None = DEFAULT_SEVERITY_ALPHA


@dataclass
class Trend:
    """A chart series: one signal and segment at one scale, with its baseline."""

    title: str
    times: list[pd.Timestamp]
    observed: np.ndarray
    baseline: np.ndarray
    marked: tuple[pd.Timestamp, pd.Timestamp] | None


@dataclass
class DiscoveryResult:
    """Everything `discover` found, ready for incidents.json and the report."""

    incidents: list[Incident]
    signals: list[dict[str, Any]]
    clusters: pd.DataFrame
    trends: list[Trend] = field(default_factory=list)
    overview: list[Trend] = field(default_factory=list)
    data_range: tuple[pd.Timestamp, pd.Timestamp] | None = None
    used_scores: bool = False
    # issues the scores file marks disabled in its model: no signal is built from them
    skipped: dict[str, str] = field(default_factory=dict)

    def skipped_lines(self) -> list[str]:
        """One line per skipped issue: why discovery says nothing about it."""
        return [
            f"skipped issue {issue}: disabled in the model that scored the data ({why})"
            for issue, why in self.skipped.items()
        ]

    def incidents_json(self) -> list[dict[str, Any]]:
        return [inc.to_dict() for inc in self.incidents]


def detect_signal(
    signal: Signal, series: SegmentSeries, scales: tuple[Scale, ...]
) -> list[Episode]:
    """Episodes of one signal over all its segments, at every scale."""
    # Dispersion is pooled per dimension combination; BH runs separately for the platform and
    # single dimensions, and for the (many more) dimension pairs.
    combos = {
        c: i for i, c in enumerate(sorted({tuple(d for d, _ in seg) for seg in series.segments}))
    }
    groups = np.array([combos[tuple(d for d, _ in seg)] for seg in series.segments])
    families = np.array([1 if len(seg) > 1 else 0 for seg in series.segments])
    out: list[Episode] = []
    for scale in scales:
        num, den = series.aggregate(scale.width_h)
        det = detect_counts(
            num, den, test=signal.test, config=scale.detector, groups=groups, families=families
        )
        out += episodes_from(
            det,
            series.segments,
            series.times(scale.width_h),
            scale.width_h,
            signal=signal.name,
            issue=signal.issue,
            scale=scale.name,
            num=num,
            den=den,
            max_gap=scale.max_gap,
            lag_h=signal.lag_h,
        )
    return out


def _trend(
    uf: UnitFrame, segment, start: pd.Timestamp, n_hours: int, title: str, marked, width_h: int = 6
) -> Trend:
    """Observed and baseline rate of a segment at `width_h` buckets (for the report's charts)."""
    frame = uf.frame[uf.mask(segment)]
    top = uf.frame
    rows = []
    for part in (top, frame):
        hour = ((part["ts"] - start) / pd.Timedelta(hours=1)).astype(int).to_numpy()
        keep = (hour >= 0) & (hour < n_hours)
        rows.append(
            (
                np.bincount(
                    hour[keep], weights=part["num"].to_numpy(float)[keep], minlength=n_hours
                ),
                np.bincount(
                    hour[keep], weights=part["den"].to_numpy(float)[keep], minlength=n_hours
                ),
            )
        )
    num = np.vstack([r[0] for r in rows]).reshape(2, -1, width_h).sum(axis=2)
    den = np.vstack([r[1] for r in rows]).reshape(2, -1, width_h).sum(axis=2)
    cfg = DetectorConfig(period=24 // width_h, window=7 * 24 // width_h, min_history=1, passes=2)
    det = detect_counts(num, den, config=cfg)
    observed = np.divide(num[1], den[1], out=np.full(num.shape[1], np.nan), where=den[1] > 0)
    times = list(pd.date_range(start, periods=num.shape[1], freq=f"{width_h}h"))
    return Trend(title=title, times=times, observed=observed, baseline=det.rate[1], marked=marked)


def discover(
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame | None = None,
    *,
    config: DiscoveryConfig | None = None,
    progress: bool = False,
    engine: str = "pandas",
    scheduler: str | None = None,
) -> DiscoveryResult:
    """Find issue-rate incidents by segment in a dataset (optionally with model scores).

    `engine="dask"` aggregates the segment series on a Dask cluster (`scheduler`, see
    common.cluster): the same counting, chunk by chunk (discovery.series_dask).
    """
    if engine not in ("pandas", "dask"):
        raise ValueError(f"engine must be pandas or dask, got {engine!r}")
    with ExitStack() as stack:
        series_fn = build_series
        if engine == "dask":
            from common.cluster import dask_client
            from discovery.series_dask import build_series_dask

            client = stack.enter_context(dask_client(scheduler, announce=progress))
            series_fn = partial(build_series_dask, client=client)
        return _discover(tables, scores, config=config, progress=progress, series_fn=series_fn)


def _discover(
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame | None,
    *,
    config: DiscoveryConfig | None,
    progress: bool,
    series_fn: Callable[..., SegmentSeries],
) -> DiscoveryResult:
    cfg = config or DiscoveryConfig()
    skipped: dict[str, str] = {}
    if scores is not None:
        # a disabled issue has no scores and no flags: counting its (absent) flags would
        # report its silence as a drop, or plain volume as an incident
        skipped = {k: v for k, v in disabled_issues(scores).items() if k in scores.columns}
        if skipped:
            attrs = dict(scores.attrs)
            scores = scores.drop(columns=list(skipped))
            scores.attrs = attrs
            reserved = {"item_id", "as_of", "anchor", "flagged", "disabled"}
            reserved |= {"horizon_h", "model_version"}
            if not any(
                c not in reserved and pd.api.types.is_numeric_dtype(scores[c])
                for c in scores.columns
            ):
                raise ValueError(
                    "every issue of the scores file is disabled in its model ("
                    + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                    + "); run discovery without --scores to use the raw proxies"
                )
    dims: ItemDimensions = item_dimensions(tables, min_items=cfg.min_items)
    # A signal without a single numerator event (e.g. no action under other policies) has
    # nothing to detect.
    built = build_signals(
        tables, scores, threshold=cfg.threshold, post_min_probability=cfg.post_min_probability
    )
    signals = [s for s in built if len(s.units) and s.units["num"].sum() > 0]
    if not built:
        raise ValueError(
            "no issue signal could be built: "
            + (
                "the scores file has no scored row of any issue"
                if scores is not None
                else "the raw proxies need automatic moderation actions (remove/restrict) or "
                "comments, and the dataset has neither; give --scores from `surfacer score`"
            )
        )
    if not signals:
        raise ValueError(
            f"nothing to detect: none of the {len(built)} issue signals ("
            + ", ".join(s.name for s in built[:6])
            + (", ..." if len(built) > 6 else "")
            + ") counts a single case in the data (no report, removal, overturned appeal, "
            "abusive comment or flagged item)"
        )
    start, n_hours = hour_grid([s.units for s in signals])
    episodes: list[Episode] = []
    units: dict[str, UnitFrame] = {}
    meta: list[dict[str, Any]] = []
    overview: list[Trend] = []
    scanned: dict[tuple[str, bool], int] = {}
    with Progress("discover", len(signals), unit="signal", enabled=progress) as bar:
        for signal in signals:
            bar.status(signal.name)
            series = series_fn(
                signal.units,
                dims,
                start=start,
                n_hours=n_hours,
                pairs=cfg.pairs,
                platform_den=signal.platform_den,
            )
            units[signal.name] = UnitFrame.build(
                signal.units, dims, platform_den=signal.platform_den
            )
            episodes += detect_signal(signal, series, cfg.scales)
            for seg in series.segments:
                key = (signal.issue, len(seg) > 1)
                scanned[key] = scanned.get(key, 0) + 1
            meta.append(
                {
                    "name": signal.name,
                    "issue": signal.issue,
                    "description": signal.description,
                    "segments": len(series.segments),
                    "numerator": float(series.num[0].sum()),
                    "denominator": float(series.den[0].sum()),
                }
            )
            overview.append(
                _trend(units[signal.name], (), start, n_hours, signal.name, None, width_h=24)
            )
            bar.update()
        bar.status("incidents")
        data_end = start + pd.Timedelta(hours=n_hours)
        floors = (
            severity_floors(scanned, cfg.severity_alpha) if cfg.severity_alpha is not None else {}
        )
        incidents = merge_episodes(
            episodes,
            units,
            data_end=data_end,
            lags={s.name: s.lag_h for s in signals},
            floors=floors,
        )
        incidents = suppress_explained(incidents, EXPLAINED_BY, units)
        trends = [
            _trend(
                units[inc.signal],
                inc.segment,
                start,
                n_hours,
                f"{inc.issue} · {inc.key} ({inc.signal})",
                (inc.start, inc.detected_at),
            )
            for inc in incidents
        ]
        bar.status("clusters")
        clusters = candidate_clusters(
            tables, scores, threshold=cfg.threshold, random_state=cfg.random_state
        )
    return DiscoveryResult(
        incidents=incidents,
        signals=meta,
        clusters=clusters,
        trends=trends,
        overview=overview,
        data_range=(start, data_end),
        used_scores=scores is not None,
        skipped=skipped,
    )
