"""`surfacer review migrate|add-analyst|stats|export-labels` through the CLI front door."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from serving.review.store import ReviewStore
from surfacer.cli import run
from tests.support.review import flagged_item


def test_review_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    assert run(["review", "migrate", "--database-url", url]) == 0
    assert f"revision {ReviewStore.head()}" in capsys.readouterr().out
    store = ReviewStore(url)
    store.add_flagged([flagged_item(i) for i in range(3)])
    claim = store.claim_next("ann")
    store.label(claim.item.id, claim.lease, "confirm")
    store.close()
    assert run(["review", "stats", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "pending=2" in out and "labeled=1" in out and "low_quality: flagged=3" in out
    ds = tmp_path / "ds"
    ds.mkdir()
    assert (
        run(["review", "export-labels", "--out", str(ds / "labels.parquet"), "--database-url", url])
        == 0
    )
    assert "wrote 1 labels" in capsys.readouterr().out
    labels = pd.read_parquet(ds / "labels.parquet")
    assert labels[["item_id", "issue", "label", "source"]].values.tolist() == [
        [claim.item.item_id, "low_quality", 1, "review"]
    ]
    # A missing output folder is a user error (exit 2), not a traceback.
    assert (
        run(
            [
                "review",
                "export-labels",
                "--out",
                str(tmp_path / "nope" / "l.parquet"),
                "--database-url",
                url,
            ]
        )
        == 2
    )


def test_add_analyst_stores_a_login_not_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    add = ["review", "add-analyst", "ann", "--password-stdin", "--database-url", url]
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass phrase\n"))
    assert run(add) == 0
    assert "analyst 'ann' created" in capsys.readouterr().out
    # The same name again is refused without --reset; a short password is refused.
    monkeypatch.setattr("sys.stdin", io.StringIO("another pass phrase\n"))
    assert run(add) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert run([*add[:3], "bob", *add[4:]]) == 2
    store = ReviewStore(url)
    try:
        assert store.authenticate("ann", "s3cret pass phrase") is not None
        assert store.authenticate("ann", "another pass phrase") is None
        with store.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT password_hash FROM analysts").scalar()
        assert "s3cret" not in stored and stored.startswith("$argon2")
    finally:
        store.close()
    monkeypatch.setattr("sys.stdin", io.StringIO("another pass phrase\n"))
    assert run([*add, "--reset", "--admin"]) == 0
    assert run(["review", "disable-analyst", "ann", "--database-url", url]) == 0
    assert run(["review", "analysts", "--database-url", url]) == 0
    assert "ann (admin, disabled)" in capsys.readouterr().out
    store = ReviewStore(url)
    try:
        assert store.authenticate("ann", "another pass phrase") is None  # disabled
    finally:
        store.close()
