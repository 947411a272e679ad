"""Moderation (auto-moderator with a false-positive rate, human reviewers), appeals and labels.

The auto-moderator scores each item once, a little after posting, from noisy signals of its
latent badness and the reports seen so far; its threshold is set so that exactly
`auto_fp_rate` of non-violating items are hit. Appeals are filed and overturned more often
when the action was wrong. Removed items stop collecting events; restricted ones mostly do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.activity import KIND, Events
from simulator.config import SimConfig
from simulator.population import (
    LQ_MISLEADING,
    LQ_NONE,
    LQ_SPAM,
    Creators,
    Items,
    segment_mask,
    window_h,
)
from simulator.vocab import MODERATION_POLICIES

ACTIONS = ("remove", "restrict", "restore")
SOURCES = ("auto", "human")
OUTCOMES = ("upheld", "overturned", "pending")
LABEL_ISSUES = ("low_quality", "harmful_interactions", "wrongful_enforcement")
LABEL_SOURCES = ("review", "appeal")
POLICY = {p: i for i, p in enumerate(MODERATION_POLICIES)}
# What a mistaken action cites (spam rules fire most, then harassment and misinformation).
_FP_POLICY_P = np.array([0.35, 0.15, 0.20, 0.10, 0.12, 0.08])
RESTRICT_THINNING = 0.75  # share of events a restricted item loses


@dataclass
class Enforcement:
    mod_item: np.ndarray
    mod_t: np.ndarray
    mod_action: np.ndarray
    mod_source: np.ndarray
    mod_policy: np.ndarray
    app_item: np.ndarray
    app_filed: np.ndarray
    app_resolved: np.ndarray  # NaN when pending
    app_outcome: np.ndarray
    lab_item: np.ndarray
    lab_issue: np.ndarray
    lab_value: np.ndarray
    lab_t: np.ndarray
    lab_source: np.ndarray
    first_t: np.ndarray  # per item: time of the first remove/restrict, NaN if none
    wrongful: np.ndarray  # per item: True where that first action hit a non-violating item


def _truth_policy(items: Items, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The policy a correct action cites, from the item's true problem."""
    kind = items.lq_kind[idx]
    harassment = np.where(rng.random(idx.size) < 0.6, POLICY["harassment"], POLICY["hate_speech"])
    right = np.where(
        kind == LQ_MISLEADING,
        POLICY["misinformation"],
        np.where(kind != LQ_NONE, POLICY["spam"], harassment),
    )
    # Reviewers and rules often cite a neighbouring policy, even when the action is right.
    other = rng.choice(len(MODERATION_POLICIES), size=idx.size, p=_FP_POLICY_P)
    return np.where(rng.random(idx.size) < 0.15, other, right).astype(np.int8)


def _remove_prob(items: Items, idx: np.ndarray, violates: np.ndarray) -> np.ndarray:
    kind = items.lq_kind[idx]
    return np.where(
        ~violates[idx],
        0.55,
        np.where(kind == LQ_SPAM, 0.8, np.where(kind == LQ_NONE, 0.35, 0.5)),
    )


def _nth_report_time(events: Events, n_items: int, nth: int) -> np.ndarray:
    """Per item, the time of its `nth` report (1-based); NaN when it has fewer."""
    rep = np.flatnonzero(events.kind == KIND["report"])
    out = np.full(n_items, np.nan)
    if not rep.size:
        return out
    item, t = events.item[rep], events.t_h[rep]
    order = np.lexsort((t, item))
    item, t = item[order], t[order]
    first = np.r_[0, np.flatnonzero(np.diff(item)) + 1]
    rank = np.arange(item.size) - np.repeat(first, np.diff(np.r_[first, item.size]))
    hit = rank == nth - 1
    out[item[hit]] = t[hit]
    return out


def moderate(
    cfg: SimConfig,
    items: Items,
    creators: Creators,
    events: Events,
    audio_vocab: list[str],
    random_state: np.random.Generator,
) -> Enforcement:
    """Auto and human moderation, misfire incidents, appeals, restores and labels."""
    rng = random_state
    n = len(items)
    end_h = cfg.days * 24.0
    lq, hi = items.low_quality, items.harmful
    violates = lq | hi

    # --- auto-moderator: one scan per item, from signals known at scan time
    scan = items.created_h + rng.lognormal(np.log(2.0), 0.8, n)
    rep = events.kind == KIND["report"]
    early = rep & (events.t_h < scan[events.item])
    reports_before = np.bincount(events.item[early], minlength=n)
    z = (
        1.7 * lq
        + 1.5 * hi
        + 0.6 * np.log1p(reports_before)
        + 0.5 * creators.spam[items.creator]
        + rng.normal(0.0, 1.0, n)
    )
    clean_z = z[~violates]
    thr = np.quantile(clean_z, 1.0 - cfg.auto_fp_rate) if clean_z.size else np.inf
    in_window = scan < end_h
    auto = (z > thr) & in_window
    auto_policy = np.where(
        violates,
        _truth_policy(items, np.arange(n), rng),
        rng.choice(len(MODERATION_POLICIES), size=n, p=_FP_POLICY_P),
    ).astype(np.int8)

    # --- enforcement misfires: the rule's false-positive rate jumps inside the segment
    tp_rate = float(np.mean(auto & violates))
    fp_rate = float(np.mean(auto & ~violates))
    for j, inc in enumerate(cfg.incidents):
        if inc.kind != "enforcement_misfire":
            continue
        lo, hi_t = window_h(cfg, inc)
        seg = segment_mask(items, inc.segment, audio_vocab) & (scan >= lo)
        seg &= scan < min(hi_t, end_h)
        base_w = fp_rate / max(tp_rate + fp_rate, 1e-9)
        w = min(inc.strength * max(base_w, 0.02), 0.85)
        need = tp_rate * seg.sum() * w / (1.0 - w) - fp_rate * seg.sum()
        # Exactly the needed number of extra false positives, spread evenly over the window
        # (systematic sampling of the candidates in scan order): every seed plants an
        # incident of the configured size, without lucky or unlucky first days.
        candidates = np.flatnonzero(seg & ~auto & ~violates)
        candidates = candidates[np.argsort(scan[candidates], kind="stable")]
        k = int(np.clip(round(need), 0, candidates.size))
        hit = np.zeros(n, bool)
        if k:
            picks = ((np.arange(k) + rng.random()) * (candidates.size / k)).astype(np.int64)
            hit[candidates[np.minimum(picks, candidates.size - 1)]] = True
        auto |= hit
        auto_policy[hit] = POLICY[inc.policy or "adult_content"]
        items.incident[hit] = j
    auto_remove = rng.random(n) < _remove_prob(items, np.arange(n), violates)

    # --- human review of heavily reported items the auto-moderator left alone
    t3 = _nth_report_time(events, n, 3)
    human_t = t3 + rng.uniform(2.0, 36.0, n)
    p_act = np.where(violates, 0.85, cfg.human_fp_rate)
    human = ~auto & ~np.isnan(t3) & (rng.random(n) < 0.7) & (rng.random(n) < p_act)
    human &= human_t < end_h
    human_remove = rng.random(n) < np.where(violates, 0.6, 0.4)
    human_policy = np.where(
        violates,
        _truth_policy(items, np.arange(n), rng),
        rng.choice(len(MODERATION_POLICIES), size=n, p=_FP_POLICY_P),
    ).astype(np.int8)

    acted = auto | human
    first_t = np.where(auto, scan, np.where(human, human_t, np.nan))
    first_remove = np.where(auto, auto_remove, human_remove)
    first_source = np.where(auto, 0, 1)
    first_policy = np.where(auto, auto_policy, human_policy)
    wrongful = acted & ~violates

    # --- appeals on the first action: filed and overturned far more often when it was wrong
    ai = np.flatnonzero(acted)
    wrong = wrongful[ai]
    filed = first_t[ai] + rng.lognormal(np.log(8.0), 0.9, ai.size)
    files = rng.random(ai.size) < np.where(wrong, cfg.appeal_rate_wrong, cfg.appeal_rate_right)
    files &= filed < end_h
    ai, wrong, filed = ai[files], wrong[files], filed[files]
    resolved = filed + rng.lognormal(np.log(30.0), 0.7, ai.size)
    overturned = rng.random(ai.size) < np.where(
        wrong, cfg.overturn_rate_wrong, cfg.overturn_rate_right
    )
    pending = (resolved >= end_h) | (rng.random(ai.size) < 0.03)
    outcome = np.where(pending, 2, np.where(overturned, 1, 0)).astype(np.int8)
    resolved = np.where(pending, np.nan, resolved)
    restored = ai[outcome == 1]
    restore_t = np.full(n, np.nan)
    restore_t[restored] = resolved[outcome == 1]

    # --- a human follow-up removes some auto-restricted violators (unless restored)
    follow_t = first_t + rng.uniform(6.0, 48.0, n)
    follow = auto & ~auto_remove & violates & (rng.random(n) < 0.25) & (follow_t < end_h)
    follow &= np.isnan(restore_t)

    mod_item = np.concatenate([np.flatnonzero(acted), restored, np.flatnonzero(follow)])
    mod_t = np.concatenate([first_t[acted], restore_t[restored], follow_t[follow]])
    mod_action = np.concatenate(
        [
            np.where(first_remove[acted], 0, 1),
            np.full(restored.size, 2),
            np.zeros(int(follow.sum()), np.int64),
        ]
    ).astype(np.int8)
    mod_source = np.concatenate(
        [first_source[acted], np.ones(restored.size), np.ones(int(follow.sum()))]
    ).astype(np.int8)
    mod_policy = np.concatenate(
        [first_policy[acted], first_policy[restored], first_policy[follow]]
    ).astype(np.int8)

    # --- labels: a random review sample (noisy), plus appeal outcomes
    reviewed = np.flatnonzero(rng.random(n) < cfg.review_rate)
    rev_t = items.created_h[reviewed] + rng.uniform(24.0, 96.0, reviewed.size)
    ok = rev_t < end_h
    reviewed, rev_t = reviewed[ok], rev_t[ok]
    flip = rng.random((2, reviewed.size)) < cfg.label_noise
    lab_lq = lq[reviewed] ^ flip[0]
    lab_hi = hi[reviewed] ^ flip[1]
    done = outcome < 2
    lab_item = np.concatenate([reviewed, reviewed, ai[done]])
    lab_issue = np.concatenate(
        [np.zeros(reviewed.size), np.ones(reviewed.size), np.full(int(done.sum()), 2)]
    ).astype(np.int8)
    lab_value = np.concatenate([lab_lq, lab_hi, outcome[done] == 1]).astype(np.int8)
    lab_t = np.concatenate([rev_t, rev_t, resolved[done]])
    lab_source = np.concatenate([np.zeros(2 * reviewed.size), np.ones(int(done.sum()))]).astype(
        np.int8
    )

    order = np.argsort(mod_t, kind="stable")
    app_order = np.argsort(filed, kind="stable")
    lab_order = np.argsort(lab_t, kind="stable")
    return Enforcement(
        mod_item=mod_item[order],
        mod_t=mod_t[order],
        mod_action=mod_action[order],
        mod_source=mod_source[order],
        mod_policy=mod_policy[order],
        app_item=ai[app_order],
        app_filed=filed[app_order],
        app_resolved=resolved[app_order],
        app_outcome=outcome[app_order],
        lab_item=lab_item[lab_order],
        lab_issue=lab_issue[lab_order],
        lab_value=lab_value[lab_order],
        lab_t=lab_t[lab_order],
        lab_source=lab_source[lab_order],
        first_t=first_t,
        wrongful=wrongful,
    )


def apply_to_events(
    events: Events, enf: Enforcement, n_items: int, random_state: np.random.Generator
) -> Events:
    """Drop events a removed item can no longer get, and most of a restricted item's."""
    rng = random_state
    inf = np.inf
    removed_from = np.full(n_items, inf)
    restricted_from = np.full(n_items, inf)
    restored_at = np.full(n_items, inf)
    for action, target in ((0, removed_from), (1, restricted_from), (2, restored_at)):
        sel = enf.mod_action == action
        # The earliest action of each kind per item (np.minimum.at is vectorized).
        np.minimum.at(target, enf.mod_item[sel], enf.mod_t[sel])
    item, t = events.item, events.t_h
    after_restore = t >= restored_at[item]
    gone = (t >= removed_from[item]) & ~after_restore
    limited = (t >= restricted_from[item]) & ~after_restore & ~gone
    drop = gone | (limited & (rng.random(len(events)) < RESTRICT_THINNING))
    return events.take(np.flatnonzero(~drop))
