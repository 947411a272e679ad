"""Issue types: the default set and validation of names and anchors."""

from __future__ import annotations

import pytest

from models.issues import DEFAULT_ISSUES, IssueType, flat_issues, issues_by_name


def test_each_default_issue_is_labelled_on_rows_of_its_anchor() -> None:
    # The default set must fit the contract's data: review labels land on post rows, appeal
    # outcomes on the moderation action they follow; no issue is left without labels.
    from features.snapshot import build_snapshots
    from tests.support.tables import make_tables
    from training.labels import attach_labels

    tables = make_tables()
    rows = attach_labels(build_snapshots(tables), tables, DEFAULT_ISSUES)
    for issue in DEFAULT_ISSUES:
        labelled = rows[f"label_{issue.name}"].notna()
        assert labelled.any(), issue.name
        assert set(rows.loc[labelled, "anchor"]) == {issue.anchor}, issue.name


def test_bad_issue_types_are_refused() -> None:
    with pytest.raises(ValueError, match="anchor 'comment'"):
        IssueType("x", "q", "review", "comment")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="issue name"):
        IssueType("bad name", "q", "review")
    with pytest.raises(ValueError, match="declared twice"):
        issues_by_name([*DEFAULT_ISSUES, DEFAULT_ISSUES[0]])


def test_flat_issues_are_post_anchored() -> None:
    issues = flat_issues(["claim", "author_ban"])
    assert [i.name for i in issues] == ["claim", "author_ban"]
    assert {i.anchor for i in issues} == {"post"}
