"""The Redis backend: the operations of a batch run in one Lua script, reads in one more.

A batch is one EVALSHA: the script checks the batch id (SET NX PX), applies every operation
and sweeps expired items, so a batch is applied whole or not at all and concurrent workers
never interleave inside one. Keys hold the prefix (setting ``SURFACER_ONLINE_PREFIX``), so
tests and several deployments can share one Redis. Key layout, per item: hash ``i:<id>``,
viewer and reporter sets ``v:<id>`` / ``r:<id>``, window records ``w:<id>`` (a string of
9-byte records, appended), appeals hash ``a:<id>``, comment texts ``t:<id>`` (a sorted set
of ``<ts>:<seq>:<text>`` members, all score 0 so ordered by bytes, trimmed to the latest
`COMMENT_TEXT_LAST`); per creator: hash ``c:<id>``; global:
``meta`` (the clock), ``exp`` (item -> expiry, event time), ``b:<batch id>`` (seen batches,
with a TTL) and ``x:<id>`` (tombstones of expired items, with a TTL).

Item keys also get a wall-clock TTL (twice the item's life) as a backstop should sweeping
stop; the sweep by event time is what normally frees them (it works in replays too, where
event time runs faster than the wall clock).
"""

from __future__ import annotations

from typing import Any

from features.online.errors import StoreUnavailable
from features.online.ops import META_KEY, TOUCHED_KEY, OnlineConfig, creator_key, item_keys
from features.online.snapshot import RawItem
from features.online.store import OnlineStore

APPLY_LUA = r"""
local p = ARGV[1]
local backstop = ARGV[2]
local n = #ARGV
local i = 3
local expired = 0
local function incr(key, field, by)
  redis.call('HINCRBY', key, field, by)
end
while i <= n do
  local name = ARGV[i]
  local nargs = tonumber(ARGV[i + 1])
  local a = i + 2
  i = a + nargs
  if name == 'HINCRBY' then
    incr(p .. ARGV[a], ARGV[a + 1], ARGV[a + 2])
  elseif name == 'HINCRBYFLOAT' then
    redis.call('HINCRBYFLOAT', p .. ARGV[a], ARGV[a + 1], ARGV[a + 2])
  elseif name == 'SADD' then
    local key = p .. ARGV[a]
    for j = a + 1, a + nargs - 1, 500 do
      redis.call('SADD', key, unpack(ARGV, j, math.min(j + 499, a + nargs - 1)))
    end
    redis.call('PEXPIRE', key, backstop)
  elseif name == 'APPEND' then
    redis.call('APPEND', p .. ARGV[a], ARGV[a + 1])
    redis.call('PEXPIRE', p .. ARGV[a], backstop)
  elseif name == 'TEXTS' then
    local key = p .. ARGV[a]
    for j = a + 2, a + nargs - 1, 2 do
      local seq = redis.call('INCR', p .. 'seq')
      redis.call('ZADD', key, 0, ARGV[j] .. ':' .. string.format('%012d', seq) .. ':' .. ARGV[j + 1])
    end
    redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(ARGV[a + 1]) + 1))
    redis.call('PEXPIRE', key, backstop)
  elseif name == 'HSET' then
    redis.call('HSET', p .. ARGV[a], ARGV[a + 1], ARGV[a + 2])
  elseif name == 'GUARD' then
    if redis.call('EXISTS', p .. ARGV[a]) == 1 then
      local skip = tonumber(ARGV[a + 1])
      expired = expired + tonumber(ARGV[a + 2])
      for _ = 1, skip do
        i = i + 2 + tonumber(ARGV[i + 1])
      end
    end
  elseif name == 'HSETNX_THEN' then
    if redis.call('HSETNX', p .. ARGV[a], ARGV[a + 1], ARGV[a + 2]) == 0 then
      for _ = 1, tonumber(ARGV[a + 3]) do
        i = i + 2 + tonumber(ARGV[i + 1])
      end
    end
  elseif name == 'ADDFROM' then
    local v = redis.call('HGET', p .. ARGV[a + 2], ARGV[a + 3])
    if v then incr(p .. ARGV[a], ARGV[a + 1], v) end
  elseif name == 'LINKINCR' then
    local cid = redis.call('HGET', p .. ARGV[a], 'cid')
    if cid then incr(p .. 'c:' .. cid, ARGV[a + 1], ARGV[a + 2]) end
  elseif name == 'HMAX' then
    local cur = redis.call('HGET', p .. ARGV[a], ARGV[a + 1])
    if (not cur) or ARGV[a + 2] > cur then
      redis.call('HSET', p .. ARGV[a], ARGV[a + 1], ARGV[a + 2])
    end
  elseif name == 'HMAXSEQ' then
    local seq = redis.call('INCR', p .. 'seq')
    local v = ARGV[a + 2] .. ':' .. string.format('%012d', seq)
    local cur = redis.call('HGET', p .. ARGV[a], ARGV[a + 1])
    if (not cur) or v > cur then
      redis.call('HSET', p .. ARGV[a], ARGV[a + 1], v)
    end
  elseif name == 'APPEAL' then
    local key = p .. ARGV[a]
    local old = tonumber(redis.call('HGET', key, ARGV[a + 1]) or '0')
    redis.call('HSET', key, ARGV[a + 1], ARGV[a + 2])
    redis.call('PEXPIRE', key, backstop)
    local delta = tonumber(ARGV[a + 2]) - old
    if delta ~= 0 then
      local item = p .. ARGV[a + 3]
      incr(item, 'ov', delta)
      local cid = redis.call('HGET', item, 'cid')
      if cid then incr(p .. 'c:' .. cid, 'ov', delta) end
    end
  elseif name == 'ZADD' then
    if ARGV[a + 1] == 'NX' then
      redis.call('ZADD', p .. ARGV[a], 'NX', ARGV[a + 2], ARGV[a + 3])
    else
      redis.call('ZADD', p .. ARGV[a], ARGV[a + 2], ARGV[a + 3])
    end
    redis.call('PEXPIRE', p .. 'i:' .. ARGV[a + 3], backstop)
  elseif name == 'BATCH' then
    if not redis.call('SET', p .. ARGV[a], '1', 'NX', 'PX', ARGV[a + 1]) then
      return {0, 0}
    end
  elseif name == 'SWEEP' then
    local clock = redis.call('HGET', p .. 'meta', 'clock')
    if clock then
      -- padded ns -> seconds; a double keeps the microseconds of today's dates
      local now = tonumber(string.sub(clock, 1, -10)) + tonumber(string.sub(clock, -9)) / 1e9
      local due = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'LIMIT', 0,
                             tonumber(ARGV[a + 1]))
      for _, id in ipairs(due) do
        redis.call('DEL', p .. 'i:' .. id, p .. 'v:' .. id, p .. 'r:' .. id, p .. 'w:' .. id,
                   p .. 'a:' .. id, p .. 'f:' .. id, p .. 't:' .. id)
        redis.call('SET', p .. 'x:' .. id, '1', 'PX', ARGV[a])
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
local p = ARGV[1]
local out = {}
for k = 2, #ARGV do
  local id = ARGV[k]
  local fields = redis.call('HGETALL', p .. 'i:' .. id)
  local cid = nil
  for j = 1, #fields, 2 do
    if fields[j] == 'cid' then cid = fields[j + 1] end
  end
  local creator = {}
  if cid then creator = redis.call('HGETALL', p .. 'c:' .. cid) end
  out[#out + 1] = {fields, redis.call('SCARD', p .. 'v:' .. id),
                   redis.call('SCARD', p .. 'r:' .. id),
                   redis.call('GET', p .. 'w:' .. id) or '', creator,
                   redis.call('ZRANGE', p .. 't:' .. id, 0, -1)}
end
return out
"""


def _flat(values: list[Any]) -> dict[str, str]:
    it = iter(values)
    return {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}


class RedisStore(OnlineStore):
    """Online state in Redis: shared by workers and service instances."""

    backend = "redis"

    def __init__(
        self, url: str, config: OnlineConfig | None = None, *, prefix: str = "surfacer:"
    ) -> None:
        import redis

        super().__init__(config)
        self.url = url
        self.prefix = prefix
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        self._apply = self.client.register_script(APPLY_LUA)
        self._read = self.client.register_script(READ_LUA)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise StoreUnavailable(
                f"online store Redis at {self._where()} unavailable: {exc}"
            ) from None

    def _where(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    def _run(self, ops: list[tuple[Any, ...]]) -> tuple[bool, int]:
        backstop = str(max(1000, round(2 * self.config.life_ns / 1e6)))
        argv: list[Any] = [self.prefix, backstop]
        for op in ops:
            argv.append(op[0])
            argv.append(len(op) - 1)
            argv.extend(op[1:])
        applied, expired = self._call(self._apply, keys=[], args=argv)
        return bool(applied), int(expired)

    def _raw(self, item_ids: list[str]) -> list[RawItem]:
        if not item_ids:
            return []
        rows = self._call(self._read, keys=[], args=[self.prefix, *item_ids])
        out = []
        for item_id, (fields, nv, nr, blob, creator, texts) in zip(item_ids, rows, strict=True):
            out.append(
                RawItem(
                    item_id,
                    _flat(fields),
                    int(nv),
                    int(nr),
                    bytes(blob),
                    _flat(creator) or None,
                    tuple(t.decode() for t in texts),
                )
            )
        return out

    def mark_flagged(self, item_id: str, issues: list[str]) -> list[str]:
        if not issues:
            return []
        key = self.prefix + f"f:{item_id}"
        pipe = self.client.pipeline(transaction=False)
        for issue in issues:
            pipe.sadd(key, issue)
        pipe.pexpire(key, max(1000, round(2 * self.config.life_ns / 1e6)))
        added = self._call(pipe.execute)
        return [i for i, n in zip(issues, added, strict=False) if n]

    def take_touched(self, limit: int) -> list[str]:
        taken = self._call(self.client.spop, self.prefix + TOUCHED_KEY, limit) or []
        return [t.decode() for t in taken]

    def unmark_flagged(self, item_id: str, issues: list[str]) -> None:
        if issues:
            self._call(self.client.srem, self.prefix + f"f:{item_id}", *issues)

    def clock_ns(self) -> int | None:
        clock = self._call(self.client.hget, self.prefix + META_KEY, "clock")
        return None if clock is None else int(clock)

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
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
