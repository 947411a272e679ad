"""`common.mlflow_store`: MLflow's database created once, under a lock, with clear errors."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from common import mlflow_store
from common.mlflow_store import (
    StoreUnreachable,
    mlflow_schema_head,
    prepare_mlflow_store,
    safe_uri,
    schema_revision,
)
from common.settings import Settings


def _forget(settings: Settings) -> None:
    """Make this process prepare `settings` again, as a new process would."""
    mlflow_store._done.discard((settings.tracking_uri, settings.registry_uri))


def test_schema_head_is_mlflows_own() -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert mlflow_schema_head() == _get_latest_schema_revision()


def test_a_new_sqlite_store_is_created_once_and_then_recognised(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "state")
    uri = settings.tracking_uri
    assert schema_revision(uri) is None and not (tmp_path / "state").exists()
    assert prepare_mlflow_store(settings) == [uri]
    assert schema_revision(uri) == mlflow_schema_head()
    assert prepare_mlflow_store(settings) == []  # this process knows it is done
    _forget(settings)
    assert prepare_mlflow_store(settings) == []  # another process finds it at the head
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_registered_models() == []


def test_a_store_not_at_the_head_goes_through_mlflow_again(tmp_path: Path) -> None:
    import sqlite3

    settings = Settings(data_dir=tmp_path)
    prepare_mlflow_store(settings)
    _forget(settings)
    # A store whose revision is not MLflow's head goes through MLflow again (under the
    # lock); MLflow then finds its tables and leaves the revision as it is.
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'older'")
    assert prepare_mlflow_store(settings) == [settings.tracking_uri]


def _prepare_in_child(data_dir: str, start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))  # both open the new store at once
    prepare_mlflow_store(Settings(data_dir=Path(data_dir)))


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Without the lock, one of two processes opening a new store fails in MLflow's
    # migrations (duplicate column / alembic's "expected to match one row").
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 8  # after both interpreters have imported this module
    procs = [
        ctx.Process(target=_prepare_in_child, args=(str(tmp_path), start_at)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert schema_revision(f"sqlite:///{tmp_path.resolve()}/mlflow.db") == mlflow_schema_head()


def test_a_store_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="cannot create the folder of the MLflow store"):
        prepare_mlflow_store(Settings(data_dir=blocker / "state"))


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(RuntimeError, match=r"cannot create or migrate the MLflow store sqlite:"):
        prepare_mlflow_store(Settings(data_dir=tmp_path))


def test_an_unreachable_database_server_is_said_quickly_without_its_password() -> None:
    settings = Settings(mlflow_tracking_uri="postgresql+psycopg://me:s3cret@127.0.0.1:1/mlflow")
    t0 = time.perf_counter()
    with pytest.raises(StoreUnreachable, match="is unreachable") as info:
        prepare_mlflow_store(settings)
    assert time.perf_counter() - t0 < 15  # not MLflow's ~100 s of retries
    assert "s3cret" not in str(info.value) and "me:***@127.0.0.1:1" in str(info.value)


def test_a_tracking_server_is_left_alone() -> None:
    # An http(s) server creates its own database; nothing is contacted here.
    assert prepare_mlflow_store(Settings(mlflow_tracking_uri="http://127.0.0.1:1")) == []


def test_safe_uri_hides_only_the_password() -> None:
    assert safe_uri("postgresql+psycopg://u:p@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert safe_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.mark.postgres
def test_a_new_postgres_store_is_created_once_and_then_recognised() -> None:
    from tests.support.postgres import temp_database, url

    with temp_database("w45_mlflow") as name:
        settings = Settings(mlflow_tracking_uri=url(name))
        assert schema_revision(url(name)) is None
        assert prepare_mlflow_store(settings) == [url(name)]
        _forget(settings)
        assert prepare_mlflow_store(settings) == []
        assert schema_revision(url(name)) == mlflow_schema_head()
