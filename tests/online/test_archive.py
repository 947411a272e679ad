"""The live archive: newly applied rows as a dataset folder that `watch --live` reads."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.io import dataset_files, load_dataset, read_table
from features.online import OnlineConfig
from features.online.archive import ArchiveUnavailable, LiveArchive, read_scores
from features.online.errors import Batch
from features.online.ingest import ingest, ingest_many, json_columns
from features.online.replay import chunks, timeline
from tests.discovery.conftest import raw_tables  # noqa: F401  (the fixture)
from tests.online.conftest import REDIS_URL, redis_or_skip

# Old simulated dates: no row is "in the future"; items expire in the store long before the
# replay ends, which is the point (the archive keeps what the store lets go).
CONFIG = OnlineConfig(horizon_h=24.0, late_s=600.0)


def _batch(frame: pd.DataFrame, table: str) -> list[Batch]:
    return [Batch(table, columns=json_columns(frame))]


def test_resent_batch_is_archived_once(store_factory, sim_tables, tmp_path: Path) -> None:
    store = store_factory(CONFIG)
    archive = LiveArchive(tmp_path / "live", background=False)
    items = sim_tables["items"].head(30)
    first = ingest(store, _batch(items, "items"), "b-1", archive=archive)
    again = ingest(store, _batch(items, "items"), "b-1", archive=archive)
    assert not first.duplicate and again.duplicate
    # the stream path: one read holding the same message twice, and a redelivered read
    results = ingest_many(
        store, [(_batch(items, "items"), "b-1"), (_batch(items, "items"), "b-1")], archive=archive
    )
    assert all(r.duplicate for r in results)
    archive.flush()
    got = load_dataset(tmp_path / "live")["items"]
    assert len(got) == len(items)
    assert got["item_id"].tolist() == items["item_id"].tolist()
    # a redelivery of a batch a part already holds is not archived again either
    ingest(store, _batch(items, "items"), "b-1", archive=archive, redelivered=True)
    fresh = LiveArchive(tmp_path / "live", background=False)  # another process, after a crash
    ingest(store, _batch(items, "items"), "b-1", archive=fresh, redelivered=True)
    assert archive.buffered_rows == 0 and fresh.buffered_rows == 0


def test_crash_between_apply_and_part_is_covered_by_redelivery(
    store_factory, sim_tables, tmp_path: Path
) -> None:
    """Applied to the store, then the process died before the part was written: the
    redelivered message is a store duplicate, and is archived once all the same."""
    store = store_factory(CONFIG)
    items = sim_tables["items"].head(20)
    lost = LiveArchive(tmp_path / "live", background=False)
    ingest(store, _batch(items, "items"), "m-7", archive=lost)
    assert lost.buffered_rows == len(items)  # never flushed: the crash
    restarted = LiveArchive(tmp_path / "live", background=False)
    result = ingest(store, _batch(items, "items"), "m-7", archive=restarted, redelivered=True)
    assert result.duplicate
    restarted.flush()
    ingest(store, _batch(items, "items"), "m-7", archive=restarted, redelivered=True)
    assert restarted.buffered_rows == 0
    assert len(read_table("items", tmp_path / "live" / "items")) == len(items)


def test_batch_ids_are_looked_up_in_recent_parts_only(sim_tables, tmp_path: Path) -> None:
    """Past the batch-id TTL the store applies a batch as new, so older parts need not be
    read (nor their ids kept in memory)."""
    writer = LiveArchive(tmp_path / "live", background=False)
    writer.record([("items", sim_tables["items"].head(3))], "old-batch")
    writer.flush()
    assert LiveArchive(tmp_path / "live", background=False).has_batch("old-batch")
    later = LiveArchive(tmp_path / "live", batch_ttl_s=0.05, background=False)
    threading.Event().wait(0.1)
    assert not later.has_batch("old-batch")
    assert not LiveArchive(tmp_path / "live", background=False).has_batch("other")


def test_reader_never_sees_a_partial_part(sim_tables, tmp_path: Path) -> None:
    events = sim_tables["events"].head(4000)
    archive = LiveArchive(tmp_path / "live", flush_rows=10**9, background=False)
    size = 200
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read_loop() -> None:
        while not stop.is_set():
            try:
                live = tmp_path / "live"
                if live.is_dir() and "events" in dataset_files(live):
                    seen.append(len(read_table("events", tmp_path / "live" / "events")))
            except BaseException as exc:  # any half-written part or empty folder shows here
                errors.append(exc)
                return

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for lo in range(0, len(events), size):
            archive.record([("events", events.iloc[lo : lo + size])], f"e-{lo}")
            archive.flush()
    finally:
        stop.set()
        reader.join(30)
    assert not errors, errors[0]
    assert seen and all(n % size == 0 for n in seen)
    assert seen == sorted(seen)
    final = read_table("events", tmp_path / "live" / "events")
    assert len(final) == len(events)
    assert not [p for p in (tmp_path / "live").rglob("*") if p.name.startswith(".")]


def test_failed_write_keeps_rows_and_raises(sim_tables, tmp_path: Path) -> None:
    blocked = tmp_path / "live"
    blocked.write_text("not a folder")  # the archive cannot be created
    archive = LiveArchive(blocked, background=False)
    archive.record([("items", sim_tables["items"].head(5))], "x")
    with pytest.raises(ArchiveUnavailable):
        archive.flush()
    assert archive.buffered_rows == 5 and archive.has_batch("x")


def test_background_writer_flushes_by_time(sim_tables, tmp_path: Path) -> None:
    archive = LiveArchive(tmp_path / "live", flush_s=0.2)
    try:
        archive.record([("items", sim_tables["items"].head(7))], None)
        deadline = pd.Timestamp.now() + pd.Timedelta(seconds=20)
        while archive.parts_written == 0 and pd.Timestamp.now() < deadline:
            threading.Event().wait(0.05)
        assert archive.parts_written == 1
    finally:
        archive.close()
    assert len(load_dataset(tmp_path / "live")["items"]) == 7


def _replay(tables, store, archive) -> int:
    """Every row through the ingest path in event-time order, as `surfacer replay` cuts it."""
    order = timeline(tables)
    n = 0
    for k, (table, frame) in enumerate(chunks(tables, order, 0, len(order), 500)):
        ingest(store, _batch(frame, table), f"replay-{k}", archive=archive)
        archive.flush(only_due=True)  # what the background writer does, deterministically
        n += len(frame)
    return n


def test_watch_live_finds_what_discover_finds(
    store_factory,
    raw_tables,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from discovery.pipeline import discover
    from features.io import write_dataset
    from surfacer.cli import run

    store = store_factory(CONFIG)
    live = tmp_path / "live"
    archive = LiveArchive(live, flush_rows=3000, background=False)
    sent = _replay(raw_tables, store, archive)
    archive.close()
    assert sent == len(raw_tables["items"]) + len(raw_tables["moderation"])
    assert len(list((live / "items").glob("part-*.parquet"))) >= 3  # a table of many parts

    data = tmp_path / "data"
    write_dataset(raw_tables, data)
    source = discover(load_dataset(data))
    archived = discover(load_dataset(live))
    keys = {(i.issue, str(i.segment)) for i in source.incidents}
    assert keys, "the fixture's surge must be found"
    assert {(i.issue, str(i.segment)) for i in archived.incidents} == keys

    url = f"sqlite:///{tmp_path / 'review.db'}"
    argv = ["watch", "--live", "--archive", str(live), "--store", url, "--window", "30d"]
    assert run([*argv, "--every", "0s", "--max-runs", "1"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("run 1"))
    assert f"{len(source.incidents)} detected" in line and f"{len(keys)} new" in line
    # --data on the source into a second store says the same
    url2 = f"sqlite:///{tmp_path / 'review2.db'}"
    assert (
        run(["watch", "--data", str(data), "--store", url2, "--window", "30d", "--max-runs", "1"])
        == 0
    )
    line2 = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("run 1"))
    assert line2.split(":")[0] == line.split(":")[0]  # the same window
    assert f"{len(source.incidents)} detected" in line2


def test_watch_live_needs_an_archive(tmp_path: Path, capsys, monkeypatch) -> None:
    from surfacer.cli import run

    monkeypatch.delenv("SURFACER_ARCHIVE_DIR", raising=False)
    url = f"sqlite:///{tmp_path / 'review.db'}"
    assert run(["watch", "--live", "--store", url, "--max-runs", "1"]) == 2
    assert "SURFACER_ARCHIVE_DIR" in capsys.readouterr().err
    monkeypatch.setenv("SURFACER_ARCHIVE_DIR", str(tmp_path / "empty"))
    assert run(["watch", "--live", "--store", url, "--max-runs", "1"]) == 0
    assert "holds no items yet" in capsys.readouterr().out


@pytest.mark.redis
def test_stream_consumer_acks_only_after_the_archive(sim_tables, tmp_path: Path) -> None:
    """A read whose part could not be written is not acknowledged; the restarted consumer
    reads it again as a redelivery and archives it once."""
    redis_or_skip()
    import redis

    from features.online import open_store
    from serving.stream import StreamConsumer, StreamSource, publish

    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"archive-test:{tag}:stream", f"w40test:{tag}:"
    client = redis.Redis.from_url(REDIS_URL)
    store = open_store(REDIS_URL, CONFIG, prefix=prefix)
    items = sim_tables["items"].head(40)
    try:
        for lo in range(0, 40, 10):
            publish(client, stream, "items", {"columns": json_columns(items.iloc[lo : lo + 10])})
        source = StreamSource.parse(f"{REDIS_URL}?stream={stream}&group=g&consumer=c1")
        archive = LiveArchive(tmp_path / "live", background=False)
        failing = {"left": 1}

        def flush() -> None:
            if failing["left"]:
                failing["left"] -= 1
                raise ArchiveUnavailable("disk full (test)")
            archive.flush()

        # the first read is applied, its flush fails: nothing acknowledged, rows stay buffered
        crashed = LiveArchive(tmp_path / "live", background=False)
        first = StreamConsumer(
            source,
            lambda m: ingest_many(store, m, archive=crashed),
            count=4,
            flush=flush,
        )
        first.ensure_group()
        with pytest.raises(ArchiveUnavailable):  # run() waits and re-reads on it
            first._handle(first._read(">"))
        assert client.xpending(stream, "g")["pending"] == 4
        assert crashed.buffered_rows == 40 and not (tmp_path / "live" / "items").exists()
        first.close()
        # restart with a fresh archive (the crashed one's buffer is gone)
        again = StreamConsumer(
            source,
            lambda m: ingest_many(store, m, archive=archive),
            flush=flush,
            apply_redelivered=lambda m: ingest_many(store, m, archive=archive, redelivered=True),
        )
        stats = again.run(until_idle=True)
        again.close()
        assert stats.duplicates == 4  # the store had them: only the archive needed them
        assert client.xpending(stream, "g")["pending"] == 0
        got = read_table("items", tmp_path / "live" / "items")
        assert sorted(got["item_id"]) == sorted(items["item_id"])
    finally:
        client.delete(stream)
        store.clear()
        store.close()
        client.close()


def test_rescorer_scores_are_archived(champion_v1, sim_tables, tmp_path: Path, monkeypatch) -> None:
    """The re-scorer's passes land in <archive>/scores with `surfacer score`'s columns."""
    from features.online import open_store
    from serving.model_holder import ModelHolder
    from serving.online import OnlineService
    from serving.spool import SpoolWriter

    settings = champion_v1.settings(
        tmp_path / "state", archive_dir=tmp_path / "live", online_rescore_s=0.0
    )
    store = open_store("memory", CONFIG)
    online = OnlineService(settings, store)
    items = sim_tables["items"].head(25)
    online.ingest(_batch(items, "items"), "i-1")
    holder = ModelHolder(settings)
    holder.check()
    spool = SpoolWriter(settings.spool_path).start()
    try:
        online.rescore(holder.current, spool, online.due())
    finally:
        spool.close()
        online.close()
    scores = read_scores(tmp_path / "live")
    assert scores is not None and len(scores) == len(items)
    issues = list(holder.current.bundle.issue_names)
    for col in ["item_id", "as_of", "anchor", "horizon_h", *issues, "flagged", "disabled"]:
        assert col in scores.columns
    assert set(scores["model_version"]) == {str(holder.current.version)}
    bundle = holder.current.bundle
    for issue in issues:  # `flagged` names the issues at or above their thresholds
        limit = bundle.thresholds.get(issue)
        hit = scores[issue].to_numpy() >= (np.inf if limit is None else limit)
        named = scores["flagged"].str.split(",").map(lambda names, i=issue: i in names)
        assert (hit == named.to_numpy()).all()
    assert scores[issues].notna().any().any()
    assert len(load_dataset(tmp_path / "live")["items"]) == len(items)

    # watch --live hands discovery the archive's window and these scores
    import discovery.pipeline
    from discovery.cli import watch_once

    seen: dict[str, object] = {}

    def capture(tables, frame, config=None):
        seen["tables"], seen["scores"] = tables, frame
        raise ValueError("captured")

    monkeypatch.setattr(discovery.pipeline, "discover", capture)
    line = watch_once(None, tmp_path / "live", None, 30 * 86400, "live", None, 1, live=True)
    assert "nothing to detect (captured)" in line
    got = seen["scores"]
    assert sorted(got["item_id"]) == sorted(scores["item_id"])
    assert set(seen["tables"]) >= {"items"}


def test_live_discovery_counts_items_from_their_first_horizon() -> None:
    """`watch --live` counts an item at the re-scorer's score at its first horizon (the
    age `surfacer score` counts it at, and the youngest the models saw in training), not at
    the first touch minutes after posting; an item never scored that late keeps its rows,
    and moderation rows stay whatever their age."""
    from features.online.archive import from_first_horizon

    scores = pd.DataFrame(
        {
            "item_id": ["a", "a", "a", "b", "c", "c", "a"],
            "anchor": ["post"] * 6 + ["moderation"],
            "horizon_h": [0.1, 1.0, 6.0, 0.2, 0.3, 0.99, 0.05],
            "low_quality": [0.9, 0.2, 0.1, 0.5, 0.7, 0.4, float("nan")],
        }
    )
    kept = from_first_horizon(scores, 1.0)
    assert list(zip(kept["item_id"], kept["horizon_h"], strict=True)) == [
        ("a", 1.0),
        ("a", 6.0),
        ("b", 0.2),
        ("c", 0.99),  # within a minute of the horizon: the crossing, scored at the clock
        ("a", 0.05),
    ]
    assert from_first_horizon(scores.drop(columns="horizon_h"), 1.0).equals(
        scores.drop(columns="horizon_h")
    )
