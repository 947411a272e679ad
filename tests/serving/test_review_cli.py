"""`surfacer review migrate|stats|export-labels` through the CLI front door."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from serving.review.store import ReviewStore
from surfacer.cli import run
from tests.support.review import flagged_item


def test_review_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    assert run(["review", "migrate", "--database-url", url]) == 0
    assert "revision 0001_initial" in capsys.readouterr().out
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
