"""Benchmark: issue discovery vs the simulator's planted incidents, over several seeds.

For each simulation size and seed it runs `discovery.discover` on the raw tables (raw proxies),
with a truth-based stand-in for model scores ("oracle": logit(p) + N(0, 1) noise), optionally
with the real pipeline ("model": `training.pipeline.train` on the simulated tables, untracked,
then `models.batch.score_dataset` on every snapshot, as `surfacer demo` does), and,
side by side, a plain z-score baseline (daily rate per segment, z > 3 over a trailing 7-day
mean/std, no count model, no multiple-testing control). It prints the share of planted
incidents found within 24 h of their start with the right segment and the false alarms per
simulated week, with PASS/FAIL against the targets (>= 90 % found at 100k items, >= 75 % below,
in the aggregate and in the worst world; <= 1 false alarm/week).

Incidents as a system of record (issue 16), per run of discover (non-z-score modes):
- time to detect per incident kind (planted start -> detected_at of the match, hours);
- duplicates per planted incident after 3 overlapping reruns: discovery over three sliding
  windows (each `days - 2 * step` long, `step` = days / 7 apart) upserted into a fresh
  review store, then the stored incidents of the same issue whose segment is nested with the
  planted one and whose window overlaps it, minus one (target 0);
- effect interval coverage: for each planted incident fixed inside the data (its `end`),
  `effect_of_fix` at the fix time on the planted segment, and the planted effect from a twin
  simulation where that incident is never fixed (same world, same seed): (treated - control)
  after the fix, fixed minus unfixed. Covered when the 95% interval holds it (target 90%).
  The twin differs from the real run only through the incident's draws after the fix where
  the simulator's random streams allow; the twin is an estimate of the planted effect, and
  its own sampling noise is not in the interval.
Worlds: the default world and drawn worlds (`--world-seeds`: `default` and integers, passed
to `simulator.worlds.draw_world`); the worst world is printed.
Measured (2026-12-04, shared 2-core machine, 20k items, data seed 0, oracle mode, the
default world and drawn worlds 1-5): 0 duplicates over 24 planted incidents after 3
overlapping reruns; found 20/24 within 24 h (worst world 2: 2/4), 2 false alarms in 24
simulated weeks; the then day-block percentile bootstrap held the twin's planted effect for
9 of 12 fixes (75%).
Measured (2026-12-05, load average 14-20 on the shared 2-core machine, same runs): the
day-clustered interval of discovery.effect holds it for 12 of 12 (100%, target 90%; the
fall seen for 11). With `--severity-alpha 0.05` (opt-in floor from the size of the scan):
found 23/24 (worst world 2: 3/4, PASS at 75%), 9 false alarms in 24 weeks (0.38/week;
worst world 5, 1.00/week), 0 duplicates. At 100k items, default world, that floor gives
7 false alarms in 4 weeks (1.75/week, FAIL): spill-overs of the gaming abuse wave into
gaming hashtags; hence not the default then.
Measured (2026-12-05, later; load average 7-12 on the shared 2-core machine, data seed 0,
oracle mode, default world and drawn worlds 1-5), after `_absorb_spillovers` folds an
incident on the same items as a running one of its issue unless it runs hotter than that
one explains, with the scan-size floor at 0.05 (now the default; `--fixed-floor` for the
old one). Per world: found within 24 h, false alarms/week.
  20k (with reruns and effects, 11 min): default 4/4 0.25, world 1 4/4 0.50, world 2 3/4
  0.00, world 3 4/4 0.00, world 4 4/4 0.50, world 5 4/4 0.25; in all 23/24 (worst world
  2: 75%, PASS), 6 false alarms in 24 weeks (0.25/week), 0 duplicates over 24 planted
  incidents, effect coverage 12/12.
  100k (`--no-record`, 27 min): default 4/4 0.50, world 1 4/4 0.75, world 2 4/4 0.75,
  world 3 4/4 0.00, world 4 4/4 0.50, world 5 4/4 0.00; in all 24/24 (PASS), 10 false
  alarms in 24 weeks (0.42/week; worst worlds 1 and 2, 0.75/week, PASS). The default
  world's 5 gaming-hashtag false alarms are folded into the abuse-gaming incident.
  100k with reruns and effects (load 4-14): default world 4/4, 0.50/week, 0 duplicates,
  effect 2/2 (7.8 min); world 2 4/4, 0.75/week, 0 duplicates, effect 2/2 (10.1 min).

    uv run python bench/discovery.py                       # 20k and 100k items, seeds 0-2
    uv run python bench/discovery.py --items 20000 --seeds 0 --modes oracle --world-seeds default 1 2 3 4 5
    uv run python bench/discovery.py --items 20000 --seeds 0 1 2 3 4 --modes oracle
    uv run python bench/discovery.py --items 100000 --seeds 3 4 --modes model   # held-out seeds

Measured (2026-11-25, model mode = the real trained models): at 100k items, seeds 0-2, model
12/12 found at 0.33 false alarms/week and oracle 12/12 at 0.42 (both PASS); held-out seeds 3-4,
model 7/8 at 0.38 (misfire-us-video missed on seed 3, raw proxies miss it too). At 20k items,
seeds 0-2: oracle 11/12 at 0 (PASS), model 7/12 at 0.08 (FAIL), raw 3/12 at 0.08 (FAIL): the
planted incidents are five times smaller there, and two of them leave too little evidence in
the data within 24 h for a real scorer:

Detectability at 20k items (first 24 h of each planted incident). Model mode counts an item as
flagged only at calibrated p >= 0.5 (`DiscoveryConfig.post_min_probability`): the review
queue's capacity threshold flags ~200 of ~700 posts a day, so its flagged share follows the
model's priors (seed 0, gaming: 47 flagged vs 40.5 expected). That took model mode from 11/20
to 13/20 over seeds 0-4 (7/12 on seeds 0-2 either way). What still blocks it:
- abuse-gaming is not in the data within 24 h, whatever the scorer. The surge flips latent
  harm of gaming items posted from its start (seed 0: 27 harmful posted on day 0 vs ~8/day),
  but a harmful item shows evidence by 6 h (an abusive comment or a harassment/hate report)
  only 43 % of the time (many get few views). Gaming items posted on day 0 with such evidence
  by its end, seeds 0-4: 8, 11, 19, 14, 15, vs 4.9, 3.9, 4.6, 4.6, 3.9 a day over the week
  before. The model's p >= 0.5 count at 1 h: 3/2.4, 5/1.5, 13/2.4, 6/2.4, 5/1.5 expected
  (-log10 p 0.4, 1.6, 5.0, 1.4, 1.6), under the severity floor of 6 that keeps false alarms
  < 1/week; scoring at later or denser horizons (6 h; 1-24 h, counting each item at its first
  flagging scoring) does not lift it over the floor either. Oracle scores see it (16 vs 0.4)
  because they are built from the latent propensity the surge multiplies, which no feature
  carries; so oracle's 11/12 is not a ceiling the real model can reach on these seeds.
- spam-lifehack: seed 1 is confirmed at 27 h (15 flagged vs 3.65 expected on day 0, -log10 p
  4.2 from the day's bucket alone); seed 2 is marginal even for oracle scores.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/discovery.py`, this file's folder comes first on sys.path and this
# module would shadow the `discovery` package; drop that folder before importing it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from discovery.evaluate import match_incidents, scores_from_truth  # noqa: E402
from discovery.pipeline import DiscoveryConfig, discover  # noqa: E402
from discovery.series import build_series, hour_grid  # noqa: E402
from discovery.signals import build_signals, item_dimensions  # noqa: E402
from simulator import SimConfig, simulate  # noqa: E402

TARGET_FOUND = 0.9  # found within 24 h, in every world, at 100k items and more
TARGET_FOUND_SMALL = 0.75  # ... below 100k items (issue 16: planted incidents 5x smaller at 20k)
TARGET_FA_PER_WEEK = 1.0
TARGET_DUPLICATES = 0
TARGET_COVERAGE = 0.9
RERUNS = 3
# discover's settings for every run (main sets the severity floor from --severity-alpha and
# --fixed-floor)
CONFIG = DiscoveryConfig()


def target_found(n: int) -> float:
    """The found-within-24-h target at `n` items (issue 16: 90% at 100k, 75% at 20k)."""
    return TARGET_FOUND if n >= 100_000 else TARGET_FOUND_SMALL


def world_config(world: int | None, n: int, days: int, seed: int) -> SimConfig:
    """The default world (None) or drawn world `world` at this size and data seed."""
    if world is None:
        return SimConfig(n_items=n, days=days, seed=seed)
    from simulator.worlds import draw_world

    return draw_world(world).config(n_items=n, days=days, seed=seed)


def time_to_detect(ev: dict, planted: list[dict]) -> dict[str, list[float]]:
    """Hours from each found planted incident's start to its detection, by incident kind."""
    kinds = {str(p["id"]): p["kind"] for p in planted}
    starts = {str(p["id"]): pd.Timestamp(p["start"]) for p in planted}
    out: dict[str, list[float]] = defaultdict(list)
    for pid, hit in ev["matches"].items():
        if hit:
            hours = (pd.Timestamp(hit["detected_at"]) - starts[pid]) / pd.Timedelta(hours=1)
            out[kinds[pid]].append(float(hours))
    return out


def duplicates_after_reruns(sim, scores, planted: list[dict], days: int) -> list[int]:
    """Per planted incident: stored incidents matching it beyond the first, after RERUNS
    overlapping sliding-window runs upserted into one fresh store."""
    from discovery.record import incident_records, window_tables
    from serving.review.incidents import related
    from serving.review.store import ReviewStore

    start = pd.to_datetime(sim.tables["items"]["created_at"], utc=True).min().floor("D")
    step = pd.Timedelta(days=days / 7)
    span = pd.Timedelta(days=days) - (RERUNS - 1) * step
    with tempfile.TemporaryDirectory() as tmp:
        store = ReviewStore(f"sqlite:///{Path(tmp) / 'review.db'}")
        store.migrate()
        try:
            for k in range(RERUNS):
                lo, hi = start + k * step, start + k * step + span
                cut = window_tables(sim.tables, lo, hi)
                part = None
                if scores is not None:
                    as_of = pd.to_datetime(scores["as_of"], utc=True)
                    part = scores[(as_of >= lo) & (as_of <= hi)].reset_index(drop=True)
                store.upsert_incidents(
                    incident_records(discover(cut, part, config=CONFIG), cut, None)
                )
            stored = store.list_incidents(limit=10_000).items
        finally:
            store.close()
    end = start + pd.Timedelta(days=days)
    out = []
    for p in planted:
        p0 = pd.Timestamp(p["start"])
        p1 = pd.Timestamp(p["end"]) if p.get("end") else end
        seg = {str(k): str(v) for k, v in p["segment"].items()}
        n = sum(
            1
            for i in stored
            if i.issue == p["issue"]
            and related(i.segment, seg)
            and i.start <= p1 + pd.Timedelta(hours=48)
            and p0 <= i.end
        )
        out.append(max(0, n - 1))
    return out


def effect_coverage(cfg: SimConfig, sim, scores, days: int) -> list[dict]:
    """For each planted incident fixed inside the data: the DiD interval at its fix and the
    planted effect from the twin simulation where it is never fixed."""
    import dataclasses

    from discovery.effect import effect_of_fix
    from discovery.series import canonical

    start = pd.to_datetime(sim.tables["items"]["created_at"], utc=True).min().floor("D")
    end = start + pd.Timedelta(days=days)
    out = []
    for j, p in enumerate(sim.incidents):
        if not p.get("end"):
            continue
        fix = pd.Timestamp(p["end"])
        # as the product measures it: before the fix only while the incident ran
        began = max(start, pd.Timestamp(p["start"]))
        window = float(np.floor(min(7.0, (end - fix).days, (fix - began).days)))
        if window < 2:
            continue
        unfixed = tuple(
            dataclasses.replace(inc, end_day=None) if k == j else inc
            for k, inc in enumerate(cfg.incidents)
        )
        twin = simulate(dataclasses.replace(cfg, incidents=unfixed))
        twin_scores = (
            scores_from_truth(twin.truth, twin.tables["items"], random_state=cfg.seed)
            if scores is not None
            else None
        )
        segment = canonical(p["segment"].items())
        try:
            got = effect_of_fix(
                sim.tables, p["issue"], segment, fix, scores=scores, window_days=window
            )
            cf = effect_of_fix(
                twin.tables,
                p["issue"],
                segment,
                fix,
                scores=twin_scores,
                window_days=window,
            )
        except ValueError as exc:
            out.append({"id": p["id"], "error": str(exc)})
            continue
        planted_effect = (got.treated_after - cf.treated_after) - (
            got.control_after - cf.control_after
        )
        out.append(
            {
                "id": p["id"],
                "kind": p["kind"],
                "did": got.did,
                "ci": (got.ci_low, got.ci_high),
                "planted": planted_effect,
                "covered": got.ci_low <= planted_effect <= got.ci_high,
                "fell": got.ci_high < 0,
            }
        )
    return out


def zscore_baseline(tables, scores=None, *, z: float = 3.0, min_count: float = 5.0) -> list[dict]:
    """The naive detector: per segment, daily rate vs trailing 7-day mean/std; one alarm per run."""
    dims = item_dimensions(tables)
    signals = build_signals(tables, scores)
    start, n_hours = hour_grid([s.units for s in signals])
    days = pd.date_range(start, periods=n_hours // 24, freq="D")
    out: list[dict] = []
    for sig in signals:
        series = build_series(sig.units, dims, start=start, n_hours=n_hours)
        num, den = series.aggregate(24)
        rate = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        for t in range(7, rate.shape[1]):
            past = rate[:, t - 7 : t]
            mu, sd = past.mean(axis=1), past.std(axis=1)
            hit = (rate[:, t] > mu + z * np.maximum(sd, 1e-9)) & (num[:, t] >= min_count)
            prev = (
                (
                    rate[:, t - 1]
                    > rate[:, t - 8 : t - 1].mean(axis=1)
                    + z * np.maximum(rate[:, t - 8 : t - 1].std(axis=1), 1e-9)
                )
                & (num[:, t - 1] >= min_count)
                if t > 7
                else np.zeros_like(hit)
            )
            for s in np.flatnonzero(hit & ~prev):
                out.append(
                    {
                        "issue": sig.issue,
                        "segment": dict(series.segments[s]),
                        "start": days[t].isoformat(),
                        "detected_at": (days[t] + pd.Timedelta(days=1)).isoformat(),
                    }
                )
    return out


def model_scores(sim, seed: int) -> tuple[pd.DataFrame, float]:
    """Scores from the real pipeline: train on the simulated tables (untracked), score snapshots."""
    from features.snapshot import build_snapshots
    from models.batch import score_dataset
    from simulator import write_simulation
    from training.pipeline import train

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_simulation(sim, Path(tmp) / "data")
        result = train(data, random_state=seed, track=False, promote=False)
    scores = score_dataset(result.bundle, build_snapshots(sim.tables))
    return scores, time.perf_counter() - t0


def run(
    items: list[int],
    seeds: list[int],
    days: int,
    modes: list[str],
    worlds: list[int | None] | None = None,
    record: bool = True,
) -> bool:
    rows: dict[tuple[int, str], list[dict]] = defaultdict(list)
    by_world: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    ttd: dict[str, list[float]] = defaultdict(list)
    dups: list[int] = []
    coverage: list[dict] = []
    for world in worlds or [None]:
        wname = "default" if world is None else f"world {world}"
        for n in items:
            for seed in seeds:
                t0 = time.perf_counter()
                cfg = world_config(world, n, days, seed)
                sim = simulate(cfg)
                t_sim = time.perf_counter() - t0
                planted = sim.incidents
                for mode in modes:
                    t_model = 0.0
                    if mode.endswith("oracle"):
                        scores = scores_from_truth(
                            sim.truth, sim.tables["items"], random_state=seed
                        )
                    elif mode == "model":
                        scores, t_model = model_scores(sim, seed)
                    else:
                        scores = None
                    t0 = time.perf_counter()
                    if mode.startswith("zscore"):
                        detected = zscore_baseline(sim.tables, scores)
                    else:
                        result = discover(sim.tables, scores, config=CONFIG)
                        detected = result.incidents_json()
                    elapsed = time.perf_counter() - t0
                    data_start = (
                        pd.to_datetime(sim.tables["items"]["created_at"], utc=True).min().floor("D")
                    )
                    data_end = data_start + pd.Timedelta(days=days)
                    ev = match_incidents(
                        detected, planted, data_start=data_start, data_end=data_end
                    )
                    rows[(n, mode)].append(
                        {**ev, "seconds": elapsed, "sim_seconds": t_sim, "model_seconds": t_model}
                    )
                    by_world[(wname, n, mode)].append(ev)
                    extra = ""
                    if record and not mode.startswith("zscore"):
                        for kind, hours in time_to_detect(ev, planted).items():
                            ttd[f"{mode} {kind}"] += hours
                        d = duplicates_after_reruns(sim, scores, planted, days)
                        dups.extend(d)
                        extra = f" dup {sum(d)}"
                        if mode != "model":  # the twin would need its own training run
                            cov = effect_coverage(cfg, sim, scores, days)
                            coverage.extend(cov)
                            extra += " effect " + (
                                ", ".join(
                                    f"{c['id']}:{'in' if c.get('covered') else 'out'}" for c in cov
                                )
                                or "-"
                            )
                    missed = [k for k, v in ev["matches"].items() if v is None]
                    print(
                        f"  {wname:<9} items={n:>7} seed={seed} {mode:<14}{extra} found {ev['found']}/{ev['planted']}"
                        f" false alarms {ev['false_alarms']:>3} ({ev['false_alarms_per_week']:.2f}/week)"
                        f" {elapsed:6.1f}s{f' (+{t_model:.0f}s train+score)' if t_model else ''}"
                        f"  missed: {', '.join(missed) or '-'}",
                        flush=True,
                    )
    print()
    header = f"{'items':>8} {'mode':<14} {'seeds':>5} {'found':>9} {'found %':>8} {'FA':>4} {'weeks':>6} {'FA/week':>8} {'s/run':>6}  verdict"
    print(header)
    print("-" * len(header))
    all_pass = True
    summary: dict[tuple[int, str], tuple[float, float]] = {}
    for (n, mode), evs in rows.items():
        planted = sum(e["planted"] for e in evs)
        found = sum(e["found"] for e in evs)
        fa = sum(e["false_alarms"] for e in evs)
        weeks = sum(e["weeks"] for e in evs)
        rate = found / planted if planted else float("nan")
        fapw = fa / weeks if weeks else float("nan")
        ok = rate >= target_found(n) and fapw <= TARGET_FA_PER_WEEK
        summary[(n, mode)] = (rate, fapw)
        if not mode.startswith("zscore"):
            all_pass &= ok
        print(
            f"{n:>8} {mode:<14} {len(evs):>5} {found:>4}/{planted:<4} {100 * rate:>7.1f}% {fa:>4} {weeks:>6.1f}"
            f" {fapw:>8.2f} {np.mean([e['seconds'] for e in evs]):>6.1f}  {'PASS' if ok else 'FAIL'}"
        )
    print()
    for (n, mode), (rate, fapw) in summary.items():
        if mode.startswith("zscore") or mode == "model":
            continue  # (no z-score run on model scores)
        base = summary.get((n, "zscore" + ("-oracle" if mode.endswith("oracle") else "")))
        if base:
            ratio = f"{base[1] / fapw:.1f}x" if fapw > 0 else "n/a: ours is 0"
            print(
                f"items={n} {mode}: false alarms/week {fapw:.2f} vs z-score baseline {base[1]:.2f}"
                f" (baseline/ours = {ratio}); found {100 * rate:.0f}% vs {100 * base[0]:.0f}%"
            )
    if len(worlds or [None]) > 1:
        print()
        worst: dict[tuple[int, str], tuple[float, str]] = {}
        worst_fa: dict[tuple[int, str], tuple[float, str]] = {}
        for (wname, n, mode), evs in by_world.items():
            planted_n = sum(e["planted"] for e in evs)
            rate = sum(e["found"] for e in evs) / planted_n if planted_n else float("nan")
            weeks = sum(e["weeks"] for e in evs)
            fapw = sum(e["false_alarms"] for e in evs) / weeks if weeks else float("nan")
            if (n, mode) not in worst or rate < worst[(n, mode)][0]:
                worst[(n, mode)] = (rate, wname)
            if (n, mode) not in worst_fa or fapw > worst_fa[(n, mode)][0]:
                worst_fa[(n, mode)] = (fapw, wname)
        for (n, mode), (rate, wname) in sorted(worst.items()):
            fapw, fa_world = worst_fa[(n, mode)]
            ok = rate >= target_found(n) and fapw <= TARGET_FA_PER_WEEK
            if not mode.startswith("zscore"):
                all_pass &= ok
            print(
                f"worst world items={n} {mode}: {wname}, found {100 * rate:.0f}%"
                f" (target {100 * target_found(n):.0f}% in every world); most false alarms"
                f" {fa_world}, {fapw:.2f}/week ({'PASS' if ok else 'FAIL'})"
            )
    if record:
        print()
        for key in sorted(ttd):
            hours = ttd[key]
            print(
                f"time to detect {key}: median {np.median(hours):.1f} h, max {max(hours):.1f} h"
                f" over {len(hours)} found"
            )
        dup_ok = sum(dups) <= TARGET_DUPLICATES
        all_pass &= dup_ok
        print(
            f"duplicates after {RERUNS} overlapping reruns: {sum(dups)} over {len(dups)} planted"
            f" incidents ({'PASS' if dup_ok else 'FAIL'}, target {TARGET_DUPLICATES})"
        )
        measured = [c for c in coverage if "covered" in c]
        if measured:
            share = sum(c["covered"] for c in measured) / len(measured)
            fell = sum(c["fell"] for c in measured)
            cov_ok = share >= TARGET_COVERAGE
            all_pass &= cov_ok
            print(
                f"effect interval coverage of the planted effect: {100 * share:.0f}% of"
                f" {len(measured)} fixes ({'PASS' if cov_ok else 'FAIL'}, target"
                f" {100 * TARGET_COVERAGE:.0f}%); interval below zero (fall seen) for {fell}"
            )
            for c in measured:
                print(
                    f"  {c['id']:<18} DiD {c['did']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
                    f" planted {c['planted']:+.4f} {'covered' if c['covered'] else 'NOT covered'}"
                )
        else:
            print("effect interval coverage: no planted fix with 2+ days of data on each side")
    print(
        f"\ntargets: found >= {100 * TARGET_FOUND:.0f}% at 100k+ items, >= {100 * TARGET_FOUND_SMALL:.0f}%"
        f" below (every world), false alarms <= {TARGET_FA_PER_WEEK}/week -> {'PASS' if all_pass else 'FAIL'}"
    )
    return all_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--items", type=int, nargs="+", default=[20_000, 100_000], help="simulated items per run"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="simulation seeds")
    parser.add_argument("--days", type=int, default=28, help="simulated days")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["raw", "oracle", "model", "zscore", "zscore-oracle"],
        help="raw: raw proxies; oracle: truth-based scores; model: train and score with the real"
        " pipeline per seed (~20 s a seed at 20k items, ~70 s at 100k); zscore*: the naive"
        " baseline",
    )
    parser.add_argument(
        "--world-seeds",
        nargs="+",
        default=["default", "1", "2", "3", "4", "5"],
        help="worlds: `default` and drawn world seeds (simulator.worlds.draw_world)",
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="skip the system-of-record measures (reruns, time to detect, effect coverage)",
    )
    parser.add_argument(
        "--severity-alpha",
        type=float,
        default=DiscoveryConfig.severity_alpha,
        help="family-wise level of the severity floor from the size of the scan"
        " (DiscoveryConfig.severity_alpha, default %(default)s)",
    )
    parser.add_argument(
        "--fixed-floor",
        action="store_true",
        help="the fixed floor (-log10 p >= 6) instead of the scan-size one",
    )
    args = parser.parse_args()
    global CONFIG
    CONFIG = DiscoveryConfig(severity_alpha=None if args.fixed_floor else args.severity_alpha)
    worlds: list[int | None] = []
    for w in args.world_seeds:
        if w == "default":
            worlds.append(None)
        elif w.isdigit():
            worlds.append(int(w))
        else:
            parser.error(f"--world-seeds takes `default` or non-negative integers, got {w!r}")
    run(args.items, args.seeds, args.days, args.modes, worlds, record=not args.no_record)


if __name__ == "__main__":
    main()
