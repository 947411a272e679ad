"""Throwaway PostgreSQL databases on the machine's server (created per test, dropped after)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

ADMIN_DSN = os.environ.get("SURFACER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
PG_HOST = "127.0.0.1"
PG_PORT = 5432


@contextlib.contextmanager
def temp_database(prefix: str = "surfacer_test") -> Iterator[str]:
    """A fresh, uniquely named database; yields its name and drops it afterwards."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url(name: str, host: str = PG_HOST, port: int = PG_PORT) -> str:
    """The SQLAlchemy URL of database `name` (through `host:port`, e.g. a proxy)."""
    return f"postgresql+psycopg://postgres@{host}:{port}/{name}"
