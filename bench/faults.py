"""Benchmark: a real `surfacer serve` under faults; one row per fault, and the timing targets.

Each fault runs against its own server on loopback (a small real model in a temporary MLflow
store; the review store in SQLite, or in a PostgreSQL database this script creates and
drops, reached through a TCP proxy it can cut). Every row counts the flagged items the API
accepted, how many reached the review store, how many were dead-lettered, and how many were
lost (target: 0 in every row). Then:

- kill -9 of the flag writer under load: writer restarted, nothing lost;
- a poison item inside a flagged batch: refused at the door (422); past the door (injected
  into the spool), dead-lettered with its error, the rest stored;
- the review database unreachable for --outage-s seconds, then back: /readyz degraded within
  5 s, the spooled flags stored within 10 s of the database returning;
- SIGTERM mid-load: what the shutdown did not store is stored by the next start;
- hot reload (champion moved, /v1/admin/reload) under load: no failed request;
- 256 concurrent connections: no request waits over 2 s (shed ones get 503 + Retry-After);
- the 2-worker server ready within 60 s while every core runs a busy loop.

    uv run python bench/faults.py [--outage-s 30] [--load-s 6] [--connections 256]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path, where bench/features.py would shadow
# the features package: look up the project's packages from the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)

# Targets (from the issue): checked here, never in unit tests.
DEGRADED_WITHIN_S = 5.0
STORED_WITHIN_S = 10.0
MAX_WAIT_S = 2.0
READY_WITHIN_S = 60.0


def _env(registry: Any, state: Path, db: str | None = None) -> dict[str, str]:
    env = registry.serve_env(state)
    env["SURFACER_REVIEW_RANDOM_SHARE"] = "0"
    if db is not None:
        env["SURFACER_DATABASE_URL"] = db
    return env


def _sqlite(state: Path) -> str:
    return f"sqlite:///{(state / 'review.db').resolve()}"


def kill_writer(registry: Any, work: Path, load_s: float) -> dict[str, Any]:
    from tests.support.faults import Load, kill, wait_all_stored, wait_for, writer_pid
    from tests.support.serving import serve_process

    state = work / "kill9"
    spool = state / "spool"
    with serve_process(_env(registry, state), work) as server:
        load = Load(server.base_url, "kill9").start()
        try:
            first, _ = wait_for(lambda: writer_pid(spool), 30)
            time.sleep(load_s / 2)
            kill(first)
            _, restart_s = wait_for(
                lambda: (pid := writer_pid(spool)) not in (None, first) and pid, 60, 0.05
            )
            time.sleep(load_s / 2)
        finally:
            load.stop()
        t, _ = wait_all_stored(load.accepted, _sqlite(state), spool, "kill9", 120)
    return {"tally": t, "note": f"writer back {restart_s:.1f}s after kill -9"}


def poison(registry: Any, work: Path) -> dict[str, Any]:
    import httpx

    from serving.flag_writer import flagged_item, to_json
    from serving.spool import SpoolWriter
    from tests.support.faults import wait_all_stored
    from tests.support.postgres import temp_database, url
    from tests.support.serving import SCORE_KEY, records, serve_process

    state = work / "poison"
    spool = state / "spool"
    with temp_database("surfacer_bench_poison") as name:
        db = url(name)
        with serve_process(_env(registry, state, db), work) as server:
            recs = records(300, random_state=41)
            for i, rec in enumerate(recs):
                rec["item_id"] = f"poison-{i}"
            refused = 0
            for bad in ("x" * 300, "nul\x00id"):
                body = {"items": [*recs[:150], {**recs[150], "item_id": bad}]}
                r = httpx.post(
                    f"{server.base_url}/v1/score", json=body, headers={"X-API-Key": SCORE_KEY}
                )
                refused += r.status_code == 422
            r = httpx.post(
                f"{server.base_url}/v1/score",
                json={"items": recs},
                headers={"X-API-Key": SCORE_KEY},
                timeout=60,
            )
            accepted = {
                (it["item_id"], it["model_version"]) for it in r.json()["items"] if it["flagged"]
            }
            injected = SpoolWriter(spool).start()
            for item_id in ("poison-long-" + "y" * 300, "poison-nul-\x00"):
                rec = {**recs[0], "item_id": item_id}
                item = flagged_item(
                    rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", datetime.now(UTC)
                )
                injected.append_item(to_json(item))
                accepted.add((item_id, "1"))
            injected.close()
            t, _ = wait_all_stored(accepted, db, spool, "poison-", 120)
    return {"tally": t, "note": f"{refused}/2 poisoned batches 422 at the door; 2 injected"}


def outage(registry: Any, work: Path, outage_s: float, load_s: float) -> dict[str, Any]:
    from tests.support.faults import Load, TcpProxy, readyz, wait_all_stored, wait_for
    from tests.support.postgres import PG_HOST, PG_PORT, temp_database, url
    from tests.support.serving import serve_process

    state = work / "outage"
    spool = state / "spool"
    with temp_database("surfacer_bench_outage") as name:
        proxy = TcpProxy((PG_HOST, PG_PORT)).start()
        try:
            env = _env(registry, state, url(name, "127.0.0.1", proxy.port))
            with serve_process(env, work) as server:
                load = Load(server.base_url, "outage").start()
                try:
                    time.sleep(load_s / 2)
                    proxy.cut()
                    cut_at = time.monotonic()
                    _, degraded_s = wait_for(
                        lambda: readyz(server.base_url)[1].get("status") == "degraded", 60, 0.1
                    )
                    time.sleep(max(0.0, outage_s - (time.monotonic() - cut_at)))
                finally:
                    load.stop()
                spooled = len(load.accepted)
                proxy.restore()
                t, stored_s = wait_all_stored(load.accepted, url(name), spool, "outage", 120)
                _, ready_s = wait_for(
                    lambda: readyz(server.base_url)[1].get("status") == "ready", 60, 0.1
                )
        finally:
            proxy.close()
    return {
        "tally": t,
        "note": f"{spooled} accepted; /readyz degraded after {degraded_s:.1f}s; stored "
        f"{stored_s:.1f}s after the database came back; ready again after {ready_s:.1f}s",
        "degraded_s": degraded_s,
        "stored_s": stored_s,
    }


def sigterm(registry: Any, work: Path, load_s: float) -> dict[str, Any]:
    from tests.support.faults import Load, tally, wait_all_stored
    from tests.support.serving import serve_process

    state = work / "term"
    spool = state / "spool"
    env = _env(registry, state)
    with serve_process(env, work) as server:
        load = Load(server.base_url, "term").start()
        time.sleep(load_s)
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=120)
        load.stop()
    at_stop, _ = tally(load.accepted, _sqlite(state), spool, "term")
    with serve_process(env, work):
        t, _ = wait_all_stored(load.accepted, _sqlite(state), spool, "term", 120)
    return {"tally": t, "note": f"{at_stop.stored} stored by the shutdown, the rest at restart"}


def reload(registry: Any, work: Path, load_s: float) -> dict[str, Any]:
    import httpx

    from tests.support.faults import Load, wait_all_stored
    from tests.support.serving import ADMIN_KEY, serve_process

    state = work / "reload"
    spool = state / "spool"
    v1, v2 = registry.versions
    with serve_process(_env(registry, state), work) as server:
        load = Load(server.base_url, "reload").start()
        try:
            for target in (v2, v1, v2):
                time.sleep(load_s / 3)
                registry.set_champion(target)
                httpx.post(
                    f"{server.base_url}/v1/admin/reload",
                    headers={"X-API-Key": ADMIN_KEY},
                    timeout=120,
                )
        finally:
            load.stop()
            registry.set_champion(v1)
        t, _ = wait_all_stored(load.accepted, _sqlite(state), spool, "reload", 120)
    failed = sum(n for s, n in load.statuses.items() if s != 200) + len(load.errors)
    return {"tally": t, "note": f"{failed} failed requests across 3 reloads"}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--outage-s", type=float, default=30.0, help="How long the database is cut.")
    ap.add_argument("--load-s", type=float, default=6.0, help="Load around each fault.")
    ap.add_argument(
        "--connections", type=int, default=256, help="connections opened at once in the flood fault"
    )
    ap.add_argument(
        "--only",
        default="",
        help="Comma-separated fault names to run (kill, poison, outage, sigterm, reload, shed, "
        "busy); default all.",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="surfacer-faults-"))
    try:
        _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path) -> None:
    import mlflow

    from tests.support.faults import busy_cores, many_connections
    from tests.support.serving import build_registry, serve_process

    print("building a small model in a temporary MLflow store ...", file=sys.stderr)
    registry = build_registry(work / "mlflow")
    mlflow.set_tracking_uri(registry.tracking_uri)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    wanted = lambda key: not only or key in only  # noqa: E731
    rows: dict[str, dict[str, Any]] = {}
    for key, name, run in (
        ("kill", "kill -9 flag writer", lambda: kill_writer(registry, work, args.load_s)),
        ("poison", "poison in a batch", lambda: poison(registry, work)),
        (
            "outage",
            f"database cut {args.outage_s:.0f}s",
            lambda: outage(registry, work, args.outage_s, args.load_s),
        ),
        ("sigterm", "SIGTERM mid-load", lambda: sigterm(registry, work, args.load_s)),
        ("reload", "hot reload under load", lambda: reload(registry, work, args.load_s)),
    ):
        if wanted(key):
            print(f"{name} ...", file=sys.stderr)
            rows[name] = run()

    shed = ready_s = None
    if wanted("shed"):
        print(f"{args.connections} connections ...", file=sys.stderr)
        with serve_process(_env(registry, work / "shed"), work, "--workers", "2") as server:
            shed = many_connections(server.base_url, args.connections, duration_s=10)
    if wanted("busy"):
        print("start-up with every core busy ...", file=sys.stderr)
        with busy_cores() as pids:
            t0 = time.monotonic()
            with serve_process(
                _env(registry, work / "busy"), work, "--workers", "2", timeout_s=600
            ):
                ready_s = time.monotonic() - t0

    print()
    if rows:
        print(f"{'fault':<24}{'accepted':>10}{'stored':>9}{'dead':>7}{'lost':>6}  notes")
        for name, row in rows.items():
            t = row["tally"]
            print(
                f"{name:<24}{t.accepted:>10}{t.stored:>9}{t.dead_lettered:>7}{t.lost:>6}"
                f"  {row['note']}"
            )
        print()
        lost = sum(r["tally"].lost for r in rows.values())
        print(f"lost in all rows: {lost} ({'meets' if lost == 0 else 'misses'} the 0 target)")
    cut = next((r for n, r in rows.items() if n.startswith("database cut")), None)
    if cut is not None:
        print(
            f"/readyz degraded {cut['degraded_s']:.1f}s after the cut "
            f"({'meets' if cut['degraded_s'] <= DEGRADED_WITHIN_S else 'misses'} the "
            f"{DEGRADED_WITHIN_S:.0f} s target); spool stored {cut['stored_s']:.1f}s after the "
            f"database returned ({'meets' if cut['stored_s'] <= STORED_WITHIN_S else 'misses'} "
            f"the {STORED_WITHIN_S:.0f} s target)"
        )
    if shed is not None:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(shed["statuses"].items()))
        print(
            f"{args.connections} connections: longest wait {shed['max_s']:.2f}s, p99 "
            f"{shed['p99_s']:.2f}s ({'meets' if shed['max_s'] <= MAX_WAIT_S else 'misses'} the "
            f"{MAX_WAIT_S:.0f} s target); {statuses}; Retry-After {shed['retry_after']}; "
            f"{shed['failures']} connection failures"
        )
    if ready_s is not None:
        print(
            f"2-worker server ready in {ready_s:.1f}s with {len(pids)} busy loops "
            f"({'meets' if ready_s <= READY_WITHIN_S else 'misses'} the "
            f"{READY_WITHIN_S:.0f} s target)"
        )


if __name__ == "__main__":
    main()
