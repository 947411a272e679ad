"""MLflow's database made ready once, before several processes open it at the same time.

MLflow's tracking and registry stores create their database the first time one is opened
(`create_all`, then every Alembic migration) and take no lock while doing it: two processes
opening a new database together both run the migrations, and one of them fails (on SQLite
with `duplicate column name: step`). `surfacer serve` starts several workers that all open the
store at start-up, and `surfacer train` may open it beside them. `prepare_mlflow_store` opens
the stores under an exclusive file lock, so one process creates (or upgrades) the database and
every other finds it whole; `surfacer serve` calls it before its workers start, training and
the workers' model holder call it before their first MLflow call.

A database already at the schema of the installed MLflow is recognised without importing
MLflow: its Alembic revision is read directly (stdlib `sqlite3` for SQLite) and compared with
the head of the migrations MLflow ships, so a start with an existing store pays milliseconds.
An `http(s)` tracking server creates its own database; nothing is done for it here.

The lock is a file (beside a SQLite database, in the temp folder for a database server), so
it orders the processes of one host; processes on several hosts sharing one new PostgreSQL
store should run `surfacer train` (or `mlflow db upgrade URI`) once first.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import lru_cache
from pathlib import Path

from common.locks import exclusive_file_lock
from common.settings import Settings

# URI schemes of the SQL databases MLflow's SQLAlchemy stores take (`postgresql+psycopg`...).
DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
# Seconds to wait for a database server before calling it unreachable (MLflow itself retries
# for about 100 s, which would stall a start; the workers still retry on their own).
CONNECT_TIMEOUT_S = 5

_REVISION = re.compile(r"^revision\s*=\s*(.+)$", re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(.+)$", re.M)

_done: set[tuple[str, str]] = set()  # (tracking, registry) URIs this process made ready
_done_lock = threading.Lock()


class StoreUnreachable(RuntimeError):
    """The database server behind an MLflow URI did not answer (an outage, not a bad setup)."""


def database_scheme(uri: str) -> str | None:
    """'sqlite', 'postgresql'... when `uri` names a SQL database MLflow opens itself, else None."""
    scheme, sep, _ = uri.partition("://")
    base = scheme.split("+", 1)[0].lower()
    return base if sep and base in DATABASE_SCHEMES else None


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (None for in-memory or another scheme)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


@lru_cache(maxsize=1)
def mlflow_schema_head() -> str | None:
    """The latest schema revision of the installed MLflow, read from its migration files
    without importing MLflow; None when they cannot be read unambiguously (callers then let
    MLflow check the database itself)."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    versions = Path(next(iter(spec.submodule_search_locations))) / "store/db_migrations/versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    try:
        for script in versions.glob("*.py"):
            text = script.read_text()
            rev, down = _REVISION.search(text), _DOWN_REVISION.search(text)
            if rev is None or down is None:
                continue  # __init__.py
            revisions.add(ast.literal_eval(rev.group(1).strip()))
            down_value = ast.literal_eval(down.group(1).strip())
            if isinstance(down_value, str):
                parents.add(down_value)
            elif isinstance(down_value, tuple | list):
                parents.update(down_value)
    except (OSError, ValueError, SyntaxError):
        return None
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def schema_revision(uri: str) -> str | None:
    """The Alembic revision the database at `uri` is at; None when it has none yet (no file,
    no tables). Raises StoreUnreachable when a database server does not answer."""
    path = sqlite_file(uri)
    if path is not None:
        if not path.exists():
            return None
        try:  # read-only: looking must not create an empty file
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:  # no table yet (or unreadable: the full path will say why)
            return None
        return row[0] if row else None
    if database_scheme(uri) is None:
        return None
    from sqlalchemy import create_engine, inspect, pool, text

    connect_args = {}
    if database_scheme(uri) in ("postgresql", "mysql"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        engine = create_engine(uri, poolclass=pool.NullPool, connect_args=connect_args)
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:  # driver-specific connection errors
        raise StoreUnreachable(f"MLflow store {safe_uri(uri)} is unreachable: {exc}") from exc


def safe_uri(uri: str) -> str:
    """`uri` without a password."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", uri)


@contextmanager
def _init_lock(uri: str) -> Iterator[None]:
    """An exclusive flock for creating the database at `uri` (beside a SQLite file, else in
    the temp folder under a hash of the URI)."""
    path = sqlite_file(uri)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(
                f"cannot create the folder of the MLflow store {path}: {exc}"
            ) from exc
        lock = path.with_name(path.name + ".migrate.lock")
    else:
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        lock = Path(tempfile.gettempdir()) / f"surfacer-mlflow-{digest}.migrate.lock"
    try:
        lock.touch()
    except OSError as exc:
        raise RuntimeError(f"cannot open the MLflow store's lock file {lock}: {exc}") from exc
    with exclusive_file_lock(lock):
        yield


def prepare_mlflow_store(settings: Settings) -> list[str]:
    """Create or upgrade the tracking and registry databases of `settings`, once, under a
    lock; the URIs this call created or upgraded (empty when all were ready already).

    Idempotent and cheap after the first call in a process. Raises StoreUnreachable when a
    database server does not answer, RuntimeError (naming the URI and the cause) when the
    database cannot be created or migrated.
    """
    key = (settings.tracking_uri, settings.registry_uri)
    with _done_lock:
        if key in _done:
            return []
    head = mlflow_schema_head()
    databases = [uri for uri in dict.fromkeys(key) if database_scheme(uri) is not None]
    pending = [uri for uri in databases if head is None or schema_revision(uri) != head]
    if pending:
        with ExitStack() as stack:
            for uri in sorted(pending):  # one order for every caller: no deadlock
                stack.enter_context(_init_lock(uri))
            _open_stores(settings)
    with _done_lock:
        _done.add(key)
    return pending


def _open_stores(settings: Settings) -> None:
    """Open MLflow's stores the way every later client does (MLflow creates or upgrades the
    database on first open); the caller holds the locks."""
    from mlflow import MlflowClient

    try:  # the client opens the tracking store already
        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri
        )
        if database_scheme(settings.tracking_uri) is not None:
            client.search_experiments(max_results=1)
        if database_scheme(settings.registry_uri) is not None:
            client.search_registered_models(max_results=1)
    except Exception as exc:
        uris = dict.fromkeys((settings.tracking_uri, settings.registry_uri))
        raise RuntimeError(
            f"cannot create or migrate the MLflow store {' / '.join(map(safe_uri, uris))}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
