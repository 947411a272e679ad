"""The background flag writer: batching, retries, bounded queue, drain on close."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from serving.flag_writer import FlaggedItem, FlagWriter, JsonlFlagSink, ProcessSink
from serving.review.store import ReviewStore, store_sink
from surfacer.settings import Settings


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
