"""Faults against a real `surfacer serve`: whatever happens, every flag the API accepted is
stored in the review store or dead-lettered with its reason; none is lost.

Each test runs the server on loopback with its own state folder (and, where PostgreSQL is
needed, its own database, reached through a TCP proxy the test can cut). Timing targets
(how fast readiness turns, how fast the spool drains) are measured by bench/faults.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from serving.flag_writer import flagged_item, to_json, writer_status
from serving.spool import SpoolWriter
from tests.support.faults import (
    Load,
    TcpProxy,
    busy_cores,
    kill,
    many_connections,
    readyz,
    tally,
    wait_all_stored,
    wait_for,
    writer_pid,
)
from tests.support.postgres import PG_HOST, PG_PORT, temp_database, url
from tests.support.serving import (
    ADMIN_KEY,
    SCORE_KEY,
    Registry,
    free_port,
    records,
    serve_process,
)

pytestmark = pytest.mark.slow


def env_for(registry: Registry, state: Path, database_url: str | None = None) -> dict[str, str]:
    env = registry.serve_env(state)
    env["SURFACER_REVIEW_RANDOM_SHARE"] = "0"  # accepted == flagged
    if database_url is not None:
        env["SURFACER_DATABASE_URL"] = database_url
    return env


def sqlite_url(state: Path) -> str:
    return f"sqlite:///{(state / 'review.db').resolve()}"


def test_writer_killed_under_load_loses_nothing(champion: Registry, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool = state / "spool"
    with serve_process(env_for(champion, state), tmp_path) as server:
        load = Load(server.base_url, "kill9").start()
        try:
            first, _ = wait_for(lambda: writer_pid(spool), 30)
            assert first is not None
            time.sleep(1.5)
            kill(first)
            second, _ = wait_for(
                lambda: (pid := writer_pid(spool)) not in (None, first) and pid, 30
            )
            time.sleep(1.5)
        finally:
            load.stop()
        assert second, "the flag writer was not restarted"
        t, _ = wait_all_stored(load.accepted, sqlite_url(state), spool, "kill9", 60)
        status = writer_status(spool)
        assert status is not None and status["totals"]["restarts"] >= 1
        metrics = httpx.get(
            f"{server.base_url}/metrics", headers={"X-API-Key": ADMIN_KEY}, timeout=10
        ).text
        assert "surfacer_flag_writer_restarts_total 1.0" in metrics
        assert "surfacer_flags_lost_total 0.0" in metrics
    assert load.accepted and t.lost == 0, t
    assert t.stored == t.accepted and t.dead_lettered == 0


def test_poison_is_refused_at_the_door_or_dead_lettered(champion: Registry, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool = state / "spool"
    with temp_database("surfacer_faults_poison") as name:
        db = url(name)
        with serve_process(env_for(champion, state, db), tmp_path) as server:
            recs = records(200, random_state=41)
            for i, rec in enumerate(recs):
                rec["item_id"] = f"poison-{i}"
            headers = {"X-API-Key": SCORE_KEY}
            for bad in ("x" * 300, "nul\x00id"):
                body = {"items": [*recs[:100], {**recs[100], "item_id": bad}]}
                r = httpx.post(f"{server.base_url}/v1/score", json=body, headers=headers)
                assert r.status_code == 422, r.text  # nothing of the batch is accepted
            r = httpx.post(
                f"{server.base_url}/v1/score", json={"items": recs}, headers=headers, timeout=60
            )
            assert r.status_code == 200
            accepted = {
                (it["item_id"], it["model_version"]) for it in r.json()["items"] if it["flagged"]
            }
            # Poison past the door (a spool an older worker wrote): PostgreSQL refuses these
            # two; the good items around them are stored.
            injected = SpoolWriter(spool).start()
            at = records(1)[0]
            for item_id in ("poison-long-" + "y" * 300, "poison-nul-\x00"):
                rec = {**at, "item_id": item_id}
                injected.append_item(
                    to_json(
                        flagged_item(
                            rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", datetime.now(UTC)
                        )
                    )
                )
                accepted.add((item_id, "1"))
            injected.close()
            t, _waited = wait_all_stored(accepted, db, spool, "poison-", 60)
        assert t.lost == 0, t
        assert t.dead_lettered == 2 and t.stored == t.accepted - 2
        _, dead = tally(accepted, db, spool, "poison-")
        assert all("value too long" in d["error"] or "NUL" in d["error"] for d in dead), dead


def test_database_outage_spools_and_recovers(champion: Registry, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool = state / "spool"
    with temp_database("surfacer_faults_outage") as name:
        proxy = TcpProxy((PG_HOST, PG_PORT)).start()
        db_via_proxy = url(name, "127.0.0.1", proxy.port)
        try:
            with serve_process(env_for(champion, state, db_via_proxy), tmp_path) as server:
                load = Load(server.base_url, "outage").start()
                try:
                    time.sleep(1.5)
                    writer, _ = wait_for(lambda: writer_pid(spool), 30)
                    proxy.cut()
                    degraded, _ = wait_for(
                        lambda: readyz(server.base_url)[1].get("status") == "degraded", 30, 0.25
                    )
                    assert degraded, readyz(server.base_url)
                    code, body = readyz(server.base_url)
                    assert code == 200 and body["flags"]["sink_up"] is False
                    review = httpx.get(
                        f"{server.base_url}/v1/review/stats",
                        headers={"X-API-Key": "test-review-key"},
                        timeout=30,
                    )
                    assert review.status_code == 503
                    time.sleep(5)
                    during = len(load.accepted)
                    proxy.restore()
                    ready, _ = wait_for(
                        lambda: readyz(server.base_url)[1].get("status") == "ready", 60, 0.25
                    )
                    time.sleep(1)
                finally:
                    load.stop()
                assert ready, readyz(server.base_url)
                t, _ = wait_all_stored(load.accepted, url(name), spool, "outage", 60)
                # The writer waited the outage out; it did not die of it.
                status = writer_status(spool) or {}
                assert (writer_pid(spool), status["totals"]["restarts"]) == (writer, 0), status
        finally:
            proxy.close()
    assert during > 0 and t.lost == 0, t
    assert t.stored == t.accepted
    assert load.statuses.get(200, 0) > 0 and set(load.statuses) <= {200, 503}


def test_sigterm_mid_load_loses_nothing(champion: Registry, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool = state / "spool"
    env = env_for(champion, state)
    with serve_process(env, tmp_path) as server:
        load = Load(server.base_url, "term").start()
        time.sleep(2)
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=120)
        load.stop()
    assert code in (0, -signal.SIGTERM)
    assert load.accepted
    # What the shutdown did not store waits in the spool; the next start stores it.
    with serve_process(env, tmp_path):
        t, _ = wait_all_stored(load.accepted, sqlite_url(state), spool, "term", 60)
    assert t.lost == 0 and t.stored == t.accepted, t


def test_hot_reload_under_load_loses_nothing(champion: Registry, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool = state / "spool"
    v1, v2 = champion.versions
    with serve_process(env_for(champion, state), tmp_path) as server:
        load = Load(server.base_url, "reload").start()
        try:
            with httpx.Client(base_url=server.base_url, headers={"X-API-Key": ADMIN_KEY}) as admin:
                for target in (v2, v1, v2):
                    time.sleep(1)
                    champion.set_champion(target)
                    r = admin.post("/v1/admin/reload", timeout=120)
                    assert r.status_code == 200 and r.json()["version"] == target, r.text
            time.sleep(1)
        finally:
            load.stop()
        t, _ = wait_all_stored(load.accepted, sqlite_url(state), spool, "reload", 60)
    assert set(load.statuses) == {200}, load.statuses
    assert not load.errors, load.errors[:3]
    assert load.versions.get(v1) and load.versions.get(v2)
    assert t.lost == 0 and t.stored == t.accepted, t


def test_overload_is_shed_at_once_with_retry_after(champion: Registry, tmp_path: Path) -> None:
    env = env_for(champion, tmp_path / "state")
    env["SURFACER_MAX_CONCURRENCY"] = "16"
    with serve_process(env, tmp_path, "--workers", "2") as server:
        result = many_connections(server.base_url, connections=256, duration_s=8)
    assert result["failures"] == 0, result
    assert set(result["statuses"]) <= {200, 503}, result
    assert result["statuses"].get(200, 0) > 0 and result["statuses"].get(503, 0) > 0, result
    assert result["retry_after"] == ["1"]


def test_two_workers_start_while_every_core_is_busy(champion: Registry, tmp_path: Path) -> None:
    with busy_cores() as pids:
        assert pids
        t0 = time.monotonic()
        with serve_process(
            env_for(champion, tmp_path / "state"), tmp_path, "--workers", "2", timeout_s=600
        ) as server:
            took = time.monotonic() - t0
            log = server.log()
    assert "did not answer the health check" not in log, log[-3000:]
    assert "health-check timeout" in log
    print(f"\n2-worker server ready in {took:.1f}s with {len(pids)} busy cores")


def test_a_worker_that_cannot_start_says_why(champion: Registry, tmp_path: Path) -> None:
    env = env_for(champion, tmp_path / "state")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    env["SURFACER_SPOOL_DIR"] = str(blocker)
    port = free_port()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "surfacer"),
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "cannot open a flag spool segment" in log, log[-3000:]
    assert "failed to start" in log, log[-3000:]
    assert "Child process died" not in log
