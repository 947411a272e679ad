"""The online store interface and the in-process backend.

`OnlineStore.apply(tables, batch_id)` validates nothing (callers validate with the contract
first), plans the batch once (`features.online.ops`) and runs the operations atomically;
`snapshot(item_id, as_of)` reads the item's state and assembles the snapshot row
(`features.online.snapshot`). `MemoryStore` keeps the same keys as Redis in dicts, so the
two backends share every line of update and read logic and differ only in where bytes live.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from features.online.errors import AsOfTooEarly
from features.online.ops import (
    ANCHORED_KEY,
    ANCHORED_LEASES_KEY,
    EXPIRY_KEY,
    META_KEY,
    SEQ_WIDTH,
    TOUCHED_KEY,
    TOUCHED_LEASES_KEY,
    OnlineConfig,
    Part,
    Plan,
    creator_key,
    flag_claims_key,
    flags_key,
    item_key,
    item_keys,
    plan_tables,
    tomb_key,
)
from features.online.snapshot import RawItem, assemble, assemble_anchor


@dataclass(frozen=True)
class ApplyResult:
    """What one batch did: rows taken, rows dropped because their item expired, whether the
    batch id had been applied before (then nothing was applied again), items touched."""

    rows: int
    expired: int
    duplicate: bool
    items: tuple[str, ...]
    clock_ns: int | None


def apply_result(plan: Plan, parts: Sequence[Part], ran: Sequence[tuple[bool, int]]) -> ApplyResult:
    """The ApplyResult of a planned batch the store ran as `parts` (each part's (applied,
    expired)). A part whose key was seen applied nothing, so it adds no rows and no items;
    the batch is a duplicate when every part was (a batch re-sent after a crash between
    its parts reports the rows of the parts that had not run)."""
    applied = [part for part, (ok, _) in zip(parts, ran, strict=True) if ok]
    whole = len(applied) == len(parts)
    items: set[str] = set()
    for part in applied:
        items |= part.items
    return ApplyResult(
        rows=plan.rows if whole else sum(part.rows for part in applied),
        expired=sum(expired for _, expired in ran),
        duplicate=not applied,
        items=tuple(sorted(plan.items if whole else items)),
        clock_ns=plan.max_ts_ns,
    )


# Items read per round trip by `OnlineStore.snapshots` (one Redis script each).
READ_CHUNK = 100

# How long a taken item stays leased when the caller names no deadline (`Lease`).
DEFAULT_LEASE_S = 60.0
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Lease:
    """When a take happens and until when its items are leased, in wall-clock ms. `until_ms`
    is also the taker's token: releasing an item frees it only while its lease still ends
    then, so a taker whose lease ended (and was taken again by another) frees nothing of
    the other's."""

    now_ms: int
    until_ms: int

    @classmethod
    def starting(cls, now_s: float | None = None, lease_s: float = DEFAULT_LEASE_S) -> Lease:
        now_ms = round((time.time() if now_s is None else now_s) * 1000)
        return cls(now_ms, now_ms + max(1, round(lease_s * 1000)))


class FlagClaim(NamedTuple):
    """What `OnlineStore.claim_flags` gave a caller: the marks it now holds (to queue, then
    make final with `mark_flagged`, or give back with `release_flags`) and the marks a live
    claim of another caller holds (neither final nor this caller's to queue: the item is
    not finished until they are). A mark already final is in neither."""

    claimed: list[str]
    held: list[str]


def horizon_ms(ns: int) -> int:
    """A horizon's score in the `hz` set: its store-clock ns in ms, rounded up, so that
    the store clock in ms (rounded down) reaching it means the clock reached the horizon."""
    return -(-int(ns) // NS_PER_MS)


class OnlineStore:
    """Per-item and per-creator state from which snapshot columns are read at any moment."""

    backend = "abstract"
    # Operation values per atomic script (`Plan.parts`); None: a batch is one script. The
    # in-process store blocks no other client while it applies, so it keeps batches whole.
    part_weight: int | None = None

    def __init__(self, config: OnlineConfig | None = None) -> None:
        self.config = config or OnlineConfig()

    # -- to implement
    def _run(self, ops: list[tuple[Any, ...]]) -> tuple[bool, int]:
        """Run ops atomically; (applied, expired rows). applied is False for a seen batch."""
        raise NotImplementedError

    def _raw(self, item_ids: list[str], moderation: bool = False) -> list[RawItem]:
        """The items' raw state; with `moderation`, their moderation log and pending
        anchors too (what only the re-scorer's anchor pass reads)."""
        raise NotImplementedError

    def _read(
        self, item_ids: list[str], moderation: bool = False
    ) -> tuple[int | None, list[RawItem]]:
        """The clock and the items' raw state. A backend whose round trips cost (Redis)
        reads both in one call, which also makes the pair consistent: no batch is applied
        between reading the clock and reading the state."""
        return self.clock_ns(), self._raw(item_ids, moderation)

    def clock_ns(self) -> int | None:
        """The latest timestamp applied (None before anything was applied)."""
        raise NotImplementedError

    def claim_flags(self, item_id: str, marks: list[str], lease: Lease) -> FlagClaim:
        """The first phase of queueing an item's flags, one atomic step: each of `marks`
        (issues, or ``<issue>@<action key>``) not final and not held by a live claim is
        claimed until `lease.until_ms` (wall ms; `until_ms` is the claim's token), as is
        one whose claim ended by `lease.now_ms` (its claimer died before the spool took
        the flag, or could not release it). Several workers asking at once: one claims."""
        raise NotImplementedError

    def mark_flagged(self, item_id: str, marks: list[str]) -> list[str]:
        """The second phase, once the flags are in the spool: make `marks` final (no later
        claim takes them) and drop their claims; returns the marks not final before."""
        raise NotImplementedError

    def release_flags(self, item_id: str, marks: list[str], until_ms: int) -> None:
        """Give back claims taken with token `until_ms` (the flags could not be queued; a
        later score claims them again). Another caller's claim is left alone."""
        raise NotImplementedError

    def take_touched(self, limit: int, lease: Lease | None = None) -> list[str]:
        """Up to `limit` items changed since last taken, each moved in one atomic step into
        the in-flight set, leased until `lease.until_ms` (default: `DEFAULT_LEASE_S` from
        now), where it stays until `finish_touched` releases it. First, items whose lease
        ended by `lease.now_ms` (their taker died, or its reply was lost) go back to the
        touched set: taking is at least once."""
        raise NotImplementedError

    def take_horizons(self, limit: int, lease: Lease | None = None) -> list[str]:
        """Up to `limit` scored items whose next horizon the store clock has reached (set by
        `finish_touched`), moved into the same in-flight set as `take_touched`'s."""
        raise NotImplementedError

    def finish_touched(self, done: Sequence[tuple[str, int | None, int | None]]) -> None:
        """Items whose scoring pass has finished, flags queued: (item, lease token, next
        horizon ns). Atomically sets the item's next horizon (None: past its last one or
        gone, so it leaves the horizon set) and releases its lease when the token (the
        `until_ms` of the take, None for an item not taken) is still the lease's."""
        raise NotImplementedError

    def touched_count(self, now_ms: int | None = None) -> int:
        """The re-scorer's backlog in the store: items changed and not yet taken, items
        whose lease ended by `now_ms` (wall ms, default now; their taker died) and scored
        items whose next horizon the store clock has reached."""
        raise NotImplementedError

    def horizons_planned(self) -> int:
        """Scored items waiting for their next horizon (the size of the horizon set)."""
        raise NotImplementedError

    def take_anchored(self, limit: int, lease: Lease | None = None) -> list[str]:
        """Up to `limit` items with pending moderation anchors, leased as in
        `take_touched` (in their own in-flight set; `release_anchored` frees them)."""
        raise NotImplementedError

    def release_anchored(self, item_ids: list[str], until_ms: int) -> None:
        """End the leases (taken with token `until_ms`) of items whose anchors were scored
        and their flags queued."""
        raise NotImplementedError

    def requeue_anchored(self, item_id: str) -> None:
        """Put an item back among those with pending anchors, lease ended (its pass
        failed)."""
        raise NotImplementedError

    def done_anchors(self, item_id: str, keys: list[str]) -> None:
        """Forget the item's pending anchors `keys` (scored, flags queued)."""
        raise NotImplementedError

    def ping(self) -> None:
        """Raise StoreUnavailable when the backend cannot be used."""

    def close(self) -> None:
        """Release connections."""

    # -- shared
    def apply(
        self,
        tables: Mapping[str, pd.DataFrame] | Iterable[tuple[str, pd.DataFrame]],
        batch_id: str | None = None,
    ) -> ApplyResult:
        """Apply validated contract rows atomically; a batch id already applied is a no-op."""
        pairs = tables.items() if isinstance(tables, Mapping) else tables
        plan = plan_tables(pairs, self.config)
        parts = plan.parts(batch_id, self.config, self.part_weight)
        return apply_result(plan, parts, self._run_many([p.ops for p in parts]))

    def _run_many(self, op_lists: list[list[tuple[Any, ...]]]) -> list[tuple[bool, int]]:
        """Run several op lists, each atomically on its own, in order (a backend with a
        network in between sends them in one round trip)."""
        return [self._run(ops) for ops in op_lists]

    def apply_many(
        self, batches: Sequence[tuple[Iterable[tuple[str, pd.DataFrame]], str | None]]
    ) -> list[ApplyResult]:
        """`apply` for several batches, each atomic and idempotent under its own batch id,
        in one round trip: what the stream consumer does with a whole read."""
        planned = []
        for tables, bid in batches:
            plan = plan_tables(tables, self.config)
            planned.append((plan, plan.parts(bid, self.config, self.part_weight)))
        done = iter(self._run_many([p.ops for _, parts in planned for p in parts]))
        return [apply_result(plan, parts, [next(done) for _ in parts]) for plan, parts in planned]

    def now_ns(self) -> int | None:
        """The as_of of a live snapshot: just after the latest applied timestamp."""
        clock = self.clock_ns()
        return None if clock is None else clock + 1

    def snapshots(
        self, item_ids: list[str], as_of_ns: int | None = None
    ) -> list[dict[str, Any] | None]:
        """Snapshot rows (None for unknown or expired items) at as_of (default: now_ns).

        Read READ_CHUNK items at a time, each chunk with its own clock (so without an
        as_of, the rows of different chunks may have different as_of, each exact): one read
        of the 2,000 items of a re-scoring pass kept Redis busy for tens of ms, and every
        GET score waited behind it."""
        out: list[dict[str, Any] | None] = []
        for lo in range(0, len(item_ids), READ_CHUNK):
            clock, raws = self._read(item_ids[lo : lo + READ_CHUNK])
            out += self._assemble_all(clock, raws, as_of_ns)
        return out

    @staticmethod
    def _assemble_all(
        clock: int | None, raws: list[RawItem], as_of_ns: int | None, python_times: bool = False
    ) -> list[dict[str, Any] | None]:
        if as_of_ns is None:
            as_of_ns = clock + 1 if clock is not None else time.time_ns()
        elif clock is not None and as_of_ns <= clock:
            raise AsOfTooEarly(
                f"as_of {pd.Timestamp(as_of_ns, tz='UTC')} is not after the store's clock "
                f"{pd.Timestamp(clock, tz='UTC')}: the online store answers only after the "
                "latest applied row"
            )
        return [assemble(raw, as_of_ns, python_times=python_times) for raw in raws]

    def snapshot(self, item_id: str, as_of_ns: int | None = None) -> dict[str, Any] | None:
        return self.snapshots([item_id], as_of_ns)[0]

    def anchor_snapshots(self, item_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """(anchor key, snapshot) of every pending moderation anchor of the items, in item
        order and, per item, in action order: the row `build_snapshots` makes for that
        moderation row (`snapshot.assemble_anchor`; its exactness bound is there). An item
        not upserted yet has none here: its anchors stay pending until its `items` row
        arrives (which queues them again)."""
        out: list[tuple[str, dict[str, Any]]] = []
        for lo in range(0, len(item_ids), READ_CHUNK):
            _, raws = self._read(item_ids[lo : lo + READ_CHUNK], moderation=True)
            for raw in raws:
                for key in raw.pending:
                    snap = assemble_anchor(raw, key)
                    if snap is not None:
                        out.append((key, snap))
        return out

    def _snapshot_now(self, item_id: str) -> dict[str, Any] | None:
        # snapshot_async's read: now, with Python datetimes
        clock, raws = self._read([item_id])
        return self._assemble_all(clock, raws, None, python_times=True)[0]

    async def snapshot_async(self, item_id: str) -> dict[str, Any] | None:
        """`snapshot(item_id)` for an event loop (GET score), with Python datetimes for
        `as_of` and `created_at` (`serving.online.json_record` of the snapshot, made without
        pandas). Here in a worker thread: the in-process store's lock may be held by a batch
        being applied. A backend with an asynchronous client reads on the loop itself
        (`RedisStore`)."""
        return await asyncio.to_thread(self._snapshot_now, item_id)

    async def aclose(self) -> None:
        """Release what `snapshot_async` opened on the running event loop."""


class MemoryStore(OnlineStore):
    """The embedded backend: the Redis key layout in dicts, one lock (one worker, tests)."""

    backend = "memory"

    def __init__(self, config: OnlineConfig | None = None) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._h: dict[str, dict[str, str]] = {}
        self._s: dict[str, set[str]] = {}
        self._b: dict[str, bytearray] = {}
        self._l: dict[str, list[str]] = {}  # sorted sets by member (comment texts)
        self._z: dict[str, dict[str, float]] = {}
        self._ttl: dict[str, float] = {}  # batch ids and tombstones: key -> monotonic deadline
        self._heap: list[tuple[float, str]] = []
        self._seq = 0
        self._leases: dict[str, dict[str, int]] = {}  # in-flight set -> item -> until (ms)
        self._hz: dict[str, int] = {}  # item -> its next horizon (store-clock ms)

    def _alive(self, key: str) -> bool:
        deadline = self._ttl.get(key)
        if deadline is None:
            return False
        if deadline < time.monotonic():
            del self._ttl[key]
            return False
        return True

    def _run(self, ops: list[tuple[Any, ...]]) -> tuple[bool, int]:
        with self._lock:
            return self._run_locked(ops)

    def _run_locked(self, ops: list[tuple[Any, ...]]) -> tuple[bool, int]:
        expired = 0
        i = 0
        h = self._h
        while i < len(ops):
            op = ops[i]
            name = op[0]
            i += 1
            if name == "HINCRBY":
                d = h.setdefault(op[1], {})
                d[op[2]] = str(int(d.get(op[2], 0)) + int(op[3]))
            elif name == "HINCRBYFLOAT":
                d = h.setdefault(op[1], {})
                d[op[2]] = repr(float(d.get(op[2], 0.0)) + float(op[3]))
            elif name == "SADD":
                self._s.setdefault(op[1], set()).update(op[2:])
            elif name == "APPEND":
                self._b.setdefault(op[1], bytearray()).extend(op[2])
            elif name == "TEXTS":
                entries = self._l.setdefault(op[1], [])
                for k in range(3, len(op), 2):
                    self._seq += 1
                    bisect.insort(entries, f"{op[k]}:{self._seq:0{SEQ_WIDTH}d}:{op[k + 1]}")
                del entries[: -int(op[2])]
            elif name == "HSET":
                h.setdefault(op[1], {})[op[2]] = op[3]
            elif name == "GUARD":
                if self._alive(op[1]):
                    i += int(op[2])
                    expired += int(op[3])
            elif name == "HSETNX_THEN":
                d = h.setdefault(op[1], {})
                if op[2] in d:
                    i += int(op[4])
                else:
                    d[op[2]] = op[3]
            elif name == "ADDFROM":
                value = h.get(op[3], {}).get(op[4])
                if value is not None:
                    d = h.setdefault(op[1], {})
                    d[op[2]] = str(int(d.get(op[2], 0)) + int(value))
            elif name == "LINKINCR":
                cid = h.get(op[1], {}).get("cid")
                if cid is not None:
                    d = h.setdefault(creator_key(cid), {})
                    d[op[2]] = str(int(d.get(op[2], 0)) + int(op[3]))
            elif name == "HMAX":
                d = h.setdefault(op[1], {})
                if op[3] > d.get(op[2], ""):
                    d[op[2]] = op[3]
            elif name == "MODLOG":
                self._seq += 1
                log_key = f"{op[2]}:{self._seq:0{SEQ_WIDTH}d}"
                h.setdefault(op[1], {})[log_key] = op[3]
                if op[4]:
                    h.setdefault(op[4], {})[log_key] = "1"
            elif name == "SADDIFKEY":
                if h.get(op[3]):
                    self._s.setdefault(op[1], set()).add(op[2])
            elif name == "HMAXSEQ":
                self._seq += 1
                value = f"{op[3]}:{self._seq:012d}"
                d = h.setdefault(op[1], {})
                if value > d.get(op[2], ""):
                    d[op[2]] = value
            elif name == "APPEAL":
                d = h.setdefault(op[1], {})
                old = int(d.get(op[2], "0"))
                d[op[2]] = op[3]
                delta = int(op[3]) - old
                if delta:
                    it = h.setdefault(op[4], {})
                    it["ov"] = str(int(it.get("ov", 0)) + delta)
                    cid = it.get("cid")
                    if cid is not None:
                        c = h.setdefault(creator_key(cid), {})
                        c["ov"] = str(int(c.get("ov", 0)) + delta)
            elif name == "ZADD":
                z = self._z.setdefault(op[1], {})
                if op[2] != "NX" or op[4] not in z:
                    z[op[4]] = score = float(op[3])
                    heapq.heappush(self._heap, (score, op[4]))
            elif name == "BATCH":
                if any(self._alive(key) for key in op[2:]):
                    return False, 0
                for key in op[2:]:
                    self._ttl[key] = time.monotonic() + int(op[1]) / 1000
            elif name == "SWEEP":
                self._sweep(int(op[1]), int(op[2]))
            else:
                raise ValueError(f"unknown online store operation {name!r}")
        return True, expired

    def _sweep(self, tomb_ms: int, limit: int) -> None:
        """Drop items whose state outlived its last horizon (event time) and leave a
        tombstone so that their stragglers are counted as expired, not as a new item."""
        clock = self._h.get(META_KEY, {}).get("clock")
        if clock is None:
            return
        now_s = int(clock) / 1e9
        z = self._z.get(EXPIRY_KEY, {})
        heap = self._heap  # (score, item), stale entries skipped (lazy deletion)
        due = []
        while heap and heap[0][0] <= now_s and len(due) < limit:
            score, item_id = heapq.heappop(heap)
            if z.get(item_id) == score:
                due.append(item_id)
        for item_id in due:
            for key in item_keys(item_id):
                self._h.pop(key, None)
                self._s.pop(key, None)
                self._b.pop(key, None)
                self._l.pop(key, None)
            self._ttl[tomb_key(item_id)] = time.monotonic() + tomb_ms / 1000
            del z[item_id]

    def _raw(self, item_ids: list[str], moderation: bool = False) -> list[RawItem]:
        with self._lock:
            out = []
            for item_id in item_ids:
                fields = dict(self._h.get(item_key(item_id), {}))
                cid = fields.get("cid")
                creator = dict(self._h.get(creator_key(cid), {})) if cid is not None else None
                log: tuple[tuple[str, str], ...] = ()
                pending: tuple[str, ...] = ()
                if moderation:
                    log = tuple(sorted(self._h.get(f"md:{item_id}", {}).items()))
                    pending = tuple(sorted(self._h.get(f"pa:{item_id}", {})))
                out.append(
                    RawItem(
                        item_id,
                        fields,
                        len(self._s.get(f"v:{item_id}", ())),
                        len(self._s.get(f"r:{item_id}", ())),
                        bytes(self._b.get(f"w:{item_id}", b"")),
                        creator,
                        tuple(self._l.get(f"t:{item_id}", ())),
                        log,
                        pending,
                    )
                )
            return out

    def claim_flags(self, item_id: str, marks: list[str], lease: Lease) -> FlagClaim:
        with self._lock:
            final = self._s.get(flags_key(item_id), set())
            claims = self._h.setdefault(flag_claims_key(item_id), {})
            out = FlagClaim([], [])
            for mark in marks:
                if mark in final:
                    continue
                ends = claims.get(mark)
                if ends is not None and int(ends) > lease.now_ms:
                    out.held.append(mark)
                else:
                    claims[mark] = str(lease.until_ms)
                    out.claimed.append(mark)
            if not claims:
                del self._h[flag_claims_key(item_id)]
            return out

    def mark_flagged(self, item_id: str, marks: list[str]) -> list[str]:
        with self._lock:
            final = self._s.setdefault(flags_key(item_id), set())
            new = [m for m in dict.fromkeys(marks) if m not in final]
            final.update(new)
            self._drop_claims(item_id, marks, None)
            return new

    def release_flags(self, item_id: str, marks: list[str], until_ms: int) -> None:
        with self._lock:
            self._drop_claims(item_id, marks, until_ms)

    def _drop_claims(self, item_id: str, marks: list[str], token: int | None) -> None:
        """Drop the item's claims on `marks` (only those taken with `token`, unless None)."""
        claims = self._h.get(flag_claims_key(item_id))
        if claims is None:
            return
        for mark in marks:
            if token is None or claims.get(mark) == str(token):
                claims.pop(mark, None)
        if not claims:
            del self._h[flag_claims_key(item_id)]

    def _take(self, key: str, leases_key: str, limit: int, lease: Lease | None) -> list[str]:
        """Redis' TAKE_LUA: expired leases back into `key`, then up to `limit` members of
        `key` moved into `leases_key` until `lease.until_ms`."""
        lease = lease or Lease.starting()
        with self._lock:
            members = self._s.setdefault(key, set())
            leased = self._leases.setdefault(leases_key, {})
            back = [m for m, until in leased.items() if until <= lease.now_ms][:limit]
            for member in back:
                del leased[member]
            members.update(back)
            taken = [members.pop() for _ in range(min(limit, len(members)))]
            leased.update(dict.fromkeys(taken, lease.until_ms))
            return taken

    def _release(self, leases_key: str, pairs: Iterable[tuple[str, int | None]]) -> None:
        leased = self._leases.setdefault(leases_key, {})
        for item_id, token in pairs:
            if token is not None and leased.get(item_id) == token:
                del leased[item_id]

    def _clock_ms(self) -> int | None:
        clock = self.clock_ns()
        return None if clock is None else clock // NS_PER_MS

    def take_touched(self, limit: int, lease: Lease | None = None) -> list[str]:
        return self._take(TOUCHED_KEY, TOUCHED_LEASES_KEY, limit, lease)

    def take_horizons(self, limit: int, lease: Lease | None = None) -> list[str]:
        lease = lease or Lease.starting()
        with self._lock:
            clock = self._clock_ms()
            if clock is None:
                return []
            due = sorted((ms, item) for item, ms in self._hz.items() if ms <= clock)[:limit]
            leased = self._leases.setdefault(TOUCHED_LEASES_KEY, {})
            for _, item_id in due:
                del self._hz[item_id]
                leased[item_id] = lease.until_ms
            return [item_id for _, item_id in due]

    def finish_touched(self, done: Sequence[tuple[str, int | None, int | None]]) -> None:
        with self._lock:
            for item_id, _, next_ns in done:
                if next_ns is None:
                    self._hz.pop(item_id, None)
                else:
                    self._hz[item_id] = horizon_ms(next_ns)
            self._release(TOUCHED_LEASES_KEY, ((item, token) for item, token, _ in done))

    def touched_count(self, now_ms: int | None = None) -> int:
        now_ms = Lease.starting().now_ms if now_ms is None else now_ms
        with self._lock:
            leased = self._leases.get(TOUCHED_LEASES_KEY, {})
            clock = self._clock_ms()
            return (
                len(self._s.get(TOUCHED_KEY, ()))
                + sum(1 for until in leased.values() if until <= now_ms)
                + (0 if clock is None else sum(1 for ms in self._hz.values() if ms <= clock))
            )

    def horizons_planned(self) -> int:
        with self._lock:
            return len(self._hz)

    def take_anchored(self, limit: int, lease: Lease | None = None) -> list[str]:
        return self._take(ANCHORED_KEY, ANCHORED_LEASES_KEY, limit, lease)

    def release_anchored(self, item_ids: list[str], until_ms: int) -> None:
        with self._lock:
            self._release(ANCHORED_LEASES_KEY, ((item, until_ms) for item in item_ids))

    def requeue_anchored(self, item_id: str) -> None:
        with self._lock:
            self._leases.setdefault(ANCHORED_LEASES_KEY, {}).pop(item_id, None)
            self._s.setdefault(ANCHORED_KEY, set()).add(item_id)

    def done_anchors(self, item_id: str, keys: list[str]) -> None:
        with self._lock:
            pending = self._h.get(f"pa:{item_id}")
            if pending is not None:
                for key in keys:
                    pending.pop(key, None)
                if not pending:
                    del self._h[f"pa:{item_id}"]

    def clock_ns(self) -> int | None:
        clock = self._h.get(META_KEY, {}).get("clock")
        return None if clock is None else int(clock)

    def live_items(self) -> int:
        """Items with state (for memory reports and expiry checks)."""
        return len(self._z.get(EXPIRY_KEY, {}))
