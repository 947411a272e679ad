"""Reporting on the queue: counts, labels for training, live model quality."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from serving.review.db import utc
from serving.review.models import Label, ReviewItem
from serving.review.quality import IssueCounts, quality
from serving.review.schemas import IssueQuality, Stats

LABEL_COLUMNS = ["item_id", "issue", "label", "labeled_at", "source"]


class ReportingMixin:
    """The reporting operations of `ReviewStore`."""

    _tx: Any
    expire_leases: Any
    revision: Any

    def stats(self) -> Stats:
        """Queue size by status and stratum, and the number of labels."""
        self.expire_leases()
        with self._tx() as s:
            by_status = dict(
                s.execute(select(ReviewItem.status, func.count()).group_by(ReviewItem.status)).all()
            )
            by_stratum = dict(
                s.execute(
                    select(ReviewItem.stratum, func.count()).group_by(ReviewItem.stratum)
                ).all()
            )
            n_labels = s.scalar(select(func.count()).select_from(Label)) or 0
        return Stats(
            by_status=by_status, by_stratum=by_stratum, labels=n_labels, revision=self.revision()
        )

    # -- labels out -------------------------------------------------------------------------

    def labels_frame(self) -> Any:
        """All labels as the contract's `labels` table (source "review"), a DataFrame."""
        import pandas as pd

        with self._tx() as s:
            rows = s.execute(
                select(Label.item_id, Label.issue, Label.label, Label.labeled_at).order_by(Label.id)
            ).all()
        frame = pd.DataFrame(
            {
                "item_id": pd.Series([r[0] for r in rows], dtype="str"),
                "issue": pd.Series([r[1] for r in rows], dtype="str"),
                "label": pd.Series([int(r[2]) for r in rows], dtype="int64"),
                "labeled_at": pd.to_datetime([utc(r[3]) for r in rows], utc=True),
                "source": pd.Series(["review"] * len(rows), dtype="str"),
            }
        )
        return frame[LABEL_COLUMNS]

    def quality(
        self, issues: Sequence[str] | None = None, *, model_version: str | None = None
    ) -> list[IssueQuality]:
        """Live precision and estimated recall per issue from the labels so far."""
        with self._tx() as s:
            q = select(
                ReviewItem.id,
                ReviewItem.stratum,
                ReviewItem.sample_prob,
                ReviewItem.flagged,
                ReviewItem.scores,
            )
            if model_version is not None:
                q = q.where(ReviewItem.model_version == model_version)
            items = s.execute(q).all()
            # The latest label per (item, issue) counts.
            latest = (
                select(func.max(Label.id))
                .group_by(Label.review_item_id, Label.issue)
                .scalar_subquery()
            )
            labs = s.execute(
                select(Label.review_item_id, Label.issue, Label.label).where(Label.id.in_(latest))
            ).all()
        label_of = {(rid, iss): int(v) for rid, iss, v in labs}
        names = list(issues) if issues is not None else _issue_names(items, labs)
        counts = []
        for iss in names:
            f = fl = fp = sn = sl = sp = 0
            weight = 0.0
            for rid, stratum, prob, flagged, scores in items:
                lab = label_of.get((rid, iss))
                if iss in (flagged or []):
                    f += 1
                    if lab is not None:
                        fl += 1
                        fp += lab
                elif stratum == "sample" and iss in (scores or {}):
                    sn += 1
                    weight += 1.0 / (prob or 1.0)
                    if lab is not None:
                        sl += 1
                        sp += lab
            counts.append(IssueCounts(iss, f, fl, fp, sn, weight, sl, sp))
        return quality(counts)


def _issue_names(items: Sequence[Any], labs: Sequence[Any]) -> list[str]:
    names: dict[str, None] = {}
    for _, _, _, flagged, scores in items:
        for i in flagged or []:
            names[i] = None
        for i in scores or {}:
            names[i] = None
    for _, iss, _ in labs:
        names[iss] = None
    return list(names)
