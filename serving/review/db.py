"""The review database: engine set-up, transactions and migrations, shared by the store's parts.

SQLite (the default) runs in WAL mode with IMMEDIATE transactions; PostgreSQL connections get
a connect timeout and a TCP user timeout, so a database that went away fails a call within
seconds instead of hanging it. JSON columns are (de)serialised with orjson.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from common.locks import exclusive_file_lock

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Errors that say the database cannot be used now (unreachable, locked, schema missing),
# as opposed to a statement it refused because of the values in it.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    ProgrammingError,
)
# libpq settings for a PostgreSQL URL that does not set them: fail fast when the server is gone.
PG_CONNECT_ARGS = {"connect_timeout": 5, "tcp_user_timeout": 10_000}


def utc(dt: datetime | None) -> datetime | None:
    """`dt` in UTC; SQLite hands back naive datetimes, and everything is stored in UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def parse_as_of(value: Any) -> datetime | None:
    """A snapshot's as_of (datetime, ISO text or null) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return utc(value)
    try:
        return utc(datetime.fromisoformat(str(value)))
    except ValueError:
        import pandas as pd  # unusual formats only: pandas reads more than fromisoformat

        ts = pd.Timestamp(value)
        if pd.isna(ts):
            return None
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        return ts.tz_convert("UTC").to_pydatetime()


def alembic_config(url: str | None = None) -> Any:
    """Alembic configuration for the review store's migrations (no alembic.ini needed)."""
    from alembic.config import Config  # alembic loads only when migrating

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class StoreBase:
    """The engine, session factory and schema of one review database."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._sqlite_path: Path | None = None
        json_args: dict[str, Any] = {
            "json_serializer": _json_dumps,
            "json_deserializer": orjson.loads,
        }
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                self._sqlite_path = Path(db)
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url,
                echo=echo,
                connect_args={"timeout": 30, "check_same_thread": False},
                **json_args,
            )
            _sqlite_pragmas(self.engine)
        else:
            connect_args = {}
            if self.dialect == "postgresql":
                connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query}
            self.engine = create_engine(
                url,
                echo=echo,
                pool_pre_ping=True,
                pool_size=10,
                connect_args=connect_args,
                **json_args,
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def describe(self) -> str:
        """The database URL without its password."""
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def ping(self) -> None:
        """A round trip to the database (raises when it is unreachable)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> str:
        """Upgrade the schema to the latest migration (idempotent); returns the revision."""
        from alembic import command

        with self._migration_lock(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Two processes starting at once must not both create the tables.
                conn.execute(text("SELECT pg_advisory_xact_lock(7212345)"))
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return self.revision() or ""

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self._sqlite_path is None:
            yield
            return
        lock = self._sqlite_path.with_name(self._sqlite_path.name + ".migrate.lock")
        with exclusive_file_lock(lock):
            yield

    def revision(self) -> str | None:
        """The schema revision the database is at (None before `migrate`)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head() -> str:
        """The latest migration shipped with the code."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL (readers never block the writer), a busy timeout, and IMMEDIATE transactions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, open transactions (pysqlite's own are DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Take the write lock up front: a read-then-write transaction can then never fail
        # with SQLITE_BUSY_SNAPSHOT, and claims see the latest committed state.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
