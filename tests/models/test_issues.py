"""Issue types: the default set and validation of names and anchors."""

from __future__ import annotations

import pytest

from models.issues import DEFAULT_ISSUES, IssueType, flat_issues, issues_by_name


def test_default_issues_and_anchors() -> None:
    anchors = {i.name: i.anchor for i in DEFAULT_ISSUES}
    assert anchors == {
        "low_quality": "post",
        "harmful_interactions": "post",
        "wrongful_enforcement": "moderation",
    }


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
