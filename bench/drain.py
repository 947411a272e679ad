"""Benchmark: how fast the flag writer drains a spool backlog into the review store.

A spool like the one a database outage leaves behind (request frames of 20 items and
single-item frames from two workers, as `bench/faults.py`'s load sends them; every item
flagged) is built once, then drained by a `FlagWriter` into a fresh review store per ingest
method, side by side in this process: PostgreSQL (a database this script creates and drops)
with executemany, COPY one batch at a time (copy-serial) and COPY two segments at once (copy,
the default), and SQLite (executemany). Prints items/s, and the CPU seconds of the writer
(this process) and of the PostgreSQL backends it used, read from /proc: on a shared machine
wall time follows the load, items per CPU-second much less. --profile prints where the
writer's time went (cProfile).

    uv run python bench/drain.py [--items 20000] [--backends postgresql,sqlite] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path, where bench/features.py would shadow
# the features package: look up the project's packages from the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)

BATCH = 20  # items per request frame, as bench/faults.py's load sends them
PROFILE_SORT = "tottime"


def build_spool(folder: Path, n_items: int) -> int:
    """A spool holding `n_items` flagged items: request frames of BATCH items alternating with
    single-item frames, as a scoring worker appends them. Returns the item count."""
    import orjson

    from serving.flag_writer import flagged_item, to_json
    from serving.spool import SpoolWriter
    from tests.support.serving import records

    pool = records(200, random_state=17)
    issues = ("low_quality", "harmful_interactions")
    # Two appenders, as two scoring workers: two segments at a time.
    spools = [SpoolWriter(folder, fsync_interval_s=1.0, max_bytes=1 << 40).start() for _ in "ab"]
    written = k = 0
    at = datetime.now(UTC)
    while written < n_items:
        k += 1
        size = min(BATCH if k % 2 else 1, n_items - written)
        recs = []
        for j in range(size):
            rec = dict(pool[(k * 31 + j) % len(pool)])
            rec["item_id"] = f"drain-{k}-{j}"
            recs.append(rec)
        results = []
        for rec in recs:
            flagged = [issues[(k + len(results)) % 2]]
            probs = {
                "low_quality": 0.91,
                "harmful_interactions": 0.12,
                "wrongful_enforcement": None,
            }
            reasons = {
                flagged[0]: [
                    {"feature": "n_report", "value": rec.get("n_report"), "contribution": 0.7},
                    {"feature": "n_view", "value": rec.get("n_view"), "contribution": 0.2},
                ]
            }
            results.append((rec, probs, flagged, reasons))
        spool = spools[k // 2 % 2]
        if size == 1:
            rec, probs, flagged, reasons = results[0]
            spool.append_item(to_json(flagged_item(rec, probs, flagged, reasons, "1", at)))
        else:
            request = orjson.dumps({"items": recs})
            response = orjson.dumps(
                {
                    "items": [
                        {
                            "item_id": rec["item_id"],
                            "probabilities": probs,
                            "flagged": flagged,
                            "reasons": reasons,
                            "model_version": "1",
                        }
                        for rec, probs, flagged, reasons in results
                    ],
                    "model_version": "1",
                }
            )
            spool.append_batch(request, response, list(range(size)), at.isoformat())
        written += size
    for spool in spools:
        spool.close()
    return written


def _backend_cpu_s(conn: Any) -> float:
    """CPU seconds used so far by the PostgreSQL backends of this database (the writer's pooled
    connections), read from /proc: the server runs on this machine. 0 when unreadable."""
    from sqlalchemy import text

    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = conn.execute(
        text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    ).scalars()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        total += (int(fields[11]) + int(fields[12])) / hz  # utime, stime
    return total


def drain(spool_src: Path, work: Path, db_url: str, method: str, profile: bool) -> dict[str, Any]:
    """Drain a copy of the spool into an empty store at `db_url` with `method`; the timing."""
    from sqlalchemy import text

    from serving.flag_writer import FlagWriter
    from serving.review.ingest import StoreSink
    from serving.review.store import ReviewStore

    spool = work / f"spool-{method}"
    shutil.rmtree(spool, ignore_errors=True)
    shutil.copytree(spool_src, spool)
    store = ReviewStore(db_url)
    store.migrate()
    with store.engine.begin() as conn:
        for table in ("review_history", "review_flags", "review_items"):
            conn.execute(text(f"DELETE FROM {table}"))

    class KeepOpen(StoreSink):
        def close(self) -> None:  # closed below, after the backends' CPU time is read
            pass

    def sink() -> StoreSink:
        out = KeepOpen(store, 1.0, method=method.removesuffix("-serial"))
        if method.endswith("-serial"):
            out.parallel = 1
        return out

    writer = FlagWriter(spool, sink, poll_interval_s=0.01)
    stop = threading.Event()
    stop.set()  # drain what is there, then return
    prof = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    writer.run(stop, drain_timeout_s=3600)
    if prof is not None:
        prof.disable()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    with store.engine.connect() as conn:
        items = conn.execute(text("SELECT count(*) FROM review_items")).scalar_one()
        history = conn.execute(text("SELECT count(*) FROM review_history")).scalar_one()
        db_cpu = _backend_cpu_s(conn) if store.dialect == "postgresql" else 0.0
    store.close()
    out = {
        "stored": writer.totals["stored"],
        "rows": items,
        "history": history,
        "seconds": elapsed,
        "rate": writer.totals["stored"] / elapsed if elapsed else 0.0,
        "cpu": cpu,
        "db_cpu": db_cpu,
    }
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(PROFILE_SORT).print_stats(30)
        out["profile"] = buf.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=20_000, help="Flagged items in the spool.")
    ap.add_argument(
        "--backends", default="postgresql,sqlite", help="Comma-separated: postgresql, sqlite."
    )
    ap.add_argument(
        "--methods",
        default="executemany,copy-serial,copy",
        help="Comma-separated ingest methods: executemany, copy (PostgreSQL's, two batches at "
        "once), copy-serial (one at a time). SQLite runs executemany only.",
    )
    ap.add_argument("--profile", action="store_true", help="Print where each drain spent time.")
    args = ap.parse_args()
    if args.items < 1:
        sys.exit("error: --items must be >= 1")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(backends) - {"postgresql", "sqlite"}
    if unknown:
        sys.exit(f"error: unknown backend(s) {sorted(unknown)}; use postgresql, sqlite")
    from serving.flag_writer import tune_gc

    tune_gc()  # as the writer process does
    work = Path(tempfile.mkdtemp(prefix="surfacer-drain-"))
    try:
        _bench(args, backends, methods, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, backends: list[str], methods: list[str], work: Path) -> None:
    from tests.support.postgres import temp_database, url

    print(f"spooling {args.items} flagged items ...", file=sys.stderr)
    t0 = time.perf_counter()
    n = build_spool(work / "spool", args.items)
    print(f"  {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for backend in backends:
        for method in methods:
            if backend == "sqlite" and method != "executemany":
                continue
            print(f"draining into {backend} with {method} ...", file=sys.stderr)
            if backend == "postgresql":
                with temp_database("w14_drain") as name:
                    result = drain(work / "spool", work, url(name), method, args.profile)
            else:
                db = work / f"review-{method}.db"
                result = drain(work / "spool", work, f"sqlite:///{db}", method, args.profile)
            if args.profile:
                print(result.pop("profile"), file=sys.stderr)
            rows.append((backend, method, result))
    print()
    print(f"{n} flagged items spooled ({BATCH}-item request frames and single-item frames)")
    print(
        f"{'backend':<12}{'method':<13}{'stored':>8}{'seconds':>9}{'items/s':>9}"
        f"{'writer CPU s':>14}{'db CPU s':>10}{'items/CPU s':>13}"
    )
    for backend, method, r in rows:
        cpu = r["cpu"] + r["db_cpu"]
        print(
            f"{backend:<12}{method:<13}{r['stored']:>8}{r['seconds']:>9.2f}{r['rate']:>9.0f}"
            f"{r['cpu']:>14.2f}{r['db_cpu']:>10.2f}{r['stored'] / cpu if cpu else 0:>13.0f}"
        )
    bad = [(b, m) for b, m, r in rows if r["rows"] != n or r["history"] != n]
    if bad:
        print(f"error: not every item stored once with one history row: {bad}")
        sys.exit(1)


if __name__ == "__main__":
    main()
