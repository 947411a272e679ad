"""Issue types: what each classifier answers, where its labels come from, which rows it scores.

Issue types are data, not code: the default set below serves raw datasets, and a flat dataset
spec declares its own (all "post" anchored, one row per item).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Anchor = Literal["post", "moderation"]
ANCHORS: tuple[str, ...] = ("post", "moderation")


@dataclass(frozen=True)
class IssueType:
    """One issue type: its name, the question it answers, its label source and row anchor."""

    name: str
    question: str
    label_source: str
    anchor: Anchor = "post"

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(
                f"issue {self.name!r}: anchor {self.anchor!r} is not one of {list(ANCHORS)}"
            )
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(
                f"issue name {self.name!r} must be non-empty letters, digits and underscores"
            )


DEFAULT_ISSUES: tuple[IssueType, ...] = (
    IssueType(
        "low_quality",
        "Is this item spam, low-effort or misleading?",
        "review",
        "post",
    ),
    IssueType(
        "harmful_interactions",
        "Is the item's comment section or reaction abusive?",
        "review",
        "post",
    ),
    IssueType(
        "wrongful_enforcement",
        "Was this moderation action wrong, i.e. will its appeal be overturned?",
        "appeals",
        "moderation",
    ),
)


def issues_by_name(issues: Iterable[IssueType]) -> dict[str, IssueType]:
    """Index issue types by name, refusing duplicates (two models for one name would collide)."""
    out: dict[str, IssueType] = {}
    for issue in issues:
        if issue.name in out:
            raise ValueError(f"issue {issue.name!r} is declared twice")
        out[issue.name] = issue
    return out


def flat_issues(names: Iterable[str]) -> tuple[IssueType, ...]:
    """Issue types of a flat dataset spec: post anchored, labelled by the spec's columns."""
    return tuple(
        IssueType(name, f"Is this item positive for {name!r}?", "spec", "post") for name in names
    )
