"""Online scoring: validated snapshots in, probabilities, flags and reason codes out.

The router (`serving.routers.score`) parses and validates the body; this module checks the
snapshots against what the serving model reads (`InputContract`), scores one item or a batch
with the bundle's no-DataFrame paths, and spools the flagged (or sampled) items before the
answer goes out: one item as a FlaggedItem, a batch as its request and response bytes, so no
snapshot is serialised here. Issues whose probability is None (not applicable, or disabled
in the bundle) are answered as null and never flagged.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from features.schema import SNAPSHOT_COLUMNS
from models.flags import flag_matrix
from serving.flag_writer import flagged_item, to_json
from serving.limits import NUL

TOP_K = 5
# At most this many field problems are listed in one 422 (a batch can have thousands).
MAX_PROBLEMS = 20


class InputContract:
    """What the serving model reads: fields a snapshot must carry (null allowed: unknown)
    and fields it may carry (the snapshot schema's, plus the columns the bundle declares,
    e.g. a flat dataset's own)."""

    def __init__(self, bundle: Any) -> None:
        fields = getattr(bundle, "input_fields", None)
        self.required = frozenset(fields if fields is not None else ("item_id",))
        example = bundle.input_example() or {}
        self.known = frozenset(SNAPSHOT_COLUMNS) | self.required | frozenset(example)
        self._known_sorted = sorted(self.known)
        # Anchors the model scores (null and "" read as "post"): any other anchor matches
        # none of its issues, so the item would be answered all-null and never flagged.
        anchors = getattr(bundle, "anchors", None)
        self.anchors = (
            frozenset({"post", *anchors.values()}) if isinstance(anchors, Mapping) else None
        )

    def problems(self, records: Iterable[Mapping[str, Any]], prefix: tuple[Any, ...]) -> list[dict]:
        """Validation errors (FastAPI's shape) for missing and unknown fields; [] when fine."""
        out: list[dict] = []
        required, known = self.required, self.known
        anchors = self.anchors
        for i, record in enumerate(records):
            keys = record.keys()
            anchor = record.get("anchor")
            bad_anchor = anchors is not None and anchor and anchor not in anchors
            if keys >= required and known.issuperset(keys) and not bad_anchor:
                continue
            loc = (*prefix, i) if prefix and prefix[-1] == "items" else prefix
            if bad_anchor:
                out.append(
                    {
                        "type": "literal_error",
                        "loc": (*loc, "anchor"),
                        "msg": f"anchor {anchor!r} is not one the serving model scores; "
                        f"expected one of {', '.join(sorted(anchors))} (null: post)",
                    }
                )
            missing = sorted(required - keys)
            if missing:
                out.append(
                    {
                        "type": "missing",
                        "loc": loc,
                        "msg": "missing fields the serving model needs (send null when "
                        f"unknown): {', '.join(missing)}",
                    }
                )
            for name in sorted(k for k in keys if k not in known):
                out.append(
                    {"type": "extra_forbidden", "loc": (*loc, name), "msg": self.unknown(name)}
                )
            if len(out) >= MAX_PROBLEMS:
                break
        return out[:MAX_PROBLEMS]

    def unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._known_sorted, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " of the serving model"
        return f"{name}: unknown field{hint}"


def nul_problems(data: Any, loc: tuple[Any, ...] = ("body",)) -> list[dict]:
    """Where a parsed body holds NUL characters (the review store cannot keep them)."""
    out: list[dict] = []

    def walk(value: Any, where: tuple[Any, ...]) -> None:
        if len(out) >= MAX_PROBLEMS:
            return
        if isinstance(value, str):
            if NUL in value:
                out.append(
                    {"type": "string_nul", "loc": where, "msg": "must not contain NUL (\\u0000)"}
                )
        elif isinstance(value, dict):
            for k, v in value.items():
                if NUL in k:
                    out.append(
                        {"type": "string_nul", "loc": where, "msg": "field name contains NUL"}
                    )
                walk(v, (*where, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*where, i))

    walk(data, loc)
    return out


def sampled(item_id: str, rate: float) -> bool:
    """Whether an unflagged item goes to the review queue as part of the random sample.

    A hash of the id, not a random draw: the same item is in or out on every request, and
    the choice is independent of its scores (what honest precision/recall estimates need)."""
    return rate > 0 and zlib.crc32(item_id.encode()) < rate * 4294967296.0


def _batch_reasons(
    bundle: Any,
    records: list[dict[str, Any]],
    design: Any,
    rows: list[int],
    flagged: list[list[str]],
) -> list[dict]:
    """Reason-code dicts per flagged row (`rows` index the batch, `flagged[k]` are row
    rows[k]'s issues), from the batch's own design: one TreeSHAP pass per issue over the rows
    flagged for it, in each row's flagged-issue order."""
    out: list[dict] = [{} for _ in rows]
    for issue in bundle.issue_names:
        which = [k for k, f in enumerate(flagged) if issue in f]
        if not which:
            continue
        picked = [rows[k] for k in which]
        explained = bundle.explain_design(
            [records[i] for i in picked], design.take(picked), issue, TOP_K
        )
        for k, reasons in zip(which, explained, strict=True):
            out[k][issue] = reasons
    return [{issue: r[issue] for issue in f} for r, f in zip(out, flagged, strict=True)]


def score_one(svc: Any, model: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Score one validated snapshot; spool it if flagged (or sampled). SpoolError when the
    spool cannot take it: the caller must not answer."""
    probs, flagged, reasons = model.bundle.score_explain_one(record, top_k=TOP_K)
    svc.metrics.scores.observe_row(probs)
    svc.metrics.items_scored.inc()
    if flagged:
        svc.metrics.count_flags(dict.fromkeys(flagged, 1))
    if flagged or sampled(record["item_id"], svc.sample_rate):
        item = flagged_item(record, probs, flagged, reasons, model.version, datetime.now(UTC))
        svc.spool.append_item(to_json(item))
    return {
        "item_id": record["item_id"],
        "probabilities": probs,
        "flagged": flagged,
        "reasons": reasons,
        "model_version": model.version,
        "disabled": model.bundle.disabled,
    }


def score_batch(
    svc: Any, model: Any, records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[int]]:
    """Score validated snapshots in one vectorised call and explain the flagged ones.

    Returns the response items and the rows the review queue gets (flagged, or sampled);
    the route spools those with the request and response bytes once the response exists.
    """
    bundle = model.bundle
    issues = list(bundle.issue_names)
    design = bundle.design_records(records)
    probs = np.asarray(bundle.score_design(design), dtype=np.float64)
    hits = flag_matrix(bundle, probs)  # the rule `surfacer score` and the re-scorer flag by
    svc.metrics.scores.observe_many(issues, probs)
    svc.metrics.items_scored.inc(len(records))
    svc.metrics.count_flags(
        {issue: int(n) for issue, n in zip(issues, hits.sum(axis=0), strict=True)}
    )
    flagged_rows = np.flatnonzero(hits.any(axis=1)).tolist()
    hit_rows = hits[flagged_rows].tolist()  # Python bools: cheaper to walk than numpy rows
    flagged_issues = [[iss for iss, hit in zip(issues, h, strict=True) if hit] for h in hit_rows]
    explained = dict(
        zip(
            flagged_rows,
            zip(
                flagged_issues,
                _batch_reasons(bundle, records, design, flagged_rows, flagged_issues),
                strict=True,
            ),
            strict=True,
        )
    )
    version = model.version
    disabled = bundle.disabled  # one dict shared by every item of the answer
    rate = svc.sample_rate
    out = []
    persist = []
    # NaN -> None so the response says null for "not applicable".
    rows = np.where(np.isnan(probs), None, probs).tolist()
    for i, (record, row) in enumerate(zip(records, rows, strict=True)):
        flagged, reasons = explained.get(i, ([], {}))
        if flagged or sampled(record["item_id"], rate):
            persist.append(i)
        out.append(
            {
                "item_id": record["item_id"],
                "probabilities": dict(zip(issues, row, strict=True)),
                "flagged": flagged,
                "reasons": reasons,
                "model_version": version,
                "disabled": disabled,
            }
        )
    return out, persist
