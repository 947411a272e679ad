"""The NATS JetStream consumer: applied through the API's code, acked after apply, a crash
between apply and ack redelivers and the batch id counts it once."""

from __future__ import annotations

import asyncio
import socket
import uuid

import orjson
import pandas as pd
import pytest

from features.online import open_store
from features.online.ingest import ingest, json_columns
from serving.stream import NatsSource, consume_nats

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _nats_or_skip() -> None:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        pytest.skip("no NATS on 127.0.0.1:4222")


def _source() -> NatsSource:
    """A stream, subject and durable consumer of this test's own (a fresh random tag)."""
    tag = uuid.uuid4().hex[:10]
    return NatsSource.parse(
        f"nats://127.0.0.1:4222?stream=SURFACER_TEST_{tag}&subject=surfacer-test.{tag}.events"
        f"&durable=d{tag}"
    )


async def _publish(js: object, subject: str, items: pd.DataFrame, events: pd.DataFrame) -> None:
    """The items, then the events in messages of 100, as a platform would publish them."""
    await js.publish(subject, orjson.dumps({"table": "items", "columns": json_columns(items)}))
    for lo in range(0, len(events), 100):
        body = {"table": "events", "columns": json_columns(events.iloc[lo : lo + 100])}
        await js.publish(subject, orjson.dumps(body))


async def test_jetstream_crash_redelivers_and_counts_once(sim_tables) -> None:
    _nats_or_skip()
    import nats

    source = _source()
    items = sim_tables["items"].head(10)
    end = items["created_at"].min() + pd.Timedelta(hours=20)
    ev = sim_tables["events"]
    events = ev[ev["item_id"].isin(set(items["item_id"])) & (ev["ts"] < end)]
    nc = await nats.connect(source.server)
    js = nc.jetstream()
    await js.add_stream(name=source.stream, subjects=[source.subject])
    try:
        await _publish(js, source.subject, items, events)
        await js.publish(source.subject, orjson.dumps({"table": "events", "rows": [{"kind": "x"}]}))
        store = open_store("memory")
        crashed: list[str] = []

        def apply_then_crash(batches, batch_id):
            result = ingest(store, batches, batch_id)
            if not crashed and batches[0].table == "events":
                crashed.append(batch_id)
                raise KeyboardInterrupt  # dies after applying, before the ack
            return result

        with pytest.raises(KeyboardInterrupt):
            await consume_nats(source, apply_then_crash, ack_wait_s=1.0)
        await asyncio.sleep(1.5)  # past ack_wait: the message is redelivered
        stats = await consume_nats(
            source, lambda b, bid: ingest(store, b, bid), until_idle=True, ack_wait_s=1.0
        )
        assert stats.duplicates >= 1 and stats.rejected == 1
        want = events[events["kind"] == "view"].groupby("item_id").size().to_dict()
        got = {
            s["item_id"]: s["n_view"]
            for s in store.snapshots(items["item_id"].tolist())
            if s is not None and s["n_view"]
        }
        assert got == want
    finally:
        await js.delete_stream(source.stream)
        await nc.close()


async def test_jetstream_acks_after_the_archive_and_redelivery_fills_it(
    sim_tables, tmp_path
) -> None:
    """Applied, then the process died before its archive part: the redelivered messages are
    store duplicates and are archived once all the same (acked only after the archive)."""
    _nats_or_skip()
    import nats

    from features.io import read_table
    from features.online.archive import LiveArchive

    source = _source()
    items = sim_tables["items"].head(10)
    ev = sim_tables["events"]
    events = ev[ev["item_id"].isin(set(items["item_id"]))].head(300)
    nc = await nats.connect(source.server)
    js = nc.jetstream()
    await js.add_stream(name=source.stream, subjects=[source.subject])
    try:
        await _publish(js, source.subject, items, events)
        store = open_store("memory")
        lost = LiveArchive(tmp_path / "live", background=False)

        def flush_then_crash() -> None:
            raise KeyboardInterrupt  # every message applied and buffered; no part, no ack

        with pytest.raises(KeyboardInterrupt):
            await consume_nats(
                source,
                lambda b, bid: ingest(store, b, bid, archive=lost),
                flush=flush_then_crash,
                ack_wait_s=1.0,
            )
        assert lost.buffered_rows == len(items) + len(events)
        await asyncio.sleep(1.5)  # past ack_wait: redelivered
        archive = LiveArchive(tmp_path / "live", background=False)
        stats = await consume_nats(
            source,
            lambda b, bid: ingest(store, b, bid, archive=archive),
            until_idle=True,
            ack_wait_s=1.0,
            flush=archive.flush,
            apply_redelivered=lambda b, bid: ingest(
                store, b, bid, archive=archive, redelivered=True
            ),
        )
        assert stats.messages == 4 and stats.duplicates == 4
        assert len(read_table("items", tmp_path / "live" / "items")) == len(items)
        assert len(read_table("events", tmp_path / "live" / "events")) == len(events)
        # and once acked, nothing comes back
        again = await consume_nats(
            source,
            lambda b, bid: ingest(store, b, bid, archive=archive),
            until_idle=True,
            ack_wait_s=1.0,
        )
        assert again.messages == 0
    finally:
        await js.delete_stream(source.stream)
        await nc.close()
