"""The Redis Streams consumer: every event counts once, across crashes and restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pandas as pd
import pytest

from features.online import OnlineConfig, open_store
from features.online.ingest import ingest_many, json_columns
from serving.stream import StreamConsumer, StreamSource, publish
from tests.online.conftest import REDIS_URL, redis_or_skip

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_client():
    redis_or_skip()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def _messages(sim_tables, n_items: int, per_message: int):
    """Items then their first-20-hour events, cut into (table, body) messages."""
    items = sim_tables["items"].head(n_items)
    end = items["created_at"].min() + pd.Timedelta(hours=20)
    ev = sim_tables["events"]
    events = ev[ev["item_id"].isin(set(items["item_id"])) & (ev["ts"] < end)].sort_values("ts")
    messages = [("items", {"columns": json_columns(items)})]
    for lo in range(0, len(events), per_message):
        messages.append(("events", {"columns": json_columns(events.iloc[lo : lo + per_message])}))
    return items, events, messages


def _setup(sim_tables, redis_client, n_items: int, per_message: int):
    """A fresh stream (its own name and key prefix) holding every message."""
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"w17test:{tag}:stream", f"w17test:{tag}:"
    items, events, messages = _messages(sim_tables, n_items, per_message)
    for table, body in messages:
        publish(redis_client, stream, table, body)
    return stream, prefix, items, events


def _wait_for(condition, timeout_s: float, what: str, log=None) -> None:
    """Poll `condition` until true; fail naming `what` (and the consumer's log) at the
    deadline. Deadlines bound a hang; they are not latency targets."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}" + _tail(log))
        time.sleep(0.02)


def _tail(log) -> str:
    if log is None or not log.exists():
        return ""
    return "\n--- consumer stderr ---\n" + log.read_text(errors="replace")[-3000:]


def _group(redis_client, stream: str, group: str) -> dict:
    """The consumer group's XINFO GROUPS entry ({} before it exists)."""
    import redis

    try:
        groups = redis_client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream yet
        return {}
    for g in groups:
        if g["name"].decode() == group:
            return g
    return {}


def _expected_views(events: pd.DataFrame) -> dict[str, int]:
    return events[events["kind"] == "view"].groupby("item_id").size().to_dict()


def _counts(store, items: pd.DataFrame) -> dict[str, int]:
    snaps = store.snapshots(items["item_id"].tolist())
    return {s["item_id"]: s["n_view"] for s in snaps if s is not None and s["n_view"]}


def _cleanup(redis_client, stream: str, prefix: str) -> None:
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)
    redis_client.delete(stream, f"{stream}:dead")


def test_crash_between_apply_and_ack_counts_once(sim_tables, redis_client) -> None:
    stream, prefix, items, events = _setup(sim_tables, redis_client, 20, 50)
    store = open_store(REDIS_URL, OnlineConfig(), prefix=prefix)
    source = StreamSource.parse(f"{REDIS_URL}?stream={stream}&group=g&consumer=c1")
    try:
        crashed = []

        def apply_then_crash(messages):
            results = ingest_many(store, messages)
            if len(crashed) < 3 and any(b[0].table == "events" for b, _ in messages):
                crashed.append(messages[0][1])
                raise KeyboardInterrupt  # dies after applying, before XACK
            return results

        # small reads, so that the crashes leave part of the stream not yet read
        first = StreamConsumer(source, apply_then_crash, count=4)
        for _ in range(3):
            with pytest.raises(KeyboardInterrupt):
                first.run()
        first.close()
        assert len(crashed) == 3
        pending = redis_client.xpending(stream, "g")["pending"]
        assert pending >= 1  # applied but not acknowledged
        again = StreamConsumer(source, lambda m: ingest_many(store, m))
        stats = again.run(until_idle=True)
        again.close()
        assert stats.duplicates >= 1  # the crashed message came back and was not re-applied
        assert redis_client.xpending(stream, "g")["pending"] == 0
        assert _counts(store, items) == _expected_views(events)
    finally:
        store.close()
        _cleanup(redis_client, stream, prefix)


def test_consumer_killed_mid_stream_and_restarted(sim_tables, redis_client, tmp_path) -> None:
    """`surfacer ingest` SIGKILLed after it applied part of the stream (messages read and not
    acknowledged stay in its pending list), restarted under the same name, then stopped with
    SIGTERM: every event counted exactly once and nothing left pending.

    The stream is published in two parts and the kill falls between them, so "mid-stream" does
    not depend on how fast either process runs; every wait is on a real condition (counts in
    the store, the group's pending count and lag) with a deadline that only bounds a hang."""
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"w17test:{tag}:stream", f"w17test:{tag}:"
    items, events, messages = _messages(sim_tables, 60, 20)
    half = len(messages) // 2
    for table, body in messages[:half]:
        publish(redis_client, stream, table, body)
    store = open_store(REDIS_URL, OnlineConfig(), prefix=prefix)
    url = f"{REDIS_URL}?stream={stream}&group=g&consumer=worker-1"
    env = {
        **os.environ,
        "SURFACER_ONLINE_STORE": REDIS_URL,
        "SURFACER_ONLINE_PREFIX": prefix,
        "SURFACER_DATA_DIR": str(tmp_path),
    }
    cmd = [sys.executable, "-m", "surfacer", "ingest", "--from", url]
    expected = _expected_views(events)
    total = sum(expected.values())
    procs: list[subprocess.Popen] = []

    def start(n: int):
        # stderr to a file, never an unread pipe (a full pipe blocks the child)
        log = tmp_path / f"ingest-{n}.log"
        with log.open("wb") as out:
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
        return procs[-1], log

    def seen() -> int:
        return sum(_counts(store, items).values())

    try:
        proc, log = start(1)
        _wait_for(lambda: seen() > 0 or proc.poll() is not None, 120, "a first apply", log)
        assert proc.poll() is None, "the consumer exited on its own" + _tail(log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        killed_at = seen()
        assert 0 < killed_at < total
        for table, body in messages[half:]:
            publish(redis_client, stream, table, body)

        proc, log = start(2)

        def drained() -> bool:
            g = _group(redis_client, stream, "g")
            return (bool(g) and g["pending"] == 0 and g["lag"] == 0) or proc.poll() is not None

        _wait_for(drained, 180, "every message read and acknowledged", log)
        assert proc.poll() is None, "the consumer exited on its own" + _tail(log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, _tail(log)
        # the consumer is gone and nothing is pending: these counts are final
        assert _counts(store, items) == expected, _tail(log)
        assert redis_client.xpending(stream, "g")["pending"] == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        store.close()
        _cleanup(redis_client, stream, prefix)


def test_bad_message_is_dead_lettered(redis_client) -> None:
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"w17test:{tag}:stream", f"w17test:{tag}:"
    store = open_store(REDIS_URL, OnlineConfig(), prefix=prefix)
    try:
        publish(redis_client, stream, "events", {"rows": [{"item_id": "a", "kind": "viewz"}]})
        redis_client.xadd(stream, {"table": "events", "body": b"{nope"})
        source = StreamSource.parse(f"{REDIS_URL}?stream={stream}&group=g")
        consumer = StreamConsumer(source, lambda m: ingest_many(store, m))
        stats = consumer.run(threading.Event(), until_idle=True)
        consumer.close()
        assert stats.rejected == 2 and stats.rows == 0
        dead = redis_client.xrange(f"{stream}:dead")
        assert len(dead) == 2 and b"viewz" in dead[0][1][b"error"]
    finally:
        store.close()
        _cleanup(redis_client, stream, prefix)


def test_future_event_time_is_dead_lettered_with_the_reason(sim_tables, redis_client) -> None:
    """A message with a row dated beyond the skew bound goes to the dead-letter stream with
    the reason (table, column, row); the others apply and the store clock stays real."""
    stream, prefix, items, events = _setup(sim_tables, redis_client, 5, 50)
    store = open_store(REDIS_URL, OnlineConfig(max_future_s=60), prefix=prefix)
    bad = json_columns(events.head(3))
    bad["ts"][1] = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=10)).isoformat()
    publish(redis_client, stream, "events", {"columns": bad})
    try:
        source = StreamSource.parse(f"{REDIS_URL}?stream={stream}&group=g")
        consumer = StreamConsumer(source, lambda m: ingest_many(store, m))
        stats = consumer.run(threading.Event(), until_idle=True)
        consumer.close()
        assert stats.rejected == 1
        (dead,) = redis_client.xrange(f"{stream}:dead")
        error = dead[1][b"error"].decode()
        assert "events.ts" in error and "ahead of the service clock" in error
        assert "(1 row: 1)" in error
        assert _counts(store, items) == _expected_views(events)
        assert store.clock_ns() == max(events["ts"].max(), items["created_at"].max()).value
    finally:
        store.close()
        _cleanup(redis_client, stream, prefix)


def test_ingest_rescore_queues_flags_to_the_spool(
    champion_v1, sim_tables, redis_client, tmp_path
) -> None:
    """`surfacer ingest --drain --rescore`: the ingest process re-scores the items it
    touched and spools their new flags (the segment the service's flag writer drains), once
    per (item, issue), so that serve workers can run with SURFACER_ONLINE_RESCORE=false."""
    import orjson

    from serving.spool import list_segments, read_frames

    stream, prefix, _items, _events = _setup(sim_tables, redis_client, 40, 500)
    url = f"{REDIS_URL}?stream={stream}&group=g&consumer=rescorer"
    env = {
        **os.environ,
        **champion_v1.serve_env(tmp_path / "state"),
        "SURFACER_ONLINE_STORE": REDIS_URL,
        "SURFACER_ONLINE_PREFIX": prefix,
        "SURFACER_ONLINE_RESCORE_S": "0",
    }
    cmd = [sys.executable, "-m", "surfacer", "ingest", "--from", url, "--drain", "--rescore"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "re-scoring queued" in done.stdout, done.stdout
        queued = int(done.stdout.split("re-scoring queued ")[1].split()[0])
        assert queued > 0, "the test model flags some of 40 items"
        entries = []
        for seg in list_segments(tmp_path / "state" / "spool"):
            frames, _ = read_frames(seg.path, 0, max_items=10_000)
            entries += [orjson.loads(f.body) for f in frames if f.meta.get("k") == "item"]
        assert len(entries) == queued
        pairs = [(e["item_id"], issue) for e in entries for issue in e["flagged"]]
        assert pairs and len(pairs) == len(set(pairs))
    finally:
        _cleanup(redis_client, stream, prefix)


def test_ingest_lowers_its_own_priority() -> None:
    """`surfacer ingest --nice N` (default 10) makes the consumer N steps nicer than it
    was started, so serve workers sharing its cores run first; 0 leaves it; a negative N
    (raising priority) is refused. In a child process: niceness cannot be undone (and it
    stops at 19: a test run already niced past 16 gets 19)."""
    code = (
        "import os\n"
        "from serving.online_cli import lower_priority\n"
        "start = os.nice(0)\n"
        "assert lower_priority(0) == start\n"
        "assert lower_priority(3) == min(start + 3, 19) == os.nice(0)\n"
        "try:\n"
        "    lower_priority(-1)\n"
        "except ValueError as exc:\n"
        "    assert '0..19' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('a negative nice was accepted')\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_ingest_idle_class_is_inherited_by_the_rescorer(tmp_path) -> None:
    """`surfacer ingest --idle` puts the consumer in the idle scheduling class, and a
    process it then starts the way the re-scorer is started (multiprocessing, spawn)
    runs in that class too, as do its threads: otherwise the re-scorer, most of the
    ingester's CPU, would still compete with serve workers at normal priority."""
    code = (
        "import multiprocessing, os, threading\n"
        "from serving.online_cli import lower_priority\n"
        "def policy(q):\n"
        "    q.put(os.sched_getscheduler(0))\n"
        "if __name__ == '__main__':\n"
        "    assert os.sched_getscheduler(0) == os.SCHED_OTHER\n"
        "    lower_priority(10, idle=True)\n"
        "    assert os.sched_getscheduler(0) == os.SCHED_IDLE\n"
        "    seen = []\n"
        "    t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))\n"
        "    t.start(); t.join()\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    q = ctx.Queue()\n"
        "    p = ctx.Process(target=policy, args=(q,)); p.start()\n"
        "    child = q.get(timeout=60); p.join(60)\n"
        "    print(seen[0] == os.SCHED_IDLE, child == os.SCHED_IDLE)\n"
    )
    script = tmp_path / "idle_check.py"  # a file, so that spawn can import its __main__
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 and done.stdout.split() == ["True", "True"], (
        done.stdout + done.stderr
    )
