"""The background flag writer: batching, retries, bounded queue, drain on close."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from common.settings import Settings
from serving.flag_writer import (
    FlaggedItem,
    FlagWriter,
    JsonlFlagSink,
    ProcessSink,
    ScoredBatch,
    flagged_item,
)
from serving.review.store import ReviewStore, store_sink
from serving.schemas import SnapshotAdapter


def item(i: int) -> FlaggedItem:
    return FlaggedItem(
        item_id=f"it_{i}",
        as_of=datetime(2026, 11, 1, tzinfo=UTC),
        anchor="post",
        snapshot={
            "item_id": f"it_{i}",
            "n_view": float(i),
            "as_of": datetime(2026, 11, 1, tzinfo=UTC),
        },
        scores={"low_quality": 0.9},
        flagged=["low_quality"],
        reasons={"low_quality": [{"feature": "n_report", "value": 3.0, "contribution": 0.4}]},
        model_version="7",
        reach=float(i),
    )


class SlowJsonl(JsonlFlagSink):
    """A real JSON-lines sink that takes its time and records each batch size."""

    def __init__(self, path: Path, delay_s: float) -> None:
        super().__init__(path)
        self.delay_s = delay_s
        self.batches: list[int] = []

    def write(self, items: Sequence[FlaggedItem]) -> None:
        time.sleep(self.delay_s)
        super().write(items)
        self.batches.append(len(items))


def test_close_drains_everything_in_batches(tmp_path: Path) -> None:
    sink = SlowJsonl(tmp_path / "flags.jsonl", delay_s=0.02)
    writer = FlagWriter(sink, batch_size=50, flush_interval_s=10.0).start()
    for i in range(1000):
        assert writer.submit(item(i))
    writer.close()
    rows = JsonlFlagSink.read(sink.path)
    assert [r["item_id"] for r in rows] == [f"it_{i}" for i in range(1000)]
    assert writer.written == 1000 and writer.pending == 0
    assert max(sink.batches) <= 50 and len(sink.batches) >= 20
    # Snapshots were made JSON-safe off the request path.
    assert rows[0]["snapshot"]["as_of"] == "2026-11-01T00:00:00+00:00"
    assert rows[5]["reasons"]["low_quality"][0]["feature"] == "n_report"
    # Closed: nothing more is accepted.
    assert writer.submit(item(1)) is False


def test_flushes_by_time_without_close(tmp_path: Path) -> None:
    sink = JsonlFlagSink(tmp_path / "flags.jsonl")
    writer = FlagWriter(sink, batch_size=1000, flush_interval_s=0.05).start()
    writer.submit(item(1))
    deadline = time.monotonic() + 10
    while not JsonlFlagSink.read(sink.path):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    writer.close()


def test_submit_never_blocks_and_counts_drops_when_full(tmp_path: Path) -> None:
    gate = threading.Event()

    class Blocked(JsonlFlagSink):
        def write(self, items: Sequence[FlaggedItem]) -> None:
            gate.wait(10)
            super().write(items)

    sink = Blocked(tmp_path / "f.jsonl")
    dropped: list[int] = []
    writer = FlagWriter(
        sink, max_queue=10, batch_size=1, flush_interval_s=0.0, on_dropped=dropped.append
    )
    writer.start()
    t0 = time.perf_counter()
    accepted = sum(writer.submit(item(i)) for i in range(100))
    assert time.perf_counter() - t0 < 0.5  # the request side never waits on the sink
    assert accepted < 100 and writer.dropped == 100 - accepted == len(dropped)
    gate.set()
    writer.close()
    assert len(JsonlFlagSink.read(sink.path)) == accepted


def test_retries_a_failing_sink(tmp_path: Path) -> None:
    class Flaky(JsonlFlagSink):
        failures = 2

        def write(self, items: Sequence[FlaggedItem]) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError("database is locked")
            super().write(items)

    sink = Flaky(tmp_path / "f.jsonl")
    writer = FlagWriter(sink, batch_size=10, retry_backoff_s=0.01).start()
    for i in range(25):
        writer.submit(item(i))
    writer.close()
    assert len(JsonlFlagSink.read(sink.path)) == 25 and writer.failed == 0


def test_numpy_values_and_nan_serialise(tmp_path: Path) -> None:
    sink = JsonlFlagSink(tmp_path / "f.jsonl")
    writer = FlagWriter(sink).start()
    it = item(0)
    it.snapshot.update({"x": np.float64(2.5), "y": float("nan")})
    writer.submit(it)
    writer.close()
    snap = JsonlFlagSink.read(sink.path)[0]["snapshot"]
    assert snap["x"] == 2.5 and snap["y"] is None


def test_an_unserialisable_batch_fails_once_without_retries(tmp_path: Path) -> None:
    class Counting(JsonlFlagSink):
        calls = 0

        def write(self, items: Sequence[FlaggedItem]) -> None:
            self.calls += 1
            super().write(items)

    sink = Counting(tmp_path / "f.jsonl")
    writer = FlagWriter(sink, retry_backoff_s=0.01).start()
    bad = item(0)
    bad.snapshot["x"] = object()
    writer.submit(bad)
    writer.close()
    assert writer.failed == 1 and writer.written == 0 and sink.calls == 1
    assert JsonlFlagSink.read(sink.path) == []


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        FlagWriter(None, batch_size=0)


# --- the sink in a child process -------------------------------------------------------------


def _broken_factory() -> JsonlFlagSink:
    raise OSError("no such database")


@pytest.mark.slow  # each starts a Python child process (spawn)
def test_process_sink_writes_every_item_and_round_trips_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    writer = FlagWriter(
        ProcessSink(functools.partial(JsonlFlagSink, path)), batch_size=7, retry_backoff_s=0.01
    ).start()
    for i in range(30):
        writer.submit(item(i))
    writer.close()  # drains, then stops the child
    rows = JsonlFlagSink.read(path)
    assert sorted(r["item_id"] for r in rows) == sorted(f"it_{i}" for i in range(30))
    assert writer.written == 30 and writer.failed == 0
    assert rows[0]["as_of"] == "2026-11-01T00:00:00+00:00"
    assert rows[0]["snapshot"]["as_of"] == "2026-11-01T00:00:00+00:00"
    assert not writer.sink._proc.is_alive()  # type: ignore[union-attr]


@pytest.mark.slow  # each starts a Python child process (spawn)
def test_process_sink_feeds_the_review_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = ReviewStore.from_settings(settings)
    store.migrate()
    writer = FlagWriter(ProcessSink(functools.partial(store_sink, settings, 1.0))).start()
    for i in range(12):
        writer.submit(item(i))
    writer.close()
    page = store.list_items(limit=50)
    assert page.total == 12 and writer.written == 12
    detail = store.get(page.items[0].id)
    assert detail.snapshot["as_of"] == "2026-11-01T00:00:00+00:00"
    store.close()


@pytest.mark.slow  # each starts a Python child process (spawn)
def test_process_sink_reports_unwritable_batches_and_a_broken_factory(tmp_path: Path) -> None:
    sink = ProcessSink(functools.partial(JsonlFlagSink, tmp_path / "f.jsonl"))
    bad = item(0)
    bad.snapshot["x"] = object()
    with pytest.raises(TypeError):
        sink.write([bad])  # serialised in the parent: it never reaches the child
    sink.write([item(1)])
    sink.close()
    assert [r["item_id"] for r in JsonlFlagSink.read(tmp_path / "f.jsonl")] == ["it_1"]
    with pytest.raises(RuntimeError, match="could not build the flag sink"):
        ProcessSink(_broken_factory)


AT = datetime(2026, 11, 2, 12, 30, tzinfo=UTC)


def scored_batch(ids: list[str], rows: list[int]) -> ScoredBatch:
    """A batch request of `ids` and its response: even items flagged, odd ones not."""
    request = {
        "items": [
            {"item_id": i, "as_of": "2026-11-01T00:00:00Z", "n_view": 10.0 * k, "anchor": None}
            for k, i in enumerate(ids)
        ]
    }
    response = {
        "items": [
            {
                "item_id": i,
                "probabilities": {"low_quality": 0.9 if k % 2 == 0 else 0.1, "wrongful": None},
                "flagged": ["low_quality"] if k % 2 == 0 else [],
                "reasons": (
                    {"low_quality": [{"feature": "n_view", "value": 10.0 * k, "contribution": 0.5}]}
                    if k % 2 == 0
                    else {}
                ),
                "model_version": "7",
            }
            for k, i in enumerate(ids)
        ],
        "model_version": "7",
    }
    return ScoredBatch(orjson.dumps(request), orjson.dumps(response), rows, AT)


def test_a_scored_batch_expands_to_the_items_its_bytes_hold() -> None:
    batch = scored_batch(["a", "b", "c"], [0, 1])
    assert len(batch) == 2
    first, second = batch.expand()
    raw = orjson.loads(batch.request)["items"]
    want = flagged_item(
        SnapshotAdapter.validate_python(raw[0]),
        {"low_quality": 0.9, "wrongful": None},
        ["low_quality"],
        {"low_quality": [{"feature": "n_view", "value": 0.0, "contribution": 0.5}]},
        "7",
        AT,
    )
    assert first == want
    # the snapshot is validated again: as_of is a datetime, not the request's string
    assert first.as_of == datetime(2026, 11, 1, tzinfo=UTC) and first.anchor == "post"
    assert first.scores == {"low_quality": 0.9} and first.sampled is False
    assert second.item_id == "b" and second.flagged == [] and second.sampled is True
    assert second.reach == 10.0 and second.scored_at == AT


def test_batches_count_and_drop_by_item(tmp_path: Path) -> None:
    dropped: list[int] = []
    sink = JsonlFlagSink(tmp_path / "f.jsonl")
    writer = FlagWriter(sink, max_queue=5, flush_interval_s=10.0, on_dropped=dropped.append)
    assert writer.submit_batch(scored_batch(["a", "b", "c"], [0, 1, 2]))
    assert writer.pending == 3
    assert not writer.submit_batch(scored_batch(["d", "e", "f"], [0, 1, 2]))  # all or none
    assert writer.dropped == 3 and dropped == [3]
    assert writer.submit(item(9)) and writer.pending == 4
    assert not writer.submit_batch(scored_batch(["g"], []))  # nothing to persist
    writer.start().close()
    rows = JsonlFlagSink.read(sink.path)
    assert [r["item_id"] for r in rows] == ["a", "b", "c", "it_9"]
    assert writer.written == 4 and writer.pending == 0
    assert rows[0]["snapshot"]["as_of"] == "2026-11-01T00:00:00+00:00"


@pytest.mark.slow  # starts a Python child process (spawn)
def test_process_sink_expands_batches_in_its_child(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    writer = FlagWriter(
        ProcessSink(functools.partial(JsonlFlagSink, path)), batch_size=4, retry_backoff_s=0.01
    ).start()
    want = []
    for k in range(5):
        writer.submit(item(k))
        ids = [f"b{k}_{j}" for j in range(3)]
        writer.submit_batch(scored_batch(ids, [0, 2]))
        want += [f"it_{k}", ids[0], ids[2]]
    writer.close()
    rows = JsonlFlagSink.read(path)
    assert [r["item_id"] for r in rows] == want
    assert writer.written == 15 and writer.failed == 0
    by_id = {r["item_id"]: r for r in rows}
    assert (
        by_id["b0_0"]["flagged"] == ["low_quality"] and by_id["b0_2"]["scored_at"] == AT.isoformat()
    )
