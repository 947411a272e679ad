"""Benchmark: start-up CPU time of the CLI and of a serving worker, against `import pandas`.

    uv run python bench/startup.py [--runs N]

Each case runs N times as a fresh process; its CPU time is the child's user + system time
(`resource.getrusage(RUSAGE_CHILDREN)` around the wait), so other processes' load on a shared
machine does not count. Cases:
- floor: `python -c "import pandas"` (any command that touches data pays at least this);
- `surfacer --help`, `surfacer train --help`, and a failing command
  (`surfacer train --data /nonexistent`, exit code 2);
- a serving worker: `import serving.app` and `create_app(settings)`.
Prints a table (median and min CPU, median wall time, ratio to the floor) and PASS/FAIL
against the targets: --help and the failing command < 1 s CPU, the worker < 2 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI_TARGET_S = 1.0
WORKER_TARGET_S = 2.0

WORKER_CODE = """
import json, os, tempfile
os.environ["SURFACER_DATA_DIR"] = tempfile.mkdtemp(prefix="surfacer-startup-")
os.environ["SURFACER_API_KEYS"] = json.dumps({"k": ["score"]})
from serving.app import create_app
create_app()
"""


@dataclass
class Case:
    name: str
    argv: list[str]
    target_s: float | None = None
    expect_code: int = 0


@dataclass
class Result:
    case: Case
    cpu_s: list[float]
    wall_s: list[float]


def surfacer_argv() -> list[str]:
    script = Path(sys.executable).with_name("surfacer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "surfacer"]


def cases() -> list[Case]:
    py, cli = sys.executable, surfacer_argv()
    return [
        Case("floor: python -c 'import pandas'", [py, "-c", "import pandas"]),
        Case("surfacer --help", [*cli, "--help"], CLI_TARGET_S),
        Case("surfacer train --help", [*cli, "train", "--help"], CLI_TARGET_S),
        Case(
            "surfacer train --data /nonexistent",
            [*cli, "train", "--data", "/nonexistent"],
            CLI_TARGET_S,
            expect_code=2,
        ),
        Case("worker: import serving.app", [py, "-c", "import serving.app"], WORKER_TARGET_S),
        Case("worker: import + create_app()", [py, "-c", WORKER_CODE], WORKER_TARGET_S),
    ]


def measure(case: Case, runs: int, cwd: Path) -> Result:
    cpu, wall = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            case.argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300
        )
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != case.expect_code:
            raise SystemExit(
                f"error: {case.name!r} exited {proc.returncode}, expected {case.expect_code}: "
                f"{proc.stderr.decode(errors='replace')[-2000:]}"
            )
        cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return Result(case, cpu, wall)


def bytecode_state() -> str:
    import importlib.util

    spec = importlib.util.find_spec("pandas")
    origin = Path(spec.origin) if spec and spec.origin else None
    cached = bool(origin and any((origin.parent / "__pycache__").glob("__init__.*.pyc")))
    dont_write = os.environ.get("PYTHONDONTWRITEBYTECODE") or "unset"
    return f"pandas bytecode compiled: {'yes' if cached else 'no'}; PYTHONDONTWRITEBYTECODE={dont_write}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Runs per case (default 5).")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")

    with tempfile.TemporaryDirectory(prefix="surfacer-startup-") as tmp:
        # a neutral working folder: no .surfacer/ state of the repo is read
        results = [measure(c, args.runs, Path(tmp)) for c in cases()]
    floor = statistics.median(results[0].cpu_s)

    print(f"\n{'case':<38}{'cpu median s':>13}{'cpu min s':>11}{'wall med s':>12}{'x floor':>9}")
    for r in results:
        med = statistics.median(r.cpu_s)
        print(
            f"{r.case.name:<38}{med:>13.2f}{min(r.cpu_s):>11.2f}"
            f"{statistics.median(r.wall_s):>12.2f}{med / floor:>9.2f}"
        )
    print()
    print(bytecode_state())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; {args.runs} runs per case")
    failed = 0
    for r in results:
        if r.case.target_s is None:
            continue
        med = statistics.median(r.cpu_s)
        ok = med < r.case.target_s
        failed += not ok
        print(
            f"{'PASS' if ok else 'FAIL'}: {r.case.name} {med:.2f} s CPU "
            f"(target < {r.case.target_s:.0f} s; {med / floor:.2f}x import pandas)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
