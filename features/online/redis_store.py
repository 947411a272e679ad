"""The Redis backend: the operations of a batch run in Lua scripts, reads in one more.

A batch is one EVALSHA per part (`Plan.parts`: whole item groups, at most `PART_WEIGHT`
operation values, about 1 ms of Redis, so reads are not held up behind a long script):
each checks its part's key (SET NX PX), applies its operations, and the last sweeps
expired items, so a part is applied whole or not at all, concurrent workers never
interleave inside one, and a batch re-sent after a crash between its parts applies only
the parts that had not run. Keys hold the prefix (setting ``SURFACER_ONLINE_PREFIX``), so
tests and several deployments can share one Redis. Key layout, per item: hash ``i:<id>``,
viewer and reporter sets ``v:<id>`` / ``r:<id>``, window records ``w:<id>`` (a string of
9-byte records, appended), appeals hash ``a:<id>``, comment texts ``t:<id>`` (a sorted set
of ``<ts>:<seq>:<text>`` members, all score 0 so ordered by bytes, trimmed to the latest
`COMMENT_TEXT_LAST`), the flags queued for review ``f:<id>`` (a set of final marks: an
issue, or ``<issue>@<action key>``) and the flags being queued ``fc:<id>`` (a hash: mark
-> wall ms its claim ends); per creator: hash ``c:<id>``; global:
``meta`` (the clock), ``exp`` (item -> expiry, event time), ``b:<batch id>`` (seen batches,
with a TTL) and ``x:<id>`` (tombstones of expired items, with a TTL); the re-scorer's
``touched`` / ``anchored`` sets, their in-flight leases ``touched:leased`` /
``anchored:leased`` (item -> wall ms the lease ends) and ``hz`` (scored item -> its next
horizon, store-clock ms).

Item keys also get a wall-clock TTL (twice the item's life) as a backstop should sweeping
stop; the sweep by event time is what normally frees them (it works in replays too, where
event time runs faster than the wall clock).

A flag is marked in two phases, so that a re-scorer killed at any point loses none: first
claimed (CLAIM_LUA: a mark in ``f:<id>`` is final and never claimed; one with a claim in
``fc:<id>`` that has not ended is held by another; any other is claimed until the
caller's lease ends), and only once the spool has the flag made final (``SADD f:<id>``
and ``HDEL fc:<id>`` in one MULTI). A failed append gives the claim back (RELEASE_LUA,
only a claim still carrying the caller's token, its end); a dead claimer's claim ends,
and the next score of the item (its lease brings it back) claims and queues the flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import msgpack

from features.online.errors import StoreUnavailable
from features.online.ops import (
    ANCHORED_KEY,
    ANCHORED_LEASES_KEY,
    HORIZON_KEY,
    META_KEY,
    TOUCHED_KEY,
    TOUCHED_LEASES_KEY,
    OnlineConfig,
    Part,
    Plan,
    creator_key,
    flag_claims_key,
    flags_key,
    item_keys,
    plan_tables,
)
from features.online.snapshot import RawItem
from features.online.store import (
    ApplyResult,
    FlagClaim,
    Lease,
    OnlineStore,
    apply_result,
    horizon_ms,
)

if TYPE_CHECKING:
    import pandas as pd

PART_WEIGHT = 1500

APPLY_LUA = r"""
-- ARGV: prefix, backstop TTL (ms), the operations as one MessagePack array of arrays
-- (decoded here in C: shipping one blob instead of one argument per value is what keeps
-- the client's command packing off the ingest profile). Packed without the bin/str8
-- types (use_bin_type=False), which the cmsgpack of Redis 7.0 cannot read.
local p = ARGV[1]
local backstop = ARGV[2]
local ops = cmsgpack.unpack(ARGV[3])
local n = #ops
local i = 1
local expired = 0
local function incr(key, field, by)
  redis.call('HINCRBY', key, field, by)
end
while i <= n do
  local op = ops[i]
  local name = op[1]
  local nargs = #op - 1
  i = i + 1
  if name == 'HINCRBY' then
    incr(p .. op[2], op[3], op[4])
  elseif name == 'HINCRBYFLOAT' then
    redis.call('HINCRBYFLOAT', p .. op[2], op[3], op[4])
  elseif name == 'SADD' then
    local key = p .. op[2]
    for j = 3, nargs + 1, 500 do
      redis.call('SADD', key, unpack(op, j, math.min(j + 499, nargs + 1)))
    end
    redis.call('PEXPIRE', key, backstop)
  elseif name == 'APPEND' then
    redis.call('APPEND', p .. op[2], op[3])
    redis.call('PEXPIRE', p .. op[2], backstop)
  elseif name == 'TEXTS' then
    local key = p .. op[2]
    for j = 4, nargs + 1, 2 do
      local seq = redis.call('INCR', p .. 'seq')
      redis.call('ZADD', key, 0, op[j] .. ':' .. string.format('%012d', seq) .. ':' .. op[j + 1])
    end
    redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(op[3]) + 1))
    redis.call('PEXPIRE', key, backstop)
  elseif name == 'HSET' then
    redis.call('HSET', p .. op[2], op[3], op[4])
  elseif name == 'GUARD' then
    if redis.call('EXISTS', p .. op[2]) == 1 then
      expired = expired + tonumber(op[4])
      i = i + tonumber(op[3])
    end
  elseif name == 'HSETNX_THEN' then
    if redis.call('HSETNX', p .. op[2], op[3], op[4]) == 0 then
      i = i + tonumber(op[5])
    end
  elseif name == 'ADDFROM' then
    local v = redis.call('HGET', p .. op[4], op[5])
    if v then incr(p .. op[2], op[3], v) end
  elseif name == 'LINKINCR' then
    local cid = redis.call('HGET', p .. op[2], 'cid')
    if cid then incr(p .. 'c:' .. cid, op[3], op[4]) end
  elseif name == 'HMAX' then
    local cur = redis.call('HGET', p .. op[2], op[3])
    if (not cur) or op[4] > cur then
      redis.call('HSET', p .. op[2], op[3], op[4])
    end
  elseif name == 'MODLOG' then
    -- op[2]: log key, op[3]: padded ts, op[4]: the row, op[5]: pending-anchor key or ''
    local seq = redis.call('INCR', p .. 'seq')
    local field = op[3] .. ':' .. string.format('%012d', seq)
    redis.call('HSET', p .. op[2], field, op[4])
    redis.call('PEXPIRE', p .. op[2], backstop)
    if op[5] ~= '' then
      redis.call('HSET', p .. op[5], field, '1')
      redis.call('PEXPIRE', p .. op[5], backstop)
    end
  elseif name == 'SADDIFKEY' then
    if redis.call('EXISTS', p .. op[4]) == 1 then
      redis.call('SADD', p .. op[2], op[3])
    end
  elseif name == 'HMAXSEQ' then
    local seq = redis.call('INCR', p .. 'seq')
    local v = op[4] .. ':' .. string.format('%012d', seq)
    local cur = redis.call('HGET', p .. op[2], op[3])
    if (not cur) or v > cur then
      redis.call('HSET', p .. op[2], op[3], v)
    end
  elseif name == 'APPEAL' then
    local key = p .. op[2]
    local old = tonumber(redis.call('HGET', key, op[3]) or '0')
    redis.call('HSET', key, op[3], op[4])
    redis.call('PEXPIRE', key, backstop)
    local delta = tonumber(op[4]) - old
    if delta ~= 0 then
      local item = p .. op[5]
      incr(item, 'ov', delta)
      local cid = redis.call('HGET', item, 'cid')
      if cid then incr(p .. 'c:' .. cid, 'ov', delta) end
    end
  elseif name == 'ZADD' then
    if op[3] == 'NX' then
      redis.call('ZADD', p .. op[2], 'NX', op[4], op[5])
    else
      redis.call('ZADD', p .. op[2], op[4], op[5])
    end
    redis.call('PEXPIRE', p .. 'i:' .. op[5], backstop)
  elseif name == 'BATCH' then
    -- op[2]: TTL (ms); op[3..]: batch keys. Any seen: nothing of this call is applied.
    for j = 3, nargs + 1 do
      if redis.call('EXISTS', p .. op[j]) == 1 then
        return {0, 0}
      end
    end
    for j = 3, nargs + 1 do
      redis.call('SET', p .. op[j], '1', 'PX', op[2])
    end
  elseif name == 'SWEEP' then
    local clock = redis.call('HGET', p .. 'meta', 'clock')
    if clock then
      -- padded ns -> seconds; a double keeps the microseconds of today's dates
      local now = tonumber(string.sub(clock, 1, -10)) + tonumber(string.sub(clock, -9)) / 1e9
      local due = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'LIMIT', 0,
                             tonumber(op[3]))
      for _, id in ipairs(due) do
        redis.call('DEL', p .. 'i:' .. id, p .. 'v:' .. id, p .. 'r:' .. id, p .. 'w:' .. id,
                   p .. 'a:' .. id, p .. 'f:' .. id, p .. 'fc:' .. id, p .. 't:' .. id,
                   p .. 'md:' .. id, p .. 'pa:' .. id)
        redis.call('SET', p .. 'x:' .. id, '1', 'PX', op[2])
        redis.call('ZREM', p .. 'exp', id)
      end
    end
  else
    return redis.error_reply('unknown online store operation ' .. name)
  end
end
return {1, expired}
"""

READ_LUA = r"""
-- The clock first, then each item's state: one round trip per read, and atomic, so the
-- clock the snapshot's as_of comes from is the one of the state it reads. Answered as one
-- MessagePack string (decoded in C by msgpack): as a RESP array of arrays, the ~30 values
-- of an item cost redis-py's pure-Python parser more CPU than the rest of a GET score.
-- ARGV: prefix, '1' to add each item's moderation log and pending anchors (else '0'), ids.
local p = ARGV[1]
local moderation = ARGV[2] == '1'
local out = {redis.call('HGET', p .. 'meta', 'clock') or ''}
for k = 3, #ARGV do
  local id = ARGV[k]
  local fields = redis.call('HGETALL', p .. 'i:' .. id)
  local cid = nil
  for j = 1, #fields, 2 do
    if fields[j] == 'cid' then cid = fields[j + 1] end
  end
  local creator = {}
  if cid then creator = redis.call('HGETALL', p .. 'c:' .. cid) end
  local row = {fields, redis.call('SCARD', p .. 'v:' .. id),
               redis.call('SCARD', p .. 'r:' .. id),
               redis.call('GET', p .. 'w:' .. id) or '', creator,
               redis.call('ZRANGE', p .. 't:' .. id, 0, -1)}
  if moderation then
    row[7] = redis.call('HGETALL', p .. 'md:' .. id)
    row[8] = redis.call('HKEYS', p .. 'pa:' .. id)
  end
  out[#out + 1] = row
end
return cmsgpack.pack(out)
"""


# The re-scorer's leases (`OnlineStore.take_touched`). Each script is one atomic step, so
# an item is always in its set, in flight, or (horizons) planned, never nowhere: a taker
# killed after Redis ran the script, or whose reply was lost, leaves its items in flight,
# and the next take after their lease ended puts them back. Scripts move at most
# LEASE_CHUNK items each: taking or finishing a pass's 2,000 items in one script held
# Redis (and every GET score behind it) for 4-7 ms on this project's machine.
LEASE_CHUNK = 200
TAKE_LUA = r"""
-- KEYS: the set, its in-flight sorted set. ARGV: now (wall ms), lease end (ms), count.
local back = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(back) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('SADD', KEYS[1], id)
end
local taken = redis.call('SPOP', KEYS[1], ARGV[3])
for _, id in ipairs(taken) do
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
return taken
"""

TAKE_HORIZONS_LUA = r"""
-- KEYS: horizon set, in-flight set, meta. ARGV: lease end (ms), count.
local clock = redis.call('HGET', KEYS[3], 'clock')
if not clock then return {} end
local ms = tonumber(string.sub(clock, 1, -7)) or 0  -- padded ns -> ms, rounded down
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms, 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
end
return due
"""

FINISH_LUA = r"""
-- KEYS: in-flight set[, horizon set]. ARGV: (item, lease token or '', next horizon ms or '')
-- triples (without a horizon set: pairs). A lease is released only while the token is
-- still its end: another taker's later lease on the item is left alone.
local step = (#KEYS == 2) and 3 or 2
for k = 1, #ARGV, step do
  local id, token = ARGV[k], ARGV[k + 1]
  if #KEYS == 2 then
    if ARGV[k + 2] == '' then
      redis.call('ZREM', KEYS[2], id)
    else
      redis.call('ZADD', KEYS[2], ARGV[k + 2], id)
    end
  end
  if token ~= '' and tonumber(redis.call('ZSCORE', KEYS[1], id)) == tonumber(token) then
    redis.call('ZREM', KEYS[1], id)
  end
end
return 0
"""

BACKLOG_LUA = r"""
-- KEYS: touched, its in-flight set, horizon set, meta. ARGV: now (wall ms).
local n = redis.call('SCARD', KEYS[1]) + redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1])
local clock = redis.call('HGET', KEYS[4], 'clock')
if clock then
  n = n + redis.call('ZCOUNT', KEYS[3], '-inf', tonumber(string.sub(clock, 1, -7)) or 0)
end
return n
"""


# Queueing a flag is two-phase (`OnlineStore.claim_flags`, then `mark_flagged` once the
# spool took it): a re-scorer killed between the two leaves a claim that ends, never a
# final mark without its flag in the spool.
CLAIM_LUA = r"""
-- KEYS: final marks f:<item>, claims fc:<item>. ARGV: now (wall ms), claim end (ms),
-- backstop TTL (ms), marks. Returns {claimed, held}: a mark not final is claimed unless a
-- claim that has not ended holds it.
local now = tonumber(ARGV[1])
local claimed, held = {}, {}
for k = 4, #ARGV do
  local mark = ARGV[k]
  if redis.call('SISMEMBER', KEYS[1], mark) == 0 then
    local ends = tonumber(redis.call('HGET', KEYS[2], mark))
    if ends and ends > now then
      held[#held + 1] = mark
    else
      redis.call('HSET', KEYS[2], mark, ARGV[2])
      claimed[#claimed + 1] = mark
    end
  end
end
if #claimed > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return {claimed, held}
"""

RELEASE_LUA = r"""
-- KEYS: claims fc:<item>. ARGV: the claim's token (its end, ms), marks. Only claims that
-- still carry the token are dropped.
for k = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[k]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[k])
  end
end
return 0
"""


def _flat(values: list[Any]) -> dict[str, str]:
    it = iter(values)
    return {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}


def _parse_read(item_ids: list[str], reply: bytes) -> tuple[int | None, list[RawItem]]:
    """The clock and the items' raw state from READ_LUA's answer (MessagePack; Lua strings
    come back as bytes, an empty Lua table as an empty array)."""
    clock, *rows = msgpack.unpackb(reply, raw=True)
    out = []
    for item_id, (fields, nv, nr, blob, creator, texts, *moderation) in zip(
        item_ids, rows, strict=True
    ):
        log: tuple[tuple[str, str], ...] = ()
        pending: tuple[str, ...] = ()
        if moderation:
            log = tuple(sorted(_flat(moderation[0]).items()))
            pending = tuple(sorted(k.decode() for k in moderation[1]))
        out.append(
            RawItem(
                item_id,
                _flat(fields),
                int(nv),
                int(nr),
                bytes(blob),
                _flat(creator) or None,
                tuple(t.decode() for t in texts),
                log,
                pending,
            )
        )
    return (int(clock) if clock else None), out


# Connection options of both clients (the blocking one and GET score's asyncio one).
CLIENT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2, "health_check_interval": 30}


class RedisStore(OnlineStore):
    """Online state in Redis: shared by workers and service instances."""

    backend = "redis"
    # Operation values per script (`Plan.parts`). Measured on this project's 2-core
    # machine: a 1,000-event message planned to ~5,600 values and ran 3.1 ms as one script
    # on an idle machine, 0.55 ms per 1,000 values; so parts of 1,500 values block Redis
    # for about 1 ms, and the fixed cost of a script (~0.2 ms with its round trip) stays
    # small beside that. A constant, not a setting: a batch re-sent after a crash must be
    # cut as it was the first time, or its parts' keys would not match.
    part_weight = PART_WEIGHT

    def __init__(
        self, url: str, config: OnlineConfig | None = None, *, prefix: str = "surfacer:"
    ) -> None:
        import redis

        super().__init__(config)
        self.url = url
        self.prefix = prefix
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self.client = redis.Redis.from_url(url, **CLIENT_OPTIONS)
        self._apply = self.client.register_script(APPLY_LUA)
        self._read_script = self.client.register_script(READ_LUA)
        self._take_script = self.client.register_script(TAKE_LUA)
        self._horizons_script = self.client.register_script(TAKE_HORIZONS_LUA)
        self._finish_script = self.client.register_script(FINISH_LUA)
        self._backlog_script = self.client.register_script(BACKLOG_LUA)
        self._claim_script = self.client.register_script(CLAIM_LUA)
        self._release_script = self.client.register_script(RELEASE_LUA)
        self._sender: ThreadPoolExecutor | None = None  # apply_many's, made on first use
        self._async: tuple[Any, Any, Any] | None = None  # (loop, client, read script)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"online store Redis at {self._where()} unavailable: {exc}")

    def _where(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    def _backstop(self) -> str:
        return str(max(1000, round(2 * self.config.life_ns / 1e6)))

    def _run(self, ops: list[tuple[Any, ...]]) -> tuple[bool, int]:
        blob = msgpack.packb(ops, use_bin_type=False)
        args = [self.prefix, self._backstop(), blob]
        applied, expired = self._call(self._apply, keys=[], args=args)
        return bool(applied), int(expired)

    def _run_many(self, op_lists: list[list[tuple[Any, ...]]]) -> list[tuple[bool, int]]:
        """The op lists as scripts in one pipelined round trip, run in order. Redis reads a
        pipeline in chunks and serves other clients between them, so the parts of a batch
        (`Plan.parts`) still let reads in between."""
        if len(op_lists) == 1:
            return [self._run(op_lists[0])]
        from redis.exceptions import NoScriptError

        backstop = self._backstop()
        blobs = [msgpack.packb(ops, use_bin_type=False) for ops in op_lists]

        def send(todo: list[int]) -> list[Any]:
            # EVALSHA itself: a pipeline running a registered Script first asks SCRIPT
            # EXISTS, one more round trip per call
            pipe = self.client.pipeline(transaction=False)
            for k in todo:
                pipe.evalsha(self._apply.sha, 0, self.prefix, backstop, blobs[k])
            return pipe.execute(raise_on_error=False)

        answers = self._call(send, list(range(len(blobs))))
        missing = [k for k, a in enumerate(answers) if isinstance(a, NoScriptError)]
        if missing:  # Redis restarted or its scripts were flushed: load, run those again
            self._apply.sha = self._call(self.client.script_load, APPLY_LUA)
            for k, a in zip(missing, self._call(send, missing), strict=True):
                answers[k] = a
        for a in answers:
            if isinstance(a, Exception):
                raise self._unavailable(a) if isinstance(a, self._errors) else a
        return [(bool(a), int(e)) for a, e in answers]

    def apply_many(
        self, batches: Sequence[tuple[Iterable[tuple[str, pd.DataFrame]], str | None]]
    ) -> list[ApplyResult]:
        """`apply` for several batches, each its own atomic, idempotent script, with the
        planning here overlapping the scripts in Redis: a batch's script is sent (by one
        sender thread, so the scripts run in the order given) as soon as it is planned,
        while the next batch is planned. Planning then running every batch one after the
        other kept one of the two processes idle at a time (the stream consumer spent about
        as long waiting for Redis as planning). Redis runs other clients' commands between
        the scripts. StoreUnavailable: raised after every sent script answered or failed
        (some may have been applied; their batch ids make a retry a no-op)."""
        if self._sender is None:
            self._sender = ThreadPoolExecutor(1, thread_name_prefix="online-redis-apply")
        sent: list[tuple[Plan, list[Part], Future[list[tuple[bool, int]]]]] = []
        try:
            for tables, batch_id in batches:
                plan = plan_tables(tables, self.config)
                parts = plan.parts(batch_id, self.config, self.part_weight)
                sent.append(
                    (plan, parts, self._sender.submit(self._run_many, [p.ops for p in parts]))
                )
        finally:
            wait([f for _, _, f in sent])
        return [apply_result(plan, parts, f.result()) for plan, parts, f in sent]

    def _raw(self, item_ids: list[str], moderation: bool = False) -> list[RawItem]:
        return self._read(item_ids, moderation)[1] if item_ids else []

    def _read(
        self, item_ids: list[str], moderation: bool = False
    ) -> tuple[int | None, list[RawItem]]:
        flag = "1" if moderation else "0"
        reply = self._call(self._read_script, keys=[], args=[self.prefix, flag, *item_ids])
        return _parse_read(item_ids, reply)

    async def snapshot_async(self, item_id: str) -> dict[str, Any] | None:
        """`snapshot(item_id)` on the running event loop, without a thread (with Python
        datetimes, as `OnlineStore.snapshot_async`).

        GET score is latency-bound: handing the read to a worker thread (as the other stores
        do) cost two thread wake-ups and GIL hand-offs per request on top of the round trip,
        and on a loaded machine each wake-up can wait a scheduler time slice. The read is
        `features.online.redis_read.ScriptReader` (one pipelined connection), or redis-py's
        asyncio client for URLs it does not speak."""
        try:
            reply = await self._async_read()(self.prefix, "0", item_id)
        except (*self._errors, OSError) as exc:  # OSError: ScriptReader's connection errors
            raise self._unavailable(exc) from None
        clock, raws = _parse_read([item_id], reply)
        return self._assemble_all(clock, raws, None, python_times=True)[0]

    def _async_read(self) -> Any:
        """READ_LUA on the running loop, as a coroutine function of ARGV (made on first use; a
        connection belongs to the loop that opened it, so a new loop gets its own)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis

            from features.online.redis_read import ScriptReader

            pool = self.client.connection_pool
            kw = pool.connection_kwargs
            if pool.connection_class is redis.Connection:  # plain TCP
                reader = ScriptReader(
                    kw.get("host", "localhost"),
                    int(kw.get("port", 6379)),
                    READ_LUA,
                    db=int(kw.get("db", 0) or 0),
                    username=kw.get("username"),
                    password=kw.get("password"),
                    timeout_s=float(CLIENT_OPTIONS["socket_timeout"]),
                    connect_timeout_s=float(CLIENT_OPTIONS["socket_connect_timeout"]),
                )
                self._async = (loop, reader, reader)
            else:
                import redis.asyncio

                client = redis.asyncio.Redis.from_url(self.url, **CLIENT_OPTIONS)
                script = client.register_script(READ_LUA)

                async def read(*args: str) -> Any:
                    return await script(keys=[], args=list(args))

                self._async = (loop, client, read)
        return self._async[2]

    async def aclose(self) -> None:
        if self._async is not None and self._async[0] is asyncio.get_running_loop():
            closer = self._async[1]
            if hasattr(closer, "aclose"):
                await closer.aclose()
            else:
                closer.close()
        self._async = None

    def claim_flags(self, item_id: str, marks: list[str], lease: Lease) -> FlagClaim:
        if not marks:
            return FlagClaim([], [])
        keys = self._keys(flags_key(item_id), flag_claims_key(item_id))
        args = [lease.now_ms, lease.until_ms, self._backstop(), *marks]
        claimed, held = self._call(self._claim_script, keys=keys, args=args)
        return FlagClaim([m.decode() for m in claimed], [m.decode() for m in held])

    def mark_flagged(self, item_id: str, marks: list[str]) -> list[str]:
        if not marks:
            return []
        key = self.prefix + flags_key(item_id)
        pipe = self.client.pipeline(transaction=True)  # MULTI: final and unclaimed at once
        for mark in marks:
            pipe.sadd(key, mark)
        pipe.pexpire(key, int(self._backstop()))
        pipe.hdel(self.prefix + flag_claims_key(item_id), *marks)
        added = self._call(pipe.execute)
        return [m for m, n in zip(marks, added, strict=False) if n]

    def release_flags(self, item_id: str, marks: list[str], until_ms: int) -> None:
        if marks:
            keys = self._keys(flag_claims_key(item_id))
            self._call(self._release_script, keys=keys, args=[until_ms, *marks])

    def _keys(self, *names: str) -> list[str]:
        return [self.prefix + name for name in names]

    def _chunked(self, script: Any, keys: list[str], args: list[Any], limit: int) -> list[str]:
        """Run a take script (its last argument the count) LEASE_CHUNK items at a time
        until `limit` items are taken or one comes back short."""
        out: list[str] = []
        while len(out) < limit:
            n = min(LEASE_CHUNK, limit - len(out))
            taken = self._call(script, keys=keys, args=[*args, n]) or []
            out += [t.decode() for t in taken]
            if len(taken) < n:
                break
        return out

    def _take(self, key: str, leases_key: str, limit: int, lease: Lease | None) -> list[str]:
        lease = lease or Lease.starting()
        keys = self._keys(key, leases_key)
        return self._chunked(self._take_script, keys, [lease.now_ms, lease.until_ms], limit)

    def take_touched(self, limit: int, lease: Lease | None = None) -> list[str]:
        return self._take(TOUCHED_KEY, TOUCHED_LEASES_KEY, limit, lease)

    def take_horizons(self, limit: int, lease: Lease | None = None) -> list[str]:
        lease = lease or Lease.starting()
        keys = self._keys(HORIZON_KEY, TOUCHED_LEASES_KEY, META_KEY)
        return self._chunked(self._horizons_script, keys, [lease.until_ms], limit)

    def _finish(self, keys: list[str], rows: list[list[Any]]) -> None:
        """FINISH_LUA over `rows` (each an item's arguments), LEASE_CHUNK items a script."""
        for lo in range(0, len(rows), LEASE_CHUNK):
            args = [v for row in rows[lo : lo + LEASE_CHUNK] for v in row]
            self._call(self._finish_script, keys=keys, args=args)

    def finish_touched(self, done: Sequence[tuple[str, int | None, int | None]]) -> None:
        rows = [
            [item_id, "" if token is None else token, "" if nxt is None else horizon_ms(nxt)]
            for item_id, token, nxt in done
        ]
        self._finish(self._keys(TOUCHED_LEASES_KEY, HORIZON_KEY), rows)

    def touched_count(self, now_ms: int | None = None) -> int:
        now_ms = Lease.starting().now_ms if now_ms is None else now_ms
        keys = self._keys(TOUCHED_KEY, TOUCHED_LEASES_KEY, HORIZON_KEY, META_KEY)
        return int(self._call(self._backlog_script, keys=keys, args=[now_ms]))

    def horizons_planned(self) -> int:
        return int(self._call(self.client.zcard, self.prefix + HORIZON_KEY))

    def take_anchored(self, limit: int, lease: Lease | None = None) -> list[str]:
        return self._take(ANCHORED_KEY, ANCHORED_LEASES_KEY, limit, lease)

    def release_anchored(self, item_ids: list[str], until_ms: int) -> None:
        rows = [[item_id, until_ms] for item_id in item_ids]
        self._finish(self._keys(ANCHORED_LEASES_KEY), rows)

    def requeue_anchored(self, item_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.prefix + ANCHORED_KEY, item_id)
        pipe.zrem(self.prefix + ANCHORED_LEASES_KEY, item_id)
        self._call(pipe.execute)

    def done_anchors(self, item_id: str, keys: list[str]) -> None:
        if keys:
            self._call(self.client.hdel, self.prefix + f"pa:{item_id}", *keys)

    def clock_ns(self) -> int | None:
        clock = self._call(self.client.hget, self.prefix + META_KEY, "clock")
        return None if clock is None else int(clock)

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None
        self.client.close()

    def live_items(self) -> int:
        return int(self._call(self.client.zcard, self.prefix + "exp"))

    def memory_bytes(self, item_id: str) -> int:
        """Bytes Redis uses for one item's keys (MEMORY USAGE, summed)."""
        keys = [self.prefix + k for k in item_keys(item_id)]
        return sum(int(self._call(self.client.memory_usage, k) or 0) for k in keys)

    def clear(self) -> int:
        """Delete every key under the prefix (tests, benches); returns how many."""
        n = 0
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            n += int(self.client.delete(key))
        return n


__all__ = ["RedisStore", "creator_key"]
