"""The flag spool and its writer: what a worker appends is stored, replayed after a crash,
isolated when poisonous, and never dropped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from serving.flag_writer import (
    FlagWriter,
    JsonlFlagSink,
    SinkUnavailable,
    expand_frame,
    flagged_item,
    to_json,
    writer_status,
)
from serving.review.ingest import StoreSink
from serving.review.store import ReviewStore
from serving.spool import (
    DEAD_LETTERS_FILE,
    OPEN_SUFFIX,
    SpoolError,
    SpoolWriter,
    list_segments,
    read_frames,
)
from tests.support.review import flagged_item as review_item
from tests.support.serving import records

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)


def batch_bytes(recs: list[dict[str, Any]], flagged_rows: Sequence[int]) -> tuple[bytes, bytes]:
    """The request and response bodies of a scored batch whose `flagged_rows` are flagged."""
    response = {
        "items": [
            {
                "item_id": r["item_id"],
                "probabilities": {"low_quality": 0.9 if i in flagged_rows else 0.1},
                "flagged": ["low_quality"] if i in flagged_rows else [],
                "reasons": {
                    "low_quality": [{"feature": "n_view", "value": 1.0, "contribution": 0.5}]
                }
                if i in flagged_rows
                else {},
                "model_version": "3",
            }
            for i, r in enumerate(recs)
        ],
        "model_version": "3",
    }
    return orjson.dumps({"items": recs}), orjson.dumps(response)


def drain(spool: Path, sink: Any, **kwargs: Any) -> FlagWriter:
    """Run a writer until it has stored everything there is, then stop it."""
    writer = FlagWriter(spool, lambda: sink, poll_interval_s=0.01, **kwargs)
    stop = threading.Event()
    stop.set()  # drain what is there, then return
    writer.run(stop, drain_timeout_s=10)
    return writer


class RecordingSink:
    """Keeps what it is given; refuses items whose id is in `refuse`; down while `down`."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.items: list[Any] = []
        self.refuse = set(refuse)
        self.down = False
        self.calls = 0

    def write(self, items: Sequence[Any]) -> None:
        self.calls += 1
        if self.down:
            raise SinkUnavailable("database unreachable")
        bad = [it.item_id for it in items if it.item_id in self.refuse]
        if bad:
            raise ValueError(f"value too long for item {bad[0]}")
        self.items += items

    def check(self) -> None:
        if self.down:
            raise SinkUnavailable("database unreachable")


def test_appended_items_and_batches_come_back_as_flagged_items(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path / "spool").start()
    recs = records(5)
    item = flagged_item(
        recs[0], {"low_quality": 0.9, "wrongful_enforcement": None}, ["low_quality"], {}, "3", AT
    )
    spool.append_item(to_json(item))
    request, response = batch_bytes(recs, flagged_rows=[1, 3])
    spool.append_batch(request, response, [1, 3, 4], AT.isoformat())
    seg = list_segments(tmp_path / "spool")
    assert len(seg) == 1 and not seg[0].sealed  # this worker is alive and appending
    frames, partial = read_frames(seg[0].path, 0, max_items=100)
    assert not partial and [f.n for f in frames] == [1, 3]
    one = expand_frame(frames[0])[0]
    assert one.item_id == recs[0]["item_id"] and one.flagged == ["low_quality"]
    assert one.scores == {"low_quality": 0.9}  # a None probability carries no score
    rows = expand_frame(frames[1])
    assert [r.item_id for r in rows] == [recs[i]["item_id"] for i in (1, 3, 4)]
    assert [r.sampled for r in rows] == [False, False, True]
    assert rows[0].reasons["low_quality"][0]["feature"] == "n_view"
    assert rows[0].scored_at == AT and isinstance(rows[0].as_of, datetime)
    spool.close()
    assert list_segments(tmp_path / "spool")[0].sealed


def test_the_writer_stores_everything_once_and_deletes_stored_segments(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpoolWriter(spool_dir).start()
    recs = records(40)
    for rec in recs[:10]:
        spool.append_item(
            to_json(flagged_item(rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", AT))
        )
    request, response = batch_bytes(recs[10:], flagged_rows=range(30))
    spool.append_batch(request, response, list(range(30)), AT.isoformat())
    spool.close()
    out = JsonlFlagSink(tmp_path / "flags.jsonl")
    writer = drain(spool_dir, out, batch_items=7)
    written = [w["item_id"] for w in JsonlFlagSink.read(out.path)]
    assert sorted(written) == sorted(r["item_id"] for r in recs)
    assert writer.totals["stored"] == 40 and writer.totals["dead_lettered"] == 0
    assert list_segments(spool_dir) == []  # sealed and stored: gone
    # A second writer finds nothing to replay.
    drain(spool_dir, out)
    assert len(JsonlFlagSink.read(out.path)) == 40
    status = writer_status(spool_dir)
    assert status is not None and status["totals"]["stored"] == 40 and status["stopped"]


def test_a_refused_item_is_dead_lettered_and_the_rest_stored(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpoolWriter(spool_dir).start()
    recs = records(64)
    request, response = batch_bytes(recs, flagged_rows=range(64))
    spool.append_batch(request, response, list(range(64)), AT.isoformat())
    spool.close()
    poison = {recs[5]["item_id"], recs[40]["item_id"]}
    sink = RecordingSink(refuse=poison)
    writer = drain(spool_dir, sink)
    assert {it.item_id for it in sink.items} == {r["item_id"] for r in recs} - poison
    dead = [orjson.loads(x) for x in (spool_dir / DEAD_LETTERS_FILE).read_bytes().splitlines()]
    assert {d["item_id"] for d in dead} == poison
    assert all("value too long" in d["error"] for d in dead)
    assert dead[0]["item"]["snapshot"]["item_id"] == dead[0]["item_id"]  # the whole item kept
    assert writer.totals["stored"] == 62 and writer.totals["dead_lettered"] == 2


def test_an_unavailable_sink_keeps_everything_spooled_until_it_is_back(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpoolWriter(spool_dir).start()
    sink = RecordingSink()
    sink.down = True
    writer = FlagWriter(spool_dir, lambda: sink, poll_interval_s=0.01, retry_max_s=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,))
    thread.start()
    try:
        recs = records(20)
        for rec in recs:
            spool.append_item(
                to_json(flagged_item(rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", AT))
            )
        deadline = time.monotonic() + 10
        while True:
            status = writer_status(spool_dir) or {}
            if status.get("sink_ok") is False and status.get("pending_items") == 20:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status["alive"] and "unreachable" in status["sink_error"]
        assert sink.items == []
        sink.down = False
        deadline = time.monotonic() + 10
        while len(sink.items) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while (writer_status(spool_dir) or {}).get("pending_items") != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert writer_status(spool_dir)["sink_ok"] is True
    finally:
        stop.set()
        thread.join(30)
        spool.close()
    assert sorted(it.item_id for it in sink.items) == sorted(r["item_id"] for r in recs)


def test_a_crashed_worker_segment_is_replayed_and_its_torn_tail_dropped(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    # A worker process appends three items, starts a fourth write and is killed mid-frame.
    script = f"""
import os
from datetime import UTC, datetime
from serving.flag_writer import flagged_item, to_json
from serving.spool import SpoolWriter
from tests.support.serving import records
spool = SpoolWriter({str(spool_dir)!r}).start()
for rec in records(3):
    spool.append_item(to_json(flagged_item(rec, {{"low_quality": 0.9}}, ["low_quality"], {{}}, "1", datetime.now(UTC))))
os.write(spool._fd, b"SFL1" + b"\\x05\\x00")  # half a header, then the process dies
os._exit(9)
"""
    subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    seg = list_segments(spool_dir)
    assert len(seg) == 1 and seg[0].path.suffix == OPEN_SUFFIX and seg[0].sealed
    out = RecordingSink()
    writer = drain(spool_dir, out)
    assert len(out.items) == 3
    assert writer.totals["torn"] == 1 and writer.totals["lost"] == 0
    assert list_segments(spool_dir) == []


def test_damaged_bytes_are_kept_as_a_dead_letter_and_counted_lost(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpoolWriter(spool_dir).start()
    recs = records(3)
    for rec in recs:
        spool.append_item(
            to_json(flagged_item(rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", AT))
        )
    path = spool.path
    assert path is not None
    spool.close()
    sealed = list_segments(spool_dir)[0].path
    data = bytearray(sealed.read_bytes())
    frames, _ = read_frames(sealed, 0, max_items=10)
    data[frames[1].start + 20] ^= 0xFF  # flip a byte inside the second frame
    sealed.write_bytes(bytes(data))
    out = RecordingSink()
    writer = drain(spool_dir, out)
    assert [it.item_id for it in out.items] == [recs[0]["item_id"], recs[2]["item_id"]]
    assert writer.totals["lost"] == 1
    dead = orjson.loads((spool_dir / DEAD_LETTERS_FILE).read_bytes().splitlines()[0])
    assert "checksum" in dead["error"] and bytes.fromhex(dead["raw"])


def test_a_full_spool_refuses_appends(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path / "spool", max_bytes=2048).start()
    rec = records(1)[0]
    blob = to_json(flagged_item(rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", AT))
    for _ in range(2048 // len(blob) + 1):
        spool.append_item(blob)
    spool.sync()  # re-measures the folder
    spool._checked_at = 0.0
    spool.sync()
    with pytest.raises(SpoolError, match="over its limit"):
        spool.append_item(blob)
    assert spool.problem and "over its limit" in spool.problem
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append_item(blob)


def test_one_writer_per_spool(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpoolWriter(spool_dir).start()
    first, second = RecordingSink(), RecordingSink()
    stop1, stop2 = threading.Event(), threading.Event()
    w1 = FlagWriter(spool_dir, lambda: first, poll_interval_s=0.01)
    t1 = threading.Thread(target=w1.run, args=(stop1,))
    t1.start()
    time.sleep(0.3)
    w2 = FlagWriter(spool_dir, lambda: second, poll_interval_s=0.01)
    t2 = threading.Thread(target=w2.run, args=(stop2,))
    t2.start()
    try:
        for rec in records(10):
            spool.append_item(
                to_json(flagged_item(rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", AT))
            )
        deadline = time.monotonic() + 10
        while len(first.items) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert second.items == [] and second.calls == 0
        # The first stops; the second takes over what comes next.
        stop1.set()
        t1.join(30)
        for rec in records(5, random_state=99):
            spool.append_item(
                to_json(flagged_item(rec, {"low_quality": 0.9}, ["low_quality"], {}, "1", AT))
            )
        deadline = time.monotonic() + 10
        while len(second.items) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop1.set()
        stop2.set()
        t1.join(30)
        t2.join(30)
        spool.close()
    assert len(first.items) == 10 and len(second.items) == 5


def test_numpy_values_and_nan_serialise_in_a_flagged_item() -> None:
    rec = {"item_id": "a", "n_view": np.float64("nan"), "n_like": np.int64(3), "as_of": AT}
    item = flagged_item(rec, {"low_quality": np.float64(0.8)}, ["low_quality"], {}, "1", AT)
    data = orjson.loads(to_json(item))
    assert data["snapshot"] == {
        "item_id": "a",
        "n_view": None,
        "n_like": 3,
        "as_of": "2026-11-01T12:00:00+00:00",
    }
    assert data["scores"] == {"low_quality": 0.8}


def test_replaying_into_the_review_store_changes_nothing(tmp_path: Path) -> None:
    # The writer may store a batch and die before it records its progress: the replay
    # must not add rows or history.
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.migrate()
    sink = StoreSink(store, 1.0)
    items = [review_item(i) for i in range(5)]
    sink.write(items)
    sink.write(items)
    assert store.list_items().total == 5
    assert [h.event for h in store.history(1)] == ["ingested"]
    store.close()


def test_the_writer_process_exits_when_its_server_is_gone(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    # A stand-in server starts the writer as its child, then is killed.
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "w = subprocess.Popen([sys.executable, '-m', 'serving.flag_writer', '--spool', "
            f"{str(spool_dir)!r}, '--jsonl', {str(tmp_path / 'f.jsonl')!r}, "
            "'--parent', str(os.getpid())])\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "SURFACER_DATA_DIR": str(tmp_path / "state")},
    )
    assert server.stdout is not None
    writer_pid = int(server.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while not (writer_status(spool_dir) or {}).get("alive"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.kill()
        server.wait()
        deadline = time.monotonic() + 30
        while (writer_status(spool_dir) or {}).get("alive"):
            assert time.monotonic() < deadline, "the orphaned writer kept running"
            time.sleep(0.1)
        assert writer_status(spool_dir)["stopped"]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer_pid, 9)
