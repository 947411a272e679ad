"""GET score's Redis read (`features.online.redis_read.ScriptReader`): pipelined answers go
to the right requests, an uncached script still runs, a database other than 0 is selected,
and a lost connection fails the waiting requests and is opened again."""

from __future__ import annotations

import asyncio
import uuid

import pandas as pd
import pytest

from features.online import OnlineConfig, open_store
from features.online.errors import StoreUnavailable
from features.online.redis_read import ScriptReader
from serving.online import json_record
from tests.online.conftest import redis_or_skip
from tests.online.test_store import _events, _items

pytestmark = pytest.mark.redis


def _store(db: int = 0):
    redis_or_skip()
    return open_store(
        f"redis://127.0.0.1:6379/{db}", OnlineConfig(), prefix=f"w41test:{uuid.uuid4().hex[:10]}:"
    )


def test_concurrent_reads_each_get_their_own_item() -> None:
    """Many reads in flight on one connection: each answer is its own item's snapshot,
    equal to the blocking client's read at the same as_of (nothing applied meanwhile)."""
    store = _store()
    try:
        ids = [f"i{k:03d}" for k in range(60)]
        store.apply({"items": _items(*ids)})
        store.apply(
            {
                "events": pd.concat(
                    [_events(i, [1 + m for m in range(k % 7)]) for k, i in enumerate(ids)]
                )
            }
        )

        async def main() -> list:
            try:
                return await asyncio.gather(*(store.snapshot_async(i) for i in [*ids, "nope"]))
            finally:
                await store.aclose()

        got = asyncio.run(main())
        assert got[-1] is None
        for item, snap in zip(ids, got, strict=False):
            assert snap["item_id"] == item
            assert snap == json_record(store.snapshot(item, store.now_ns()))
        assert len({s["n_view"] for s in got[:-1]}) == 7  # the answers differ per item
    finally:
        store.clear()
        store.close()


def test_a_script_redis_has_not_cached_runs_by_eval_then_by_sha() -> None:
    redis_or_skip()
    marker = uuid.uuid4().hex
    script = f"-- {marker}\nreturn ARGV[1] .. ':' .. ARGV[2]"
    reader = ScriptReader("127.0.0.1", 6379, script)

    async def main() -> tuple[bytes, bytes]:
        try:
            return await reader("a", marker), await reader("b", "c")
        finally:
            reader.close()

    assert asyncio.run(main()) == (f"a:{marker}".encode(), b"b:c")


def test_a_database_other_than_0_is_selected() -> None:
    store = _store(db=1)
    try:
        store.apply({"items": _items("x")})
        store.apply({"events": _events("x", [1, 2, 3])})

        async def main():
            try:
                return await store.snapshot_async("x")
            finally:
                await store.aclose()

        snap = asyncio.run(main())
        assert snap is not None and snap["n_view"] == 3
    finally:
        store.clear()
        store.close()


def test_a_lost_connection_fails_the_read_and_the_next_read_reconnects() -> None:
    from tests.support.faults import TcpProxy

    redis_or_skip()
    proxy = TcpProxy(("127.0.0.1", 6379)).start()
    store = open_store(
        f"redis://127.0.0.1:{proxy.port}/0", OnlineConfig(), prefix=f"w41test:{uuid.uuid4().hex}:"
    )
    try:
        store.apply({"items": _items("x")})

        async def main() -> None:
            try:
                assert (await store.snapshot_async("x"))["item_id"] == "x"
                proxy.cut()
                with pytest.raises(StoreUnavailable, match="unavailable"):
                    await store.snapshot_async("x")
                proxy.restore()
                for _ in range(50):
                    try:
                        snap = await store.snapshot_async("x")
                        break
                    except StoreUnavailable:
                        await asyncio.sleep(0.1)
                assert snap["item_id"] == "x"
            finally:
                await store.aclose()

        asyncio.run(main())
    finally:
        store.clear()
        store.close()
        proxy.close()


def test_a_failed_connect_whose_request_was_cancelled_is_tried_again() -> None:
    """A request cancelled while the connection it started was being refused (its client
    went away) does not leave that failure behind for the next request."""
    from tests.support.faults import TcpProxy

    redis_or_skip()
    proxy = TcpProxy(("127.0.0.1", 6379)).start()
    proxy.cut()  # refuses connections
    reader = ScriptReader("127.0.0.1", proxy.port, "return ARGV[1]")

    async def main() -> bytes:
        try:
            first = asyncio.ensure_future(reader("a"))
            await asyncio.sleep(0)  # it has started connecting
            first.cancel()
            await asyncio.sleep(0.2)  # the connection was refused meanwhile
            proxy.restore()
            return await reader("b")  # connects now, not handed the stale refusal
        finally:
            reader.close()

    try:
        assert asyncio.run(main()) == b"b"
    finally:
        proxy.close()
