"""Consume the platform's event bus into the online store: Redis Streams with a consumer
group, or NATS JetStream with a durable pull consumer (`consume_nats`, same rules).

A message is one batch of one table: fields ``table`` (events, items, creators,
moderation, appeals) and ``body`` (JSON ``{"rows": [...]}`` or ``{"columns": {...}}``, the
ingest API's body), optionally ``batch_id``. It is applied through the same code as the
API (`features.online.ingest.ingest`) with the batch id ``<stream>/<message id>`` unless
the message names one, and acknowledged (XACK) only after it was applied. A consumer that
dies before acknowledging gets the message again when it restarts (its pending entries
are read first; a consumer under another name claims entries idle longer than
`claim_idle_ms`), and the batch id makes the second application a no-op: every event
counts once. A message that breaks the contract is acknowledged and copied with the
problems to the dead-letter stream ``<stream>:dead``; while the store is unreachable,
nothing is acknowledged and the consumer retries.

URL: ``redis://host:port/db?stream=surfacer:events&group=surfacer-ingest&consumer=NAME``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson

from features.online.errors import Batch, BatchRejected, StoreUnavailable

log = logging.getLogger("serving.stream")

DEFAULT_STREAM = "surfacer:events"
DEFAULT_GROUP = "surfacer-ingest"


@dataclass(frozen=True)
class StreamSource:
    """Where to consume: the Redis URL (without the query) and the stream names."""

    redis_url: str
    stream: str
    group: str
    consumer: str

    @classmethod
    def parse(cls, url: str) -> StreamSource:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"stream URL must be redis://host:port/db?stream=NAME&group=NAME, got {url!r}"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"stream", "group", "consumer"}
        if unknown:
            raise ValueError(f"unknown stream URL parameter(s) {sorted(unknown)} in {url!r}")
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(
            base,
            query.get("stream", DEFAULT_STREAM),
            query.get("group", DEFAULT_GROUP),
            query.get("consumer", f"ingest-{socket.gethostname()}"),
        )


class StreamUnavailable(RuntimeError):
    """The stream's server (Redis or NATS) cannot be reached when a consumer starts."""


@dataclass
class ConsumerStats:
    messages: int = 0
    rows: int = 0
    duplicates: int = 0
    rejected: int = 0
    started: float = field(default_factory=time.monotonic)


def message_batch(stream: str, msg_id: str, fields: dict[bytes, bytes]) -> tuple[Batch, str]:
    """The batch a stream message carries and its idempotence id."""
    table = fields.get(b"table", b"").decode()
    try:
        body = orjson.loads(fields.get(b"body", b""))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"message body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError('message body must be {"rows": [...]} or {"columns": {...}}')
    batch_id = fields.get(b"batch_id")
    return (
        Batch(table, rows=body.get("rows"), columns=body.get("columns")),
        batch_id.decode() if batch_id else f"{stream}/{msg_id}",
    )


Message = tuple[bytes, dict[bytes, bytes]]
ApplyMany = Callable[[list[tuple[list[Batch], str]]], list[Any]]


class StreamConsumer:
    """A Redis Streams consumer-group member applying whole reads with `apply_many`.

    `apply_many([(batches, batch_id), ...])` is `features.online.ingest.ingest_many`: every
    message of a read is checked and applied on its own (atomic, idempotent under its own
    batch id) but all of them in one round trip; it answers an ApplyResult or the
    BatchRejected that kept the message out, per message. Then one XACK acknowledges the
    read (after the apply answered, never before), with the rejected messages copied to the
    dead-letter stream in the same pipeline. Messages carry batches of rows, so a read of
    `count` messages is thousands of events for two round trips; `count` also bounds how
    long a stop waits (it is checked between reads).

    With a live archive (features.online.archive): `flush()` writes the archive's buffered
    rows and runs after the apply, before the XACK, so an acknowledged message is in the
    archive; `apply_redelivered` applies our pending and claimed messages (a crash may have
    applied them without archiving them: it archives those the archive lacks).
    """

    def __init__(
        self,
        source: StreamSource,
        apply_many: ApplyMany,
        *,
        count: int = 64,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        flush: Callable[[], None] | None = None,
        apply_redelivered: ApplyMany | None = None,
    ) -> None:
        import redis

        self.source = source
        self.apply_many = apply_many
        self.flush = flush
        self.apply_redelivered = apply_redelivered or apply_many
        self.count = count
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.client = redis.Redis.from_url(source.redis_url, socket_timeout=10)
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self.stats = ConsumerStats()

    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.source.stream, self.source.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _where(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    def start(self) -> None:
        """Create the group (from the stream's start) unless it exists. StreamUnavailable,
        naming the Redis, when it cannot be reached: a consumer that starts against a wrong
        or down stream Redis says so rather than waiting without end."""
        try:
            self.ensure_group()
        except self._errors as exc:
            raise StreamUnavailable(f"stream Redis at {self._where()} unavailable: {exc}") from None

    def _handle(self, messages: list[Message], *, redelivered: bool = False) -> None:
        """Apply a read (and archive it: `flush`), then acknowledge it (StoreUnavailable,
        ArchiveUnavailable: nothing acknowledged)."""
        src = self.source
        parsed: list[tuple[list[Batch], str]] = []
        parsed_msgs: list[Message] = []
        dead: list[tuple[bytes, dict[bytes, bytes], str]] = []
        for msg_id, fields in messages:
            try:
                batch, batch_id = message_batch(src.stream, msg_id.decode(), fields)
            except ValueError as exc:
                dead.append((msg_id, fields, str(exc)))
                continue
            parsed.append(([batch], batch_id))
            parsed_msgs.append((msg_id, fields))
        apply = self.apply_redelivered if redelivered else self.apply_many
        results = apply(parsed) if parsed else []
        if self.flush is not None:
            self.flush()
        for (msg_id, fields), result in zip(parsed_msgs, results, strict=True):
            if isinstance(result, BatchRejected):
                dead.append((msg_id, fields, str(result)))
            else:
                self.stats.rows += result.rows
                self.stats.duplicates += int(result.duplicate)
        pipe = self.client.pipeline(transaction=False)
        order = {msg_id: k for k, (msg_id, _) in enumerate(messages)}
        for msg_id, fields, error in sorted(dead, key=lambda d: order[d[0]]):
            pipe.xadd(
                f"{src.stream}:dead",
                {"id": msg_id, "error": error[:2000], **{k.decode(): v for k, v in fields.items()}},
                maxlen=100_000,
                approximate=True,
            )
            log.warning("stream message %s rejected (dead-lettered): %s", msg_id.decode(), error)
        pipe.xack(src.stream, src.group, *(m for m, _ in messages))
        pipe.execute()
        self.stats.rejected += len(dead)
        self.stats.messages += len(messages)

    def _read(self, start: str, *, wait: bool = True) -> list[Message]:
        """Up to `count` messages: our pending ones (start "0") or new ones (">"), waiting
        up to block_ms for new ones only when `wait`."""
        src = self.source
        reply = self.client.xreadgroup(
            src.group,
            src.consumer,
            {src.stream: start},
            count=self.count,
            block=self.block_ms if start == ">" and wait else None,
        )
        return [m for _, messages in reply or [] for m in messages if m[1] is not None]

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_messages: int | None = None,
        until_idle: bool = False,
    ) -> ConsumerStats:
        """Consume until `stop` is set (checked between reads; a read is at most
        `block_ms` long when the stream is quiet), `max_messages` were handled, or
        (`until_idle`) a read, without waiting, finds no new message."""
        import redis

        stop = stop or threading.Event()
        self.start()
        src = self.source
        pending_done = False
        while not stop.is_set():
            if max_messages is not None and self.stats.messages >= max_messages:
                break
            try:
                redelivered = not pending_done
                if not pending_done:
                    # Our own unacknowledged messages first (we crashed before XACK).
                    messages = self._read("0")
                    if not messages:
                        pending_done = True
                        claimed = self.client.xautoclaim(
                            src.stream,
                            src.group,
                            src.consumer,
                            self.claim_idle_ms,
                            count=self.count,
                        )
                        messages = [m for m in claimed[1] if m[1] is not None]
                else:
                    # Draining stops at the first read that finds nothing new: asking
                    # without BLOCK answers at once (a blocking read cost every drain
                    # block_ms of waiting for a message that was not coming).
                    messages = self._read(">", wait=not until_idle)
                    if not messages and until_idle:
                        break
                if max_messages is not None:
                    # the rest of the read stays pending: read first on the next start
                    messages = messages[: max_messages - self.stats.messages]
                if messages:
                    self._handle(messages, redelivered=redelivered)
            except (StoreUnavailable, *self._errors) as exc:
                log.warning("stream consumer waiting: %s", exc)
                pending_done = False  # re-read what was not acknowledged
                stop.wait(1.0)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream or its group is gone: Redis restarted without its data (or
                # someone deleted them). Create the group again from the stream's start:
                # what was published since is read; what was applied before and comes
                # again counts once by its batch id.
                log.warning(
                    "stream consumer: group %s of %s is gone on %s (Redis restarted "
                    "empty?); creating it again",
                    src.group,
                    src.stream,
                    self._where(),
                )
                pending_done = False
                with contextlib.suppress(*self._errors):
                    self.ensure_group()
        return self.stats

    def close(self) -> None:
        self.client.close()


def publish(client: Any, stream: str, table: str, body: dict[str, Any], **extra: str) -> bytes:
    """Put one batch on a stream (what a platform producer does; replay and tests use it)."""
    return client.xadd(stream, {"table": table, "body": orjson.dumps(body), **extra})


def stream_consumer(source: StreamSource, online: Any, *, count: int = 64) -> StreamConsumer:
    """A consumer group member applying into `online` (a `serving.online.OnlineService`: its
    store and, when it has one, its live archive, written before each XACK; redelivered
    messages archived when the archive lacks them). The service's consumer and `surfacer
    ingest` both start theirs here."""
    return StreamConsumer(
        source,
        online.ingest_many,
        count=count,
        flush=online.flush_archive if online.archive is not None else None,
        apply_redelivered=lambda m: online.ingest_many(m, redelivered=True),
    )


async def consume_nats_into(
    source: NatsSource,
    online: Any,
    stop: threading.Event,
    *,
    until_idle: bool = False,
    on_start: Callable[[], None] | None = None,
) -> ConsumerStats:
    """`consume_nats` applying into `online`, with the same archive rules as
    `stream_consumer` (a fetch acknowledged after the archive's write)."""
    return await consume_nats(
        source,
        online.ingest,
        stop,
        until_idle=until_idle,
        flush=online.flush_archive if online.archive is not None else None,
        apply_redelivered=lambda b, bid: online.ingest(b, bid, redelivered=True),
        on_start=on_start,
    )


# How long the service's own consumer waits before it starts again after it stopped.
CONSUMER_RESTART_S = 5.0


async def consume_in_service(online: Any, url: str, *, restart_s: float | None = None) -> None:
    """The service's own consumer (setting ``SURFACER_ONLINE_CONSUME``), in a thread, until
    cancelled. When it stops on an error (its stream server unreachable at start, an
    unexpected answer), the error is logged and kept in `online.consumer_problem` (/readyz
    reports it: the service is degraded, its online state going stale) and the consumer
    starts again after `restart_s`. It used to end the lifespan's task silently: nothing
    said the service had stopped consuming, and /readyz stayed ready."""
    import asyncio

    restart_s = CONSUMER_RESTART_S if restart_s is None else restart_s
    where = _without_password(url)
    while True:
        try:
            await _consume_in_service(online, url)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            online.consumer_problem = (
                f"the online consumer of {where} stopped ({type(exc).__name__}: {exc}); "
                f"restarting it every {restart_s:g} s"
            )
            log.error("%s", online.consumer_problem)
        await asyncio.sleep(restart_s)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def _consume_in_service(online: Any, url: str) -> None:
    import asyncio

    if url.startswith("nats://"):
        stop_nats = threading.Event()
        try:
            await consume_nats_into(
                NatsSource.parse(url), online, stop_nats, on_start=_running(online)
            )
        finally:
            stop_nats.set()
        return
    source = StreamSource.parse(url)
    source = StreamSource(
        source.redis_url, source.stream, source.group, f"{source.consumer}-{os.getpid()}"
    )
    consumer = stream_consumer(source, online)
    stop = threading.Event()
    try:
        await asyncio.to_thread(consumer.start)
        online.consumer_problem = None  # reached its stream: running again
        await asyncio.to_thread(consumer.run, stop)
    finally:
        stop.set()
        consumer.close()


def _running(online: Any) -> Callable[[], None]:
    def clear() -> None:
        online.consumer_problem = None

    return clear


# --------------------------------------------------------------------------- NATS JetStream


@dataclass(frozen=True)
class NatsSource:
    """A JetStream stream, the subject its batches are published on, the durable consumer."""

    server: str
    stream: str
    subject: str
    durable: str

    @classmethod
    def parse(cls, url: str) -> NatsSource:
        parts = urlsplit(url)
        if parts.scheme != "nats":
            raise ValueError(f"NATS URL must be nats://host:port?stream=S&subject=X, got {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"stream", "subject", "durable"}
        if unknown:
            raise ValueError(f"unknown NATS URL parameter(s) {sorted(unknown)} in {url!r}")
        stream = query.get("stream", "SURFACER_EVENTS")
        return cls(
            urlunsplit(("nats", parts.netloc, "", "", "")),
            stream,
            query.get("subject", "surfacer.events"),
            query.get("durable", DEFAULT_GROUP),
        )


def nats_message_batch(
    stream: str, seq: int, data: bytes, headers: dict | None, stored_us: int | None = None
) -> tuple[Batch, str]:
    """A JetStream message: JSON {"table", "rows"|"columns"[, "batch_id"]}; the batch id is
    the message's, else its Nats-Msg-Id header, else <stream>/<stream sequence>@<the time
    JetStream stored it, µs>. The sequence alone restarts at 1 when NATS comes back without
    its JetStream store, and the new messages then took the ids of earlier ones: dropped as
    re-sent for the batch ids' lifetime (a day). A redelivery carries the same time."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"message is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError('message must be {"table": ..., "rows": [...] or "columns": {...}}')
    batch_id = (
        body.get("batch_id")
        or (headers or {}).get("Nats-Msg-Id")
        or f"{stream}/{seq}" + (f"@{stored_us}" if stored_us is not None else "")
    )
    return (
        Batch(str(body.get("table", "")), rows=body.get("rows"), columns=body.get("columns")),
        str(batch_id),
    )


# Attempts (1 s apart) to reach NATS when a consumer starts, before it gives up saying why.
NATS_START_ATTEMPTS = 3


async def connect_nats(server: str, *, start_attempts: int = NATS_START_ATTEMPTS) -> Any:
    """A NATS connection that, once up, reconnects without end (a restarted server is
    waited for), but whose first connect gives up after `start_attempts` tries with
    StreamUnavailable: with reconnects unbounded from the start, nats-py retried the first
    connect for ever, so a consumer pointed at a down or wrong server hung (deaf to SIGTERM,
    which is checked between fetches) while printing a traceback per attempt. Connection
    trouble is logged as one line each."""
    import nats

    async def on_error(exc: Exception) -> None:
        log.warning("NATS %s: %s", server, exc or type(exc).__name__)

    async def on_disconnect() -> None:
        log.warning("NATS %s: disconnected; reconnecting", server)

    async def on_reconnect() -> None:
        log.warning("NATS %s: reconnected", server)

    try:
        nc = await nats.connect(
            server,
            connect_timeout=5,
            reconnect_time_wait=1,
            max_reconnect_attempts=max(1, start_attempts - 1),
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise StreamUnavailable(
            f"NATS at {server} unavailable: {exc or type(exc).__name__}"
        ) from None
    nc.options["max_reconnect_attempts"] = -1  # connected: ride out any later outage
    return nc


def _epoch_us(t: Any) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


async def _resubscribe_if_gone(js: Any, source: NatsSource, sub: Any, subscribe: Any) -> Any:
    """`sub`, or a new subscription when the durable consumer is gone: NATS restarted
    without its JetStream store (or someone deleted it). Fetches from a consumer that no
    longer exists only time out, so without this check the consumer applied nothing more
    and said nothing. A quiet stream is checked every `consumer_check_s`."""
    from nats.js.errors import NotFoundError

    try:
        await js.consumer_info(source.stream, source.durable)
        return sub
    except NotFoundError:
        pass
    except Exception as exc:  # NATS reconnecting: the next check asks again
        log.debug("NATS consumer check: %s", exc)
        return sub
    log.warning(
        "NATS %s: durable consumer %s of stream %s is gone (NATS restarted without its "
        "JetStream store?); creating it again",
        source.server,
        source.durable,
        source.stream,
    )
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    return await subscribe()


async def consume_nats(
    source: NatsSource,
    apply: Callable[[list[Batch], str | None], Any],
    stop: threading.Event | None = None,
    *,
    count: int = 64,
    until_idle: bool = False,
    ack_wait_s: float = 30.0,
    flush: Callable[[], None] | None = None,
    apply_redelivered: Callable[[list[Batch], str | None], Any] | None = None,
    on_start: Callable[[], None] | None = None,
    consumer_check_s: float = 5.0,
) -> ConsumerStats:
    """Pull from a durable JetStream consumer (`on_start()` once it is subscribed); ack each
    message only after it is applied (a crash redelivers after ack_wait, and the batch id
    makes it count once). Messages that break the contract are acknowledged and logged
    (term: not redelivered).

    The applied messages of a fetch are acknowledged together after `flush()` (the live
    archive's write) returned; when it fails they are nak'ed, and their redelivery
    (num_delivered > 1) goes through `apply_redelivered`, which archives what the
    archive lacks (`StreamConsumer` has the same rules)."""
    import asyncio

    from nats.js.api import ConsumerConfig
    from nats.js.errors import NotFoundError

    stop = stop or threading.Event()
    stats = ConsumerStats()
    nc = await connect_nats(source.server)
    try:
        js = nc.jetstream()

        async def subscribe() -> Any:
            try:
                await js.stream_info(source.stream)
            except NotFoundError:
                await js.add_stream(name=source.stream, subjects=[source.subject])
            return await js.pull_subscribe(
                source.subject,
                durable=source.durable,
                stream=source.stream,
                config=ConsumerConfig(ack_wait=ack_wait_s),
            )

        sub = await subscribe()
        if on_start is not None:
            on_start()
        checked = time.monotonic()
        while not stop.is_set():
            try:
                msgs = await sub.fetch(count, timeout=0.5)
            except TimeoutError:  # nats.errors.TimeoutError is one too
                # nats-py raises a bare TimeoutError, not its own, when the fetch's
                # deadline ran out before the pull request was even sent (a loaded host)
                if until_idle:
                    break
                if time.monotonic() - checked >= consumer_check_s:
                    checked = time.monotonic()
                    sub = await _resubscribe_if_gone(js, source, sub, subscribe)
                continue
            applied = []
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                again = apply_redelivered is not None and msg.metadata.num_delivered > 1
                try:
                    stored = msg.metadata.timestamp
                    batch, batch_id = nats_message_batch(
                        source.stream,
                        seq,
                        msg.data,
                        msg.headers,
                        None if stored is None else _epoch_us(stored),
                    )
                    result = await asyncio.to_thread(
                        apply_redelivered if again else apply,  # type: ignore[arg-type]
                        [batch],
                        batch_id,
                    )
                except StoreUnavailable as exc:
                    log.warning("NATS consumer waiting: %s", exc)
                    await msg.nak(delay=1.0)
                    await asyncio.sleep(1.0)
                    continue
                except (BatchRejected, ValueError) as exc:
                    stats.rejected += 1
                    log.warning("NATS message %s rejected: %s", seq, exc)
                    await msg.term()
                    stats.messages += 1
                    continue
                stats.rows += result.rows
                stats.duplicates += int(result.duplicate)
                applied.append(msg)
            if applied and flush is not None:
                try:
                    await asyncio.to_thread(flush)
                except StoreUnavailable as exc:
                    log.warning("NATS consumer waiting: %s", exc)
                    for msg in applied:
                        await msg.nak(delay=1.0)
                    await asyncio.sleep(1.0)
                    continue
            for msg in applied:
                await msg.ack()
                stats.messages += 1
    finally:
        await nc.close()
    return stats
