"""common.progress: whole lines in logs, a rich bar on a terminal, nothing when disabled."""

from __future__ import annotations

import io

import pytest

from common import progress as progress_mod
from common.progress import Progress, track


class Terminal(io.StringIO):
    """A stream that says it is a terminal (what rich draws on)."""

    def isatty(self) -> bool:
        return True


def test_log_gets_a_line_per_stage_and_a_final_count() -> None:
    log = io.StringIO()
    with Progress("simulate", 3, unit="stage", stream=log) as bar:
        for stage in ("creators", "items", "events"):
            bar.status(stage)
            bar.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "simulate: [0/3] creators",
        "simulate: [1/3] items",
        "simulate: [2/3] events",
    ]
    assert lines[3].startswith("simulate: done, 3/3 stages in ")
    assert len(lines) == 4


def test_count_lines_are_rate_limited() -> None:
    quiet, chatty = io.StringIO(), io.StringIO()
    for stream, interval in ((quiet, 3600.0), (chatty, 0.0)):
        with Progress("parts", 50, stream=stream, min_interval_s=interval) as bar:
            for _ in range(50):
                bar.update()
    assert len(quiet.getvalue().splitlines()) == 1  # only the final line
    assert len(chatty.getvalue().splitlines()) == 51


def test_without_a_total_only_stages_make_lines() -> None:
    log = io.StringIO()
    with Progress("train", stream=log, min_interval_s=0.0) as bar:
        bar.status("fit")
        bar.update()
        bar.update()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("train: fit (")
    assert lines[1].startswith("train: done, 2 steps in ")
    assert len(lines) == 2


def test_disabled_writes_nothing() -> None:
    log = Terminal()
    with Progress("load", 2, enabled=False, stream=log) as bar:
        bar.status("items")
        bar.update(2)
    assert log.getvalue() == ""
    assert list(track([1, 2, 3], "x", enabled=False, stream=log)) == [1, 2, 3]
    assert log.getvalue() == ""


def test_track_counts_every_item() -> None:
    log = io.StringIO()
    assert list(track(range(4), "score", unit="part", stream=log)) == [0, 1, 2, 3]
    assert log.getvalue().startswith("score: done, 4/4 parts in ")


def test_terminal_gets_one_rich_display_shared_by_nested_bars() -> None:
    term = Terminal()
    outer = Progress("train", stream=term)
    assert outer.rich and progress_mod._live is not None
    inner = Progress("snapshots", 5, stream=term)
    assert progress_mod._live_users == 2  # the inner bar joined the outer display
    inner.status("events")
    inner.update(5)
    inner.close()
    outer.status("fit")
    outer.close()
    assert progress_mod._live is None and progress_mod._live_users == 0
    assert "train" in term.getvalue()
    assert "\n" in term.getvalue()


def test_closed_stream_is_not_an_error() -> None:
    log = io.StringIO()
    bar = Progress("load", 1, stream=log)
    log.close()
    bar.status("items")  # a test's captured stderr may be gone by now
    bar.close()


@pytest.fixture(autouse=True)
def _no_display_left_over() -> None:
    yield
    assert progress_mod._live is None
