"""Candidate issues: clusters of flagged items that share a hashtag, a sound, a creator or a caption.

Flagged items come from the scores file (flagged for any issue) or, without one, a raw proxy
(reported as spam/misleading, or acted on by the auto-moderator). Near-identical captions are
grouped with MinHash over word shingles of the normalized text (LSH bands, then a Jaccard check).
Clusters are ranked by size, by how concentrated the flags are in the cluster, and by growth.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from discovery.signals import SPAM_REASONS, _flag_sets, split_hashtags

_URL = re.compile(r"(https?://\S+|www\.\S+|\S+\.(com|net|org|io|ly|co)\S*)")
_NON_WORD = re.compile(r"[^a-z\s]+")
_PRIME = (1 << 31) - 1  # a * h stays below 2**62: exact in uint64


def normalize_text(text: str) -> str:
    """Lower-case, drop URLs, digits, punctuation and emoji, collapse spaces (template-level text)."""
    text = _URL.sub(" ", text.lower())
    return " ".join(_NON_WORD.sub(" ", text).split())


def shingles(text: str, k: int = 3) -> set[str]:
    """Word k-shingles of normalized text (character 4-grams for very short texts)."""
    words = normalize_text(text).split()
    if len(words) >= k:
        return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}
    joined = " ".join(words)
    return {joined[i : i + 4] for i in range(max(len(joined) - 3, 1))} if joined else set()


def minhash_signatures(
    texts: Sequence[str], *, num_perm: int = 64, random_state: int = 0
) -> np.ndarray:
    """(n, num_perm) MinHash signatures; empty texts get a row of max values (match nothing)."""
    rng = np.random.default_rng(random_state)
    a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)
    out = np.full((len(texts), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    for i, text in enumerate(texts):
        sh = shingles(text)
        if not sh:
            continue
        h = np.fromiter((zlib.crc32(s.encode()) for s in sh), dtype=np.uint64, count=len(sh))
        h %= np.uint64(_PRIME)
        out[i] = ((a[:, None] * h[None, :] + b[:, None]) % np.uint64(_PRIME)).min(axis=1)
    return out


def near_duplicate_groups(
    texts: Sequence[str | None],
    *,
    threshold: float = 0.6,
    num_perm: int = 64,
    bands: int = 16,
    random_state: int = 0,
) -> np.ndarray:
    """Group ids (one per text, -1 for empty) joining texts whose estimated Jaccard >= threshold."""
    # Identical normalized texts are one document: hash each distinct text once.
    normalized = [normalize_text(t) if isinstance(t, str) else "" for t in texts]
    distinct, inverse = np.unique(np.asarray(normalized, dtype=object), return_inverse=True)
    clean = [str(t) for t in distinct]
    sig = minhash_signatures(clean, num_perm=num_perm, random_state=random_state)
    n = len(clean)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    valid = np.array([bool(t) for t in clean], dtype=bool)
    rows = num_perm // bands
    for band in range(bands):
        buckets: dict[bytes, int] = {}
        part = sig[:, band * rows : (band + 1) * rows]
        for i in np.flatnonzero(valid):
            key = part[i].tobytes()
            j = buckets.setdefault(key, i)
            if j != i and np.mean(sig[i] == sig[j]) >= threshold:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[ri] = rj
    groups = np.array([find(i) for i in range(n)], dtype=int)
    return np.where(valid, groups, -1)[np.asarray(inverse).ravel()]


def flagged_items(
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame | None = None,
    *,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """item_id and issues (comma-joined) of flagged items: model flags, else the raw proxy."""
    if scores is not None:
        reserved = {"item_id", "as_of", "anchor", "flagged", "horizon_h", "model_version"}
        issues = [
            c
            for c in scores.columns
            if c not in reserved and pd.api.types.is_numeric_dtype(scores[c])
        ]
        if "flagged" in scores.columns:
            sets = _flag_sets(scores["flagged"])
        else:
            sets = [
                frozenset(i for i in issues if row[i] >= threshold)
                for row in scores[issues].to_dict("records")
            ]
        frame = pd.DataFrame({"item_id": scores["item_id"].astype("str"), "issues": sets})
        frame = frame[frame["issues"].map(len) > 0]
        merged = frame.groupby("item_id")["issues"].agg(lambda s: ",".join(sorted(set().union(*s))))
        return merged.reset_index()
    parts: list[pd.DataFrame] = []
    events = tables.get("events")
    if events is not None and len(events):
        rep = events[
            (events["kind"] == "report")
            & events["reason"].astype("str").str.lower().isin(SPAM_REASONS)
        ]
        parts.append(
            pd.DataFrame(
                {"item_id": rep["item_id"].astype("str").unique(), "issues": "low_quality"}
            )
        )
    moderation = tables.get("moderation")
    if moderation is not None and len(moderation):
        auto = moderation[
            (moderation["source"] == "auto") & moderation["action"].isin(("remove", "restrict"))
        ]
        parts.append(
            pd.DataFrame({"item_id": auto["item_id"].astype("str").unique(), "issues": "enforced"})
        )
    if not parts:
        return pd.DataFrame(
            {"item_id": pd.Series([], dtype="str"), "issues": pd.Series([], dtype="str")}
        )
    frame = pd.concat(parts, ignore_index=True)
    return frame.groupby("item_id")["issues"].agg(lambda s: ",".join(sorted(set(s)))).reset_index()


CLUSTER_COLUMNS = [
    "kind",
    "key",
    "size",
    "items",
    "flagged_share",
    "creators",
    "recent",
    "growth",
    "score",
    "issues",
    "example",
]


def candidate_clusters(
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame | None = None,
    *,
    threshold: float = 0.5,
    min_size: int = 5,
    recent_days: float = 2.0,
    top_k: int = 30,
    random_state: int = 0,
) -> pd.DataFrame:
    """Clusters of flagged items by hashtag, audio, creator and near-duplicate caption, ranked.

    size: flagged items in the cluster; flagged_share: size / all items with the key;
    growth: flagged items per day in the last `recent_days` over the rate before (+1 smoothed);
    score: size × flagged_share × sqrt(growth).
    """
    items = tables["items"].assign(item_id=lambda f: f["item_id"].astype("str"))
    flagged = flagged_items(tables, scores, threshold=threshold)
    if flagged.empty:
        return pd.DataFrame(columns=CLUSTER_COLUMNS)
    created = pd.to_datetime(items["created_at"], utc=True)
    end = created.max()
    t0 = created.min()
    recent_start = end - pd.Timedelta(days=recent_days)
    is_flagged = items["item_id"].isin(set(flagged["item_id"])).to_numpy()
    issue_of = flagged.set_index("item_id")["issues"]
    keys: list[pd.DataFrame] = []
    tags = (
        split_hashtags(items["hashtags"].reset_index(drop=True))
        if "hashtags" in items.columns
        else None
    )
    if tags is not None and len(tags):
        keys.append(
            pd.DataFrame(
                {
                    "row": tags["row"].to_numpy(),
                    "kind": "hashtag",
                    "key": tags["hashtag"].to_numpy(),
                }
            )
        )
    for col, kind in (("audio_id", "audio"), ("creator_id", "creator")):
        if col in items.columns:
            v = items[col].astype("str")
            ok = v.notna().to_numpy()
            keys.append(
                pd.DataFrame({"row": np.flatnonzero(ok), "kind": kind, "key": v[ok].to_numpy()})
            )
    if "caption" in items.columns:
        rows = np.flatnonzero(is_flagged)
        captions = items["caption"].to_numpy()[rows]
        groups = near_duplicate_groups(list(captions), random_state=random_state)
        ok = groups >= 0
        # Name a caption group by its first member's normalized text.
        names = {}
        for g, c in zip(groups[ok], captions[ok], strict=True):
            names.setdefault(g, normalize_text(c)[:80])
        keys.append(
            pd.DataFrame(
                {"row": rows[ok], "kind": "caption", "key": [names[g] for g in groups[ok]]}
            )
        )
    if not keys:
        return pd.DataFrame(columns=CLUSTER_COLUMNS)
    k = pd.concat(keys, ignore_index=True)
    k["flagged"] = is_flagged[k["row"].to_numpy()]
    k["created"] = created.to_numpy()[k["row"].to_numpy()]
    k["creator"] = items["creator_id"].astype("str").to_numpy()[k["row"].to_numpy()]
    k["item_id"] = items["item_id"].to_numpy()[k["row"].to_numpy()]
    totals = k.groupby(["kind", "key"]).size().rename("items")
    f = k[k["flagged"]].assign(is_recent=lambda x: x["created"] >= recent_start)
    span_before = max((recent_start - t0) / pd.Timedelta(days=1), 1.0)
    grouped = f.groupby(["kind", "key"])
    table = pd.DataFrame(
        {
            "size": grouped.size(),
            "creators": grouped["creator"].nunique(),
            "recent": grouped["is_recent"].sum().astype(int),
        }
    ).join(totals)
    table = table[table["size"] >= min_size]
    if table.empty:
        return pd.DataFrame(columns=CLUSTER_COLUMNS)
    table["flagged_share"] = table["size"] / table["items"]
    before = table["size"] - table["recent"]
    table["growth"] = (table["recent"] / recent_days + 1.0) / (before / span_before + 1.0)
    table["score"] = table["size"] * table["flagged_share"] * np.sqrt(table["growth"])
    table = table[~((table.index.get_level_values("kind") == "creator") & (table["creators"] < 1))]
    table = table.sort_values("score", ascending=False).head(top_k).reset_index()
    examples = []
    issues = []
    for kind, key in zip(table["kind"], table["key"], strict=True):
        members = f[(f["kind"] == kind) & (f["key"] == key)]
        first = members["row"].iloc[0]
        cap = items["caption"].iloc[first] if "caption" in items.columns else None
        examples.append(cap if isinstance(cap, str) else "")
        issues.append(
            ",".join(
                sorted(
                    {x for v in issue_of.reindex(members["item_id"]).dropna() for x in v.split(",")}
                )
            )
        )
    table["example"] = examples
    table["issues"] = issues
    table["flagged_share"] = table["flagged_share"].round(4)
    table["growth"] = table["growth"].round(3)
    table["score"] = table["score"].round(3)
    return table[CLUSTER_COLUMNS]
