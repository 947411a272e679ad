"""GET score's Redis read on the event loop: one connection, one command, pipelined.

`RedisStore.snapshot_async` runs one command per request, the read script (EVALSHA), whose
answer is one bulk string (MessagePack). redis-py's asyncio client spent more CPU around
that command (connection pool checkout and release, health checks, `wait_for` timers, its
pure-Python RESP parser) than the read and the scoring together. `ScriptReader` speaks just
that command over one asyncio connection of the running loop: requests write their command
and wait for their answer, which Redis sends in the order of the commands, so concurrent
requests pipeline on the connection without a pool.

Failures are the blocking client's: a refused or lost connection, or no answer within the
socket timeout, fail every request waiting on the connection with ConnectionError or
TimeoutError (which the store reports as StoreUnavailable) and the next request connects
again; an error reply (a script error) is raised as `redis.ResponseError`, as redis-py
does. Plain TCP URLs only (``redis://host:port/db`` with an optional user and password);
the store keeps redis-py's client for other URLs (TLS, unix sockets).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any

# Error replies that mean "not now" rather than "wrong": redis-py raises them as
# BusyLoadingError, a ConnectionError, so the store answers 503.
_UNAVAILABLE_REPLIES = (b"LOADING", b"BUSY", b"MASTERDOWN", b"TRYAGAIN")


def _command(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """Replies in command order: each parsed reply resolves the oldest waiting future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.buffer = bytearray()
        self.lost: Exception | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while buf:
            end = buf.find(b"\r\n")
            if end < 0:
                return
            kind = buf[0]
            if kind == 0x24:  # $: bulk string
                length = int(buf[1:end])
                if length < 0:
                    value: Any = None
                    used = end + 2
                else:
                    used = end + 2 + length + 2
                    if len(buf) < used:
                        return
                    value = bytes(buf[end + 2 : used - 2])
            elif kind == 0x2B:  # +: simple string (AUTH, SELECT)
                value, used = bytes(buf[1:end]), end + 2
            elif kind == 0x2D:  # -: error
                value, used = _error(bytes(buf[1:end])), end + 2
            else:  # no other reply is expected: the stream is not understood
                self._fail(ConnectionError(f"unexpected Redis reply type {chr(kind)!r}"))
                return
            del buf[:used]
            if not self.waiting:
                self._fail(ConnectionError("a Redis reply that no command was waiting for"))
                return
            future = self.waiting.popleft()
            if not future.done():  # its request may have been cancelled
                if isinstance(value, Exception):
                    future.set_exception(value)
                else:
                    future.set_result(value)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}")
        self._fail(self.lost)

    def _fail(self, exc: Exception) -> None:
        self.lost = self.lost or exc
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


def _error(message: bytes) -> Exception:
    import redis

    text = message.decode(errors="replace")
    if message.startswith(_UNAVAILABLE_REPLIES):
        return ConnectionError(f"Redis is not answering commands now: {text}")
    if message.startswith(b"NOSCRIPT"):
        return _NoScript(text)
    return redis.ResponseError(text)


class _NoScript(Exception):
    """The server does not have the script cached (a restart, SCRIPT FLUSH)."""


class ScriptReader:
    """Runs one Lua script (keyless) on a connection of the running event loop."""

    def __init__(
        self,
        host: str,
        port: int,
        script: str,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.script = script.encode()
        self.sha = hashlib.sha1(self.script).hexdigest().encode()
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        # The first request to find no connection opens one; the others wait for it. A
        # finished attempt is not reused: it failed, or its connection has been lost since.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
        setup = []
        if self.password is not None:
            user = [self.username.encode()] if self.username else []
            setup.append(_command(b"AUTH", *user, self.password.encode()))
        if self.db:
            setup.append(_command(b"SELECT", str(self.db).encode()))
        if setup:
            answers = [self._send(protocol, command) for command in setup]
            for answer in answers:
                await self._wait(protocol, answer)
        self._protocol = protocol
        return protocol

    @staticmethod
    def _send(protocol: _Protocol, command: bytes) -> asyncio.Future:
        assert protocol.transport is not None
        future = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        protocol.transport.write(command)
        return future

    async def _wait(self, protocol: _Protocol, future: asyncio.Future) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await future
        except TimeoutError:
            # The connection's later answers would be matched to the wrong requests.
            protocol._fail(TimeoutError(f"no answer from Redis within {self.timeout_s}s"))
            raise TimeoutError(f"no answer from Redis within {self.timeout_s}s") from None

    async def __call__(self, *args: str) -> bytes:
        """The script's answer for ARGV `args` (a bulk string)."""
        argv = [a.encode() for a in args]
        protocol = await self._connection()
        command = _command(b"EVALSHA", self.sha, b"0", *argv)
        try:
            return await self._wait(protocol, self._send(protocol, command))
        except _NoScript:
            # EVAL runs the script and caches it for the next EVALSHA.
            command = _command(b"EVAL", self.script, b"0", *argv)
            return await self._wait(protocol, self._send(protocol, command))

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
