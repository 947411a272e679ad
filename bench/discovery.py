"""Benchmark: issue discovery vs the simulator's planted incidents, over several seeds.

For each simulation size and seed it runs `discovery.discover` on the raw tables (raw proxies),
with a truth-based stand-in for model scores ("oracle": logit(p) + N(0, 1) noise), optionally
with the real pipeline ("model": `training.pipeline.train` on the simulated tables, untracked,
then `models.batch.score_dataset` on every snapshot, as `surfacer demo` does), and,
side by side, a plain z-score baseline (daily rate per segment, z > 3 over a trailing 7-day
mean/std, no count model, no multiple-testing control). It prints the share of planted
incidents found within 24 h of their start with the right segment and the false alarms per
simulated week, with PASS/FAIL against the targets (>= 90 % found, <= 1 false alarm/week).

    uv run python bench/discovery.py                       # 20k and 100k items, seeds 0-2
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
from discovery.pipeline import discover  # noqa: E402
from discovery.series import build_series, hour_grid  # noqa: E402
from discovery.signals import build_signals, item_dimensions  # noqa: E402
from simulator import SimConfig, simulate  # noqa: E402

TARGET_FOUND = 0.9
TARGET_FA_PER_WEEK = 1.0


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


def run(items: list[int], seeds: list[int], days: int, modes: list[str]) -> bool:
    rows: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for n in items:
        for seed in seeds:
            t0 = time.perf_counter()
            sim = simulate(SimConfig(n_items=n, days=days, seed=seed))
            t_sim = time.perf_counter() - t0
            planted = sim.incidents
            for mode in modes:
                t_model = 0.0
                if mode.endswith("oracle"):
                    scores = scores_from_truth(sim.truth, sim.tables["items"], random_state=seed)
                elif mode == "model":
                    scores, t_model = model_scores(sim, seed)
                else:
                    scores = None
                t0 = time.perf_counter()
                if mode.startswith("zscore"):
                    detected = zscore_baseline(sim.tables, scores)
                else:
                    result = discover(sim.tables, scores)
                    detected = result.incidents_json()
                elapsed = time.perf_counter() - t0
                data_start = (
                    pd.to_datetime(sim.tables["items"]["created_at"], utc=True).min().floor("D")
                )
                data_end = data_start + pd.Timedelta(days=days)
                ev = match_incidents(detected, planted, data_start=data_start, data_end=data_end)
                rows[(n, mode)].append(
                    {**ev, "seconds": elapsed, "sim_seconds": t_sim, "model_seconds": t_model}
                )
                missed = [k for k, v in ev["matches"].items() if v is None]
                print(
                    f"  items={n:>7} seed={seed} {mode:<14} found {ev['found']}/{ev['planted']}"
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
        ok = rate >= TARGET_FOUND and fapw <= TARGET_FA_PER_WEEK
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
    print(
        f"\ntargets: found >= {100 * TARGET_FOUND:.0f}%, false alarms <= {TARGET_FA_PER_WEEK}/week -> {'PASS' if all_pass else 'FAIL'}"
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
    args = parser.parse_args()
    run(args.items, args.seeds, args.days, args.modes)


if __name__ == "__main__":
    main()
