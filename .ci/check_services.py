"""Check the services the whole test suite needs, before it runs: one clear line each.

    python .ci/check_services.py        (`make check-services`; `make test` runs it first)

PostgreSQL (tests marked `postgres`), Redis (`redis`) and Chromium (`browser`) are each
checked the way the tests use them. Every missing service is reported, not only the first;
the exit code is 1 if any is missing. `make test-quick` runs the tests that need none.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable
from urllib.parse import urlparse

# The same defaults and variables as the tests.
PG_ADMIN = os.environ.get("SURFACER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SURFACER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_S = 3.0


def check_postgres() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=int(TIMEOUT_S)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"PostgreSQL does not answer at {_redact(PG_ADMIN)} ({first}); start it "
            "(.ci/run does: pg_ctlcluster ... main start) or point SURFACER_TEST_PG_ADMIN at "
            "an admin database (trust auth, may CREATE DATABASE)"
        )
    return None


def check_redis() -> str | None:
    url = urlparse(REDIS_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return (
            f"Redis does not answer at {host}:{port} ({exc}); start it (.ci/run does: "
            "redis-server --daemonize yes ...) or set SURFACER_TEST_REDIS_URL"
        )
    if not reply.startswith((b"+PONG", b"-NOAUTH")):
        return f"{host}:{port} answers, but not as Redis (PING got {reply[:40]!r})"
    return None


def check_chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return None
    found = shutil.which("chromium")
    hint = f" (found {found}, but the tests use {CHROMIUM})" if found else ""
    return (
        f"Chromium is not installed at {CHROMIUM}{hint}; install Debian's package "
        "(.ci/run does: apt-get install chromium)"
    )


CHECKS: dict[str, tuple[Callable[[], str | None], str]] = {
    "PostgreSQL": (check_postgres, "postgres"),
    "Redis": (check_redis, "redis"),
    "Chromium": (check_chromium, "browser"),
}


def _redact(dsn: str) -> str:
    url = urlparse(dsn)
    if url.password:
        return dsn.replace(f":{url.password}@", ":***@")
    return dsn


def main() -> int:
    missing = 0
    for name, (check, marker) in CHECKS.items():
        problem = check()
        if problem is None:
            print(f"ok: {name}")
        else:
            missing += 1
            print(f"error: {problem} (needed by tests marked {marker})", file=sys.stderr)
    if missing:
        print(
            "error: the whole suite needs these services; `make test-quick` runs the tests "
            "that need none of them",
            file=sys.stderr,
        )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
