"""Fault injection against a real `surfacer serve`: load, a cuttable TCP proxy, busy cores,
and the count of what the API accepted against what reached the review store.

Used by tests/faults (which assert that nothing is lost) and bench/faults.py (which prints
one row per fault and checks the timing targets). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from serving.flag_writer import writer_status
from serving.spool import DEAD_LETTERS_FILE
from tests.support.serving import SCORE_KEY, free_port, records


class TcpProxy:
    """Forwards a loopback port to `target`; `cut()` drops every connection and refuses new
    ones (the database is unreachable), `restore()` listens again on the same port."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        self._stop.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.2)
        self._listener = sock
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                with self._lock:
                    self._conns.discard(s)

    def cut(self) -> None:
        """Close the listener and every forwarded connection."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            conns, self._conns = set(self._conns), set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self.cut()


@contextlib.contextmanager
def busy_cores(n: int | None = None) -> Iterator[list[int]]:
    """`n` (default: one per core) processes spinning `while True: pass`; killed by pid."""
    n = n or len(os.sched_getaffinity(0))
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


@dataclass
class Load:
    """Scoring requests from threads until stopped; which flagged items were accepted."""

    base_url: str
    prefix: str
    threads: int = 4
    batch: int = 20
    accepted: set[tuple[str, str]] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> Load:
        self._pool = records(200, random_state=17)
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k,), name=f"load-{k}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, k: int) -> None:
        n = 0
        with httpx.Client(
            base_url=self.base_url, headers={"X-API-Key": SCORE_KEY}, timeout=30
        ) as client:
            while not self._stop.is_set():
                n += 1
                recs = []
                for j in range(self.batch if n % 2 else 1):
                    rec = dict(self._pool[(k * 7919 + n * 31 + j) % len(self._pool)])
                    rec["item_id"] = f"{self.prefix}-{k}-{n}-{j}"
                    recs.append(rec)
                body = {"items": recs} if len(recs) > 1 else recs[0]
                try:
                    r = client.post("/v1/score", json=body)
                except httpx.HTTPError as exc:  # the server went away: nothing accepted
                    with self._lock:
                        self.errors.append(repr(exc))
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    time.sleep(0.02)
                    continue
                data = r.json()
                items = data.get("items", [data])
                with self._lock:
                    for it in items:
                        self.versions[it["model_version"]] = (
                            self.versions.get(it["model_version"], 0) + 1
                        )
                        if it["flagged"]:
                            self.accepted.add((it["item_id"], it["model_version"]))

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(60)


def stored_keys(db_url: str, prefix: str) -> set[tuple[str, str]]:
    """(item_id, model_version) of the review rows whose id starts with `prefix`."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT item_id, model_version FROM review_items WHERE item_id LIKE :p"),
                {"p": prefix + "%"},
            ).all()
    finally:
        engine.dispose()
    return {(r[0], r[1]) for r in rows}


def dead_letters(spool_dir: Path) -> list[dict[str, Any]]:
    path = spool_dir / DEAD_LETTERS_FILE
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@dataclass
class Tally:
    """Accepted by the API, stored in the review store, dead-lettered, and the rest: lost."""

    accepted: int
    stored: int
    dead_lettered: int

    @property
    def lost(self) -> int:
        return self.accepted - self.stored - self.dead_lettered


def tally(
    accepted: set[tuple[str, str]], db_url: str, spool_dir: Path, prefix: str
) -> tuple[Tally, list[dict[str, Any]]]:
    """How many accepted items are stored or dead-lettered (stored rows not accepted, e.g. of
    a request whose answer was cut off, are not counted)."""
    stored = stored_keys(db_url, prefix)
    dead = [d for d in dead_letters(spool_dir) if str(d.get("item_id", "")).startswith(prefix)]
    dead_keys = {(d["item_id"], str(d.get("item", {}).get("model_version"))) for d in dead}
    return Tally(len(accepted), len(accepted & stored), len(accepted & dead_keys)), dead


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1
) -> tuple[Any, float]:
    """Poll until `predicate()` is truthy; its value and the seconds it took (None on timeout)."""
    t0 = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            return None, time.monotonic() - t0
        time.sleep(interval_s)


def wait_all_stored(
    accepted: set[tuple[str, str]], db_url: str, spool_dir: Path, prefix: str, timeout_s: float
) -> tuple[Tally, float]:
    """Wait until every accepted item is stored or dead-lettered; the tally and the wait.

    Polls a row count, and compares keys only once the count says all could be there: reading
    every key of a large backlog twice a second would take CPU from the writer it times."""
    t0 = time.monotonic()
    while True:
        late = time.monotonic() - t0 > timeout_s
        if late or stored_count(db_url, prefix) + len(dead_letters(spool_dir)) >= len(accepted):
            t, _ = tally(accepted, db_url, spool_dir, prefix)
            if t.lost == 0 or late:
                return t, time.monotonic() - t0
        time.sleep(0.2)


def stored_count(db_url: str, prefix: str) -> int:
    """How many review rows have an id starting with `prefix`."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT count(*) FROM review_items WHERE item_id LIKE :p"),
                {"p": prefix + "%"},
            ).scalar_one()
    finally:
        engine.dispose()


def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    """/readyz status and body (0 and {} when the server does not answer)."""
    try:
        r = httpx.get(f"{base_url}/readyz", timeout=2)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, r.json()


def writer_pid(spool_dir: Path) -> int | None:
    status = writer_status(spool_dir)
    return int(status["pid"]) if status and status.get("alive") else None


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# -- many connections at once --------------------------------------------------------------


async def _hammer(port: int, body: bytes, connections: int, duration_s: float) -> dict[str, Any]:
    head = (
        f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {SCORE_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    payload = head + body
    waits: list[float] = []
    statuses: dict[int, int] = {}
    retry_after: set[str] = set()
    failures = 0
    end = time.perf_counter() + duration_s

    async def one() -> None:
        nonlocal failures
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            failures += 1
            return
        try:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                writer.write(payload)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif name.strip().lower() == b"retry-after":
                        retry_after.add(value.strip().decode())
                await reader.readexactly(length)
                waits.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 503:
                    await asyncio.sleep(0.05)  # a client that honours "retry later" a little
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            failures += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    waits.sort()
    return {
        "requests": len(waits),
        "statuses": statuses,
        "max_s": waits[-1] if waits else float("nan"),
        "p99_s": waits[int(0.99 * (len(waits) - 1))] if waits else float("nan"),
        "retry_after": sorted(retry_after),
        "failures": failures,
    }


def many_connections(
    base_url: str, connections: int = 256, duration_s: float = 10.0
) -> dict[str, Any]:
    """`connections` keep-alive connections sending single items back to back (in a child
    process, so this one's GIL is not in the measurement): statuses and the longest wait."""
    port = int(base_url.rsplit(":", 1)[1])
    body = orjson.dumps(records(1, random_state=23)[0] | {"item_id": "hammer"})
    script = (
        "import asyncio, json, sys; from tests.support.faults import _hammer; "
        f"print(json.dumps(asyncio.run(_hammer({port}, {body!r}, {connections}, {duration_s}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    return result


# -- a Redis server of the test's own ------------------------------------------------------


class OwnRedis:
    """A `redis-server` on a free loopback port, without persistence, that a test may
    SIGKILL and start again (empty) on the same port: never the machine's shared Redis.
    `OwnRedis.or_skip()` skips the test when the binary is missing."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @classmethod
    def or_skip(cls) -> OwnRedis:
        import shutil

        import pytest

        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        return cls().start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        import redis

        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--enable-debug-command", "local"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, retry=None)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on {self.port} did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL (its data is gone: no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.kill()
