"""From alarms to incidents: episodes per series, merged across scales, signals and segments.

An episode is one run of significant buckets of one series (signal, scale, segment) that
reached the persistence rule. Episodes of one issue that overlap in time and concern related
segments (nested, or sharing most of their excess) are one incident; its segment is the most
specific one that still explains most of the excess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from discovery.detect import Detection, predictive_tail
from discovery.rootcause import UnitFrame, drilldown, excess, js_term, top_segment
from discovery.series import DIMENSIONS, Segment, canonical, contains, segment_key


@dataclass
class Episode:
    """One alarm run of one series."""

    signal: str
    issue: str
    scale: str
    segment: Segment
    start: pd.Timestamp
    detected_at: pd.Timestamp
    end: pd.Timestamp
    observed: float
    expected: float
    den: float
    pvalue: float
    # End of the hysteresis extension (the series stayed elevated at the lax level); it
    # widens the incident's evidence window but plays no part in grouping episodes.
    until: pd.Timestamp | None = None

    @property
    def score(self) -> float:
        return float(-np.log10(max(self.pvalue, 1e-300)))


@dataclass
class Incident:
    """A detected incident, JSON-ready through `to_dict`."""

    issue: str
    segment: Segment
    start: pd.Timestamp
    detected_at: pd.Timestamp
    end: pd.Timestamp
    severity: float
    evidence: dict[str, Any]
    signal: str
    episodes: list[Episode] = field(default_factory=list)
    drilldown: pd.DataFrame | None = None

    @property
    def key(self) -> str:
        return segment_key(self.segment)

    def to_dict(self) -> dict[str, Any]:
        return {
            "issue": self.issue,
            "segment": dict(self.segment),
            "start": self.start.isoformat(),
            "detected_at": self.detected_at.isoformat(),
            "severity": round(float(self.severity), 3),
            "evidence": self.evidence,
        }


def episodes_from(
    detection: Detection,
    segments: Sequence[Segment],
    times: pd.DatetimeIndex,
    width_h: int,
    *,
    signal: str,
    issue: str,
    scale: str,
    num: np.ndarray,
    den: np.ndarray,
    max_gap: int = 1,
    lag_h: float = 0.0,
    extend_alpha: float = 0.05,
) -> list[Episode]:
    """Runs of significant buckets that reached persistence, merged across gaps of <= max_gap buckets.

    Hysteresis: a strict test (BH across every series) opens an episode; it then stays open
    while the one series keeps exceeding its baseline at the lax level `extend_alpha` (one
    pre-selected series, no multiplicity), so a lasting incident accumulates its evidence
    over the days it runs instead of ending at the first bucket that misses the strict cut.
    """
    out: list[Episode] = []
    width = pd.Timedelta(hours=width_h)
    elevated = (np.nan_to_num(detection.pvalue, nan=1.0) < extend_alpha) & (
        num > detection.expected
    )
    n_buckets = num.shape[1]
    for s in np.flatnonzero(detection.alarm.any(axis=1)):
        sig = detection.significant[s]
        alarm = detection.alarm[s]
        idx = np.flatnonzero(sig)
        # Split significant buckets into runs tolerant to short gaps.
        breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
        for run in np.split(idx, breaks + 1):
            fired = run[alarm[run]]
            if not fired.size:
                continue
            lo, hi = int(run[0]), int(run[-1])
            # Extend past the strict run while the series stays elevated (gaps <= max_gap).
            j, gap, last = hi + 1, 0, hi
            while j < n_buckets and gap <= max_gap:
                if elevated[s, j]:
                    last, gap = j, 0
                else:
                    gap += 1
                j += 1
            observed = float(num[s, lo : hi + 1].sum())
            expected = float(detection.expected[s, lo : hi + 1].sum())
            pv = detection.pvalue[s, lo : hi + 1]
            out.append(
                Episode(
                    signal=signal,
                    issue=issue,
                    scale=scale,
                    segment=segments[s],
                    start=times[lo],
                    detected_at=times[int(fired[0])] + width + pd.Timedelta(hours=lag_h),
                    end=times[hi] + width,
                    until=times[last] + width,
                    observed=observed,
                    expected=expected,
                    den=float(den[s, lo : hi + 1].sum()),
                    pvalue=float(np.nanmin(pv)) if np.isfinite(pv).any() else 1.0,
                )
            )
    return out


def _coalesce(episodes: Sequence[Episode], slack: pd.Timedelta) -> list[Episode]:
    """Join episodes of the same signal and segment that overlap in time (across scales)."""
    out: list[Episode] = []
    by_key: dict[tuple[str, Segment], list[Episode]] = {}
    for e in sorted(episodes, key=lambda e: e.start):
        by_key.setdefault((e.signal, e.segment), []).append(e)
    for eps in by_key.values():
        current = eps[0]
        for e in eps[1:]:
            if e.start <= current.end + slack:
                current = Episode(
                    signal=current.signal,
                    issue=current.issue,
                    scale=current.scale
                    if e.scale == current.scale
                    else f"{current.scale}+{e.scale}",
                    segment=current.segment,
                    start=min(current.start, e.start),
                    detected_at=min(current.detected_at, e.detected_at),
                    end=max(current.end, e.end),
                    observed=max(current.observed, e.observed),
                    expected=max(current.expected, e.expected),
                    den=max(current.den, e.den),
                    pvalue=min(current.pvalue, e.pvalue),
                    until=max(current.until or current.end, e.until or e.end),
                )
            else:
                out.append(current)
                current = e
        out.append(current)
    return sorted(out, key=lambda e: e.start)


def _conflict(a: Segment, b: Segment) -> bool:
    """Disjoint segments: one dimension with two values (items have many hashtags, so not those)."""
    da, db = dict(a), dict(b)
    return any(da[d] != db[d] for d in set(da) & set(db) if d != "hashtag")


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def merge_episodes(
    episodes: Sequence[Episode],
    units: Mapping[str, UnitFrame],
    *,
    slack: pd.Timedelta = pd.Timedelta(hours=24),
    share: float = 0.5,
    explain: float = 0.7,
    data_end: pd.Timestamp | None = None,
    min_items: int = 5,
    min_severity: float = 6.0,
    lags: Mapping[str, float] | None = None,
    floors: Mapping[tuple[str, bool], float] | None = None,
) -> list[Incident]:
    """Group related episodes of the same issue into incidents and pick each one's segment.

    Incidents whose excess comes from fewer than `min_items` distinct items are dropped (a
    pile-on under one or two items is not a segment-level issue), and so are those whose
    whole-window evidence is weaker than p = 10**-min_severity. An incident's `detected_at`
    is when the evidence since its start first reached that floor (`lags`: hours a signal's
    counts take to complete), so the floor uses no data from after the reported time.
    `floors` sets the floor per (issue, pair segment?) of the incident's issue and chosen
    segment (`min_severity` where it names none): see `severity_floors`.
    """
    floors = floors or {}
    incidents: list[Incident] = []
    by_issue: dict[str, list[Episode]] = {}
    for e in episodes:
        by_issue.setdefault(e.issue, []).append(e)
    cache: dict[tuple[str, Segment, pd.Timestamp, pd.Timestamp], float] = {}

    def ex(signal: str, seg: Segment, a: pd.Timestamp, b: pd.Timestamp) -> float:
        key = (signal, seg, a, b)
        if key not in cache:
            cache[key] = excess(units[signal], seg, a, b)["excess"]
        return cache[key]

    for issue, eps in by_issue.items():
        eps = _coalesce(eps, slack)
        uf = _UnionFind(len(eps))
        for i in range(len(eps)):
            for j in range(i + 1, len(eps)):
                a, b = eps[i], eps[j]
                if not (b.start < a.end and a.start < b.end):
                    continue
                if _conflict(a.segment, b.segment):
                    continue
                inter = canonical(set(a.segment) | set(b.segment))
                lo, hi = max(a.start, b.start), min(a.end, b.end)
                if hi <= lo:
                    lo, hi = min(a.start, b.start), max(a.end, b.end)
                nested = contains(a.segment, b.segment) or contains(b.segment, a.segment)
                if abs(a.start - b.start) > slack:
                    # A later wave is judged against the earlier incident's root segment, in
                    # _absorb_spillovers, not here: episode by episode, a broad segment that
                    # both waves raise (creator_tier=<1k under two spam waves) chains the new
                    # wave into the old incident.
                    continue
                if nested:
                    uf.union(i, j)
                    continue
                # Crossing segments (e.g. hashtag=x vs category=y): related when their
                # intersection carries most of one episode's excess.
                for e in (a, b):
                    whole = ex(e.signal, e.segment, lo, hi)
                    if whole > 0 and ex(e.signal, inter, lo, hi) >= share * whole:
                        uf.union(i, j)
                        break
        groups: dict[int, list[Episode]] = {}
        for i, e in enumerate(eps):
            groups.setdefault(uf.find(i), []).append(e)
        for group in groups.values():
            incidents.append(
                _incident(
                    issue,
                    group,
                    units,
                    ex,
                    explain=explain,
                    data_end=data_end,
                    floors=floors,
                    min_severity=min_severity,
                    lags=lags or {},
                )
            )
    # Thousands of series are scanned: an incident needs strong evidence over its whole window
    # (-log10 p >= the floor), which spill-overs of a real incident into thin segments lack.
    incidents = [
        inc
        for inc in incidents
        if inc.evidence["items"] >= min_items
        and inc.severity >= floors.get((inc.issue, len(inc.segment) > 1), min_severity)
    ]
    incidents.sort(key=lambda inc: inc.detected_at)
    return _absorb_spillovers(
        incidents, units, slack=slack, share=share, floors=floors, min_severity=min_severity
    )


def _absorb_spillovers(
    incidents: list[Incident],
    units: Mapping[str, UnitFrame],
    *,
    slack: pd.Timedelta,
    share: float,
    floors: Mapping[tuple[str, bool], float] | None = None,
    min_severity: float = 6.0,
) -> list[Incident]:
    """Fold later incidents that are spill-overs of an earlier one still running.

    B (same issue, starting more than `slack` after A, while A is still elevated) is A's
    spill-over when
    - their segments do not conflict and at least `share` of B's excess lies on items A's
      segment holds too (all of it when B is nested in A): B and A concern the same items,
      e.g. hashtag=minecraft or creator_tier=10k-100k x hashtag=gamer four days into an
      abuse wave in category=gaming; and
    - A's elevation explains B: B's count on those shared items is not significantly above
      what their baseline times A's rate ratio (on A's other items) predicts, at the same
      floor an incident of B's issue and family must reach (see `_beyond_host`). B would
      not be an incident of its own against A; a new, hotter wave nested in A still is.
    A small segment chosen among hundreds for being extreme has a noisy, high rate ratio of
    its own, so a plain comparison of ratios kept such spill-overs apart; the test weighs the
    ratio by its counts. B's episodes join A, and B's segment is recorded in A's evidence
    (`spillovers`: segment, start, detection time, share of its excess on shared items,
    severity) and shown in the report, not dropped silently.
    """
    floors = floors or {}
    kept: list[Incident] = []
    for b in incidents:
        host, overlap = None, 0.0
        for a in kept:
            if (
                a.issue != b.issue
                or not (a.start + slack < b.start < a.end)
                or _conflict(a.segment, b.segment)
            ):
                continue
            uf = units[b.signal]
            overlap = _shared_excess(uf, b.segment, a.segment, b.start, b.end)
            if overlap < share:
                continue
            floor = floors.get((b.issue, len(b.segment) > 1), min_severity)
            if _beyond_host(uf, b.segment, a.segment, a.start, b.start, b.end) < floor:
                host = a
                break
        if host is None:
            kept.append(b)
        else:
            host.episodes.extend(b.episodes)
            host.evidence.setdefault("spillovers", []).append(
                {
                    "segment": b.key,
                    "start": b.start.isoformat(),
                    "detected_at": b.detected_at.isoformat(),
                    "shared_excess": round(float(overlap), 3),
                    "severity": round(float(b.severity), 3),
                }
            )
    return kept


def _shared_excess(
    uf: UnitFrame, segment: Segment, other: Segment, start: pd.Timestamp, end: pd.Timestamp
) -> float:
    """Share of `segment`'s excess over [start, end) on items `other` holds too (their
    intersection; the two segments must not conflict). 0 without excess."""
    whole = excess(uf, segment, start, end)["excess"]
    if whole <= 0:
        return 0.0
    inter = canonical(set(segment) | set(other))
    return float(excess(uf, inter, start, end)["excess"] / whole)


def _beyond_host(
    uf: UnitFrame,
    segment: Segment,
    host: Segment,
    since: pd.Timestamp,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> float:
    """-log10 p that `segment`'s items shared with `host` run hotter in [start, end) than the
    host incident (elevated since `since`) explains.

    Baselines come from the week before `since` (later ones hold the host's own excess). The
    host's rate ratio over [start, end) is measured on its items outside `segment` (else a
    large new wave inside the host would raise the very ratio it is judged against; the whole
    host when nothing is left). The shared items' count is then tested against their
    baseline scaled by that ratio, with the same Gamma-Poisson predictive tail as an
    incident's evidence (a thin segment's noisy baseline gives no tiny p-value).
    """
    inter = canonical(set(segment) | set(host))
    i = excess(uf, inter, start, end, baseline_end=since)
    h = excess(uf, host, start, end, baseline_end=since)
    rest_num, rest_expected = h["num"] - i["num"], h["expected"] - i["expected"]
    if rest_expected > 0 and rest_num > 0:
        ratio = rest_num / rest_expected
    elif h["expected"] > 0:
        ratio = h["num"] / h["expected"]
    else:
        return 0.0
    if i["den"] <= 0 or i["expected"] <= 0:
        return 0.0
    shape = np.array([i["baseline_num"] + 3.0])
    post_rate = shape / (ratio * i["expected"] / i["den"])
    p = float(predictive_tail(np.array([i["num"]]), shape, post_rate, np.array([i["den"]]))[0])
    return float(-np.log10(max(p, 1e-300)))


def _mostly_within(
    uf: UnitFrame,
    segment: Segment,
    other: Segment,
    start: pd.Timestamp,
    end: pd.Timestamp,
    share: float,
) -> bool:
    """Whether at least `share` of `segment`'s excess over [start, end] lies inside `other`
    too (in their intersection; the two segments must not conflict)."""
    return _shared_excess(uf, segment, other, start, end) >= share


def _incident(
    issue, group, units, ex, *, explain: float, data_end, floors, min_severity: float, lags
) -> Incident:
    start = min(e.start for e in group)
    end = max(e.until or e.end for e in group)
    detected_at = min(e.detected_at for e in group)
    order = {d: i for i, d in enumerate(DIMENSIONS)}
    candidates = sorted(
        {e.segment for e in group}, key=lambda s: (len(s), [order.get(d, 99) for d, _ in s])
    )
    # Every signal of the group proposes its segment; the one with the strongest evidence
    # wins (e.g. actions citing the misfiring policy over all flagged actions).
    best_p, primary, chosen, table = np.inf, group[0].signal, (), None
    for signal in sorted({e.signal for e in group}):
        seg, tab = _choose(units[signal], signal, candidates, ex, start, end, explain=explain)
        p = _evidence(units[signal], seg, start, end)["p_value"]
        if p < best_p or table is None:
            best_p, primary, chosen, table = p, signal, seg, tab
    uf = units[primary]
    evidence = _evidence(uf, chosen, start, end)
    evidence["items"] = uf.sources(chosen, start, end)
    evidence["signal"] = primary
    evidence["episodes"] = len(group)
    evidence["scales"] = sorted({s for e in group for s in e.scale.split("+")})
    evidence["first_alarm"] = detected_at.isoformat()
    # No look-ahead: the incident is reported once the evidence gathered since its start
    # (counts complete by then: cohort signals lag) reaches the floor, never earlier than
    # its first alarm.
    lag = pd.Timedelta(hours=lags.get(primary, 0.0))
    floor = floors.get((issue, len(chosen) > 1), min_severity)
    evidence["floor"] = round(float(floor), 3)
    confirmed = None
    t = detected_at
    while t - lag <= end:
        p = _evidence(uf, chosen, start, t - lag)["p_value"]
        if -np.log10(max(p, 1e-300)) >= floor:
            confirmed = t
            break
        t += pd.Timedelta(hours=1)
    if confirmed is None:
        confirmed = end + lag  # below the floor: merge_episodes drops it
    return Incident(
        issue=issue,
        segment=chosen,
        start=start,
        detected_at=confirmed,
        end=end if data_end is None else min(end, data_end),
        severity=min(-np.log10(max(evidence["p_value"], 1e-300)), 300.0),
        evidence=evidence,
        signal=primary,
        episodes=list(group),
        drilldown=table,
    )


def _choose(uf, signal, candidates, ex, start, end, *, explain: float):
    """One signal's segment for an incident among the alarmed `candidates`, and its drill-down."""
    excesses = {seg: round(ex(signal, seg, start, end), 6) for seg in candidates}
    best = max(excesses.values())
    chosen: Segment = ()
    if best > 0:
        # Among the alarmed segments carrying at least half the largest excess, the one with
        # the strongest evidence: a change concentrated in a narrow segment is more
        # significant there than in its parents, whose other items only add noise ...
        good = [s for s in candidates if excesses[s] >= 0.5 * best]
        strength = {s: _evidence(uf, s, start, end)["p_value"] for s in good}
        chosen = min(good, key=lambda s: (strength[s], -len(s)))
        # ... unless a more general alarmed segment holds (nearly) the same excess and its
        # other items moved too: then the change is not confined to the narrow one.
        for parent in sorted(good, key=len):
            if (
                parent != chosen
                and contains(parent, chosen)
                and excesses[parent] >= 0.9 * excesses[chosen]
                and not _rest_is_normal(uf, parent, chosen, start, end)
            ):
                chosen = parent
                break
    table = drilldown(uf, start, end, within=())
    if chosen == ():
        chosen = top_segment(table)
    # ThirdEye-style drill-down: go one dimension deeper while a child carries most of the
    # segment's excess, clearly more than its share of the expected count, and the rest of
    # the segment shows no excess of its own (else the whole segment moved).
    while 0 < len(chosen) < 2:
        refined = _refine(uf, chosen, start, end, explain=explain)
        if refined is None:
            break
        chosen = refined
    return chosen, table


def _refine(
    uf: UnitFrame, parent: Segment, start: pd.Timestamp, end: pd.Timestamp, *, explain: float
) -> Segment | None:
    """The child of `parent` (one more dimension) that explains its excess, if any."""
    p = excess(uf, parent, start, end)
    if p["excess"] <= 0 or p["expected"] <= 0:
        return None
    children = drilldown(uf, start, end, within=parent, pairs=False, top_k=10)
    for child in children["segment"]:
        c = excess(uf, child, start, end)
        ep = c["excess"] / p["excess"]
        share = c["expected"] / p["expected"]
        if share >= 0.95 or ep < explain or ep - share < 0.2:
            continue  # (nearly) the whole parent, or no more than its share
        if _rest_is_normal(uf, parent, child, start, end):
            return child
    return None


def _rest_is_normal(
    uf: UnitFrame,
    parent: Segment,
    child: Segment,
    start: pd.Timestamp,
    end: pd.Timestamp,
    alpha: float = 0.01,
) -> bool:
    """True when parent-minus-child has no significant excess in [start, end)."""
    p = excess(uf, parent, start, end)
    c = excess(uf, child, start, end)
    num = p["num"] - c["num"]
    den = p["den"] - c["den"]
    expected = p["expected"] - c["expected"]
    base = p["baseline_num"] - c["baseline_num"]
    if den <= 0 or expected <= 0:
        return True
    shape = np.array([max(base, 0.0) + 3.0])
    post_rate = shape / (expected / den)
    pv = float(predictive_tail(np.array([num]), shape, post_rate, np.array([den]))[0])
    # With large counts a tiny drift is "significant": a rest within 25 % of its baseline
    # counts as normal too.
    return pv >= alpha or num <= 1.25 * expected


def _evidence(
    uf: UnitFrame, segment: Segment, start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, Any]:
    seg = excess(uf, segment, start, end)
    top = excess(uf, (), start, end)
    shape = np.array([seg["baseline_num"] + 3.0])
    rate_den = np.array([seg["expected"] / seg["den"] if seg["den"] > 0 else 1.0])
    # Gamma posterior of the baseline rate: shape = events + prior, rate = shape / rate.
    post_rate = shape / np.maximum(rate_den, 1e-12)
    p = float(predictive_tail(np.array([seg["num"]]), shape, post_rate, np.array([seg["den"]]))[0])
    contribution = seg["excess"] / top["excess"] if top["excess"] > 0 else float("nan")
    p_share = seg["expected"] / top["expected"] if top["expected"] > 0 else 0.0
    q_share = seg["num"] / top["num"] if top["num"] > 0 else 0.0
    return {
        "baseline_rate": round(seg["baseline_rate"], 6),
        "observed_rate": round(seg["observed_rate"], 6),
        "rate_ratio": round(seg["observed_rate"] / seg["baseline_rate"], 3)
        if seg["baseline_rate"] > 0
        else None,
        "numerator": seg["num"],
        "denominator": seg["den"],
        "expected": round(seg["expected"], 2),
        "p_value": p,
        "contribution": None if np.isnan(contribution) else round(float(contribution), 4),
        "surprise": round(float(js_term(np.array([p_share]), np.array([q_share]))[0]), 5),
        "window": [start.isoformat(), end.isoformat()],
    }


def severity_floors(
    scanned: Mapping[tuple[str, bool], int], alpha: float
) -> dict[tuple[str, bool], float]:
    """-log10 of the p-value an incident must reach, per (issue, pair segment?): Bonferroni
    over the segments discovery scans for that issue.

    `scanned` counts the segment series of every signal of an issue, single dimensions (and
    the platform: False) apart from dimension pairs (True). An incident's severity is the
    p-value of one segment's whole-window count, but discovery picked that segment (and the
    signal naming it) among all of these. The family-wise level `alpha` is split evenly
    between the singles and the (far more numerous) pairs, as the detector's
    Benjamini-Hochberg families are; within a family of m series the p-value must be below
    alpha / 2 / m. So an issue scanned over a few segments is not held to the bar of one
    scanned over hundreds, a single hashtag not to the bar of the pairs, and the bar rises
    with the data's size as the scan grows (more segments pass the minimum count).
    """
    out: dict[tuple[str, bool], float] = {}
    for (issue, is_pair), n in scanned.items():
        families = sum(scanned.get((issue, p), 0) > 0 for p in (False, True))
        out[(issue, is_pair)] = float(np.log10(families * max(n, 1) / alpha))
    return out


def related(a: Segment, b: Segment) -> bool:
    """Nested segments (one holds every dimension=value of the other)."""
    return contains(a, b) or contains(b, a)


def suppress_explained(
    incidents: Sequence[Incident],
    explained_by: Mapping[str, Sequence[str]],
    units: Mapping[str, UnitFrame] | None = None,
    *,
    share: float = 0.5,
) -> list[Incident]:
    """Drop incidents named by a proxy signal that coincide with an incident of an issue explaining it.

    `explained_by` maps a signal name to the issues that explain it. E.g. enforcement volume
    (or actions citing the harassment policy) rises in a segment where an abuse surge is
    found: the actions are the expected response to the surge, not a misfire. The two
    incidents must overlap in time and concern the same items: nested segments, or (given
    `units`) non-conflicting ones whose intersection carries at least `share` of the
    explained incident's excess (e.g. hashtag=giveaway during a spam wave in hashtag=lifehack).
    """

    def same_items(inc: Incident, other: Incident) -> bool:
        if related(other.segment, inc.segment):
            return True
        if units is None or inc.signal not in units or _conflict(inc.segment, other.segment):
            return False
        return _mostly_within(
            units[inc.signal], inc.segment, other.segment, inc.start, inc.end, share
        )

    out = []
    for inc in incidents:
        issues = explained_by.get(inc.signal, ())
        if issues and any(
            o.issue in issues and o.start <= inc.end and inc.start <= o.end and same_items(inc, o)
            for o in incidents
        ):
            continue
        out.append(inc)
    return out
