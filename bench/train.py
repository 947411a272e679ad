"""Benchmark: the training job on a large simulation, wall time per stage and peak memory.

    uv run python bench/train.py                 # 200,000 items, baseline run on 20,000
    uv run python bench/train.py --items 50000 --baseline-items 10000

Runs the whole job (simulate -> write -> load + snapshots + labels -> split -> transform ->
fit -> evaluate; MLflow logging off) on the large simulation and on a baseline one in the
same process, prints a table of stage times and the ratio large/baseline next to the ratio
of items (linear scaling would make them equal), and the peak resident memory (psutil RSS,
sampled every 50 ms) of each run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

# Run as `python bench/train.py`, this folder comes first on sys.path and bench/features.py
# would shadow the features package: put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from simulator.config import SimConfig  # noqa: E402
from simulator.core import simulate, write_simulation  # noqa: E402
from training.pipeline import train  # noqa: E402


class PeakRSS:
    """Peak resident set size of this process, sampled in a background thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self._proc = psutil.Process()
        self._interval = interval_s
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run(items: int, days: int, seed: int, workdir: Path) -> tuple[dict[str, float], int, dict]:
    """One full job; returns stage times (s), peak RSS (bytes) and per-issue metrics."""
    times: dict[str, float] = {}
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        sim = simulate(SimConfig(n_items=items, days=days, seed=seed))
        times["simulate"] = time.perf_counter() - t0
        n_events = len(sim.tables["events"])
        t0 = time.perf_counter()
        out = write_simulation(sim, workdir / f"sim{items}")
        times["write"] = time.perf_counter() - t0
        del sim
        result = train(out, track=False, random_state=seed)
        times.update(result.timings)
        times.pop("log", None)
    times["train_total"] = sum(v for k, v in times.items() if k not in ("simulate", "write"))
    times["total"] = times["train_total"] + times["simulate"] + times["write"]
    info = {
        "events": n_events,
        "rows": sum(result.report.extra["split_rows"].values()),
        "metrics": result.metrics,
    }
    return times, rss.peak, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000, help="items of the large run")
    parser.add_argument(
        "--baseline-items", type=int, default=20_000, help="items of the baseline run"
    )
    parser.add_argument("--days", type=int, default=28, help="days the world simulates")
    parser.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="surfacer-bench-train-") as tmp:
        base_t, base_rss, base_info = run(args.baseline_items, args.days, args.seed, Path(tmp))
        big_t, big_rss, big_info = run(args.items, args.days, args.seed, Path(tmp))

    scale = args.items / args.baseline_items
    print(f"\ntraining job, all issue types, {args.days} days, seed {args.seed}")
    head = f"{'stage':<12}{args.baseline_items:>12,} items{args.items:>14,} items{'ratio':>9}"
    print(head)
    print("-" * len(head))
    for stage in big_t:
        b, g = base_t.get(stage, float("nan")), big_t[stage]
        ratio = g / b if b > 0 else float("nan")
        print(f"{stage:<12}{b:>16.1f}s{g:>18.1f}s{ratio:>9.1f}")
    print(
        f"{'events':<12}{base_info['events']:>17,}{big_info['events']:>19,}"
        f"{big_info['events'] / base_info['events']:>9.1f}"
    )
    print(
        f"{'rows':<12}{base_info['rows']:>17,}{big_info['rows']:>19,}"
        f"{big_info['rows'] / base_info['rows']:>9.1f}"
    )
    print(
        f"{'peak RSS':<12}{base_rss / 2**30:>15.2f}GiB{big_rss / 2**30:>17.2f}GiB"
        f"{big_rss / base_rss:>9.1f}"
    )
    print(
        f"items ratio {scale:.1f}x; train time ratio {big_t['train_total'] / base_t['train_total']:.1f}x"
    )
    print("\nPR-AUC (model / oracle) on the test window:")
    for issue, m in big_info["metrics"].items():
        b = base_info["metrics"][issue]
        print(
            f"  {issue:<22} {args.baseline_items:,}: {b['pr_auc']:.3f} / {b.get('oracle_pr_auc', float('nan')):.3f}"
            f"   {args.items:,}: {m['pr_auc']:.3f} / {m.get('oracle_pr_auc', float('nan')):.3f}"
        )


if __name__ == "__main__":
    main()
