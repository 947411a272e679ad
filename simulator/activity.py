"""Interaction events: heavy-tailed views, engagement as quality-dependent rates of views.

Counts are drawn per item (Poisson/binomial) and expanded with `np.repeat`; timestamps decay
after posting and follow the daily rhythm of the item's region. No per-event Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.contract import EVENT_KINDS, REPORT_REASONS
from simulator.config import SimConfig
from simulator.population import (
    LQ_MISLEADING,
    LQ_SPAM,
    Creators,
    Items,
    region_offsets,
    sigmoid,
)
from simulator.vocab import CLEAN_COMMENTS, DAILY_RHYTHM, DEFAULT_BANKS

KIND = {k: i for i, k in enumerate(EVENT_KINDS)}
# The default world's comment texts; a config's own are `cfg.banks.comment_texts`.
COMMENT_TEXTS: tuple[str, ...] = DEFAULT_BANKS.comment_texts
# P(reason | kind of item) over REPORT_REASONS (spam, misleading, harassment, hate, nudity,
# violence, other); rows: fine, low-quality spam/low-effort, misleading, harmful comments.
_REASON_P = np.array(
    [
        [0.25, 0.15, 0.15, 0.05, 0.10, 0.10, 0.20],
        [0.70, 0.10, 0.03, 0.02, 0.05, 0.00, 0.10],
        [0.15, 0.65, 0.05, 0.02, 0.00, 0.03, 0.10],
        [0.05, 0.05, 0.50, 0.30, 0.02, 0.03, 0.05],
    ]
)
assert _REASON_P.shape[1] == len(REPORT_REASONS)
TROLL_SHARE = 0.015  # share of users who write the abusive comments


@dataclass
class Events:
    item: np.ndarray  # int32 index into items
    kind: np.ndarray  # int8 code into EVENT_KINDS
    t_h: np.ndarray  # hours since start
    user: np.ndarray  # int32 index into the user pool, -1 for logged-out views
    watch: np.ndarray  # float, NaN except views
    reason: np.ndarray  # int8 code into REPORT_REASONS, -1 except reports
    text: np.ndarray  # int16 code into cfg.banks.comment_texts, -1 except comments

    def __len__(self) -> int:
        return len(self.item)

    def take(self, idx: np.ndarray) -> Events:
        return Events(**{k: v[idx] for k, v in self.__dict__.items()})


def item_quality(items: Items, creators: Creators, random_state: np.random.Generator) -> np.ndarray:
    """Latent per-item quality: the creator's, plus noise, minus a penalty for low quality."""
    rng = random_state
    return (
        creators.quality[items.creator] + rng.normal(0.0, 0.6, len(items)) - 1.0 * items.low_quality
    )


def expected_views(
    cfg: SimConfig,
    items: Items,
    creators: Creators,
    quality: np.ndarray,
    random_state: np.random.Generator,
) -> np.ndarray:
    """Heavy-tailed (lognormal) expected views, driven by followers and quality."""
    rng = random_state
    n = len(items)
    log_lam = (
        0.45 * np.log1p(creators.followers[items.creator])
        + 0.6 * quality
        + np.where(items.fmt == 2, -0.4, np.where(items.fmt == 1, -0.3, 0.0))
        + rng.normal(0.0, 1.0, n)
    )
    lam = np.exp(log_lam - log_lam.max())
    lam *= cfg.mean_views / lam.mean()
    # A single viral item may not own more than 2% of all views (keeps memory predictable).
    return np.minimum(lam, max(2000.0, 0.02 * n * cfg.mean_views))


# Cumulative daily rhythm (normalized to mean 1 per hour): "activity time" runs faster in the
# evening and slower at night. Delays drawn in activity time and mapped back to clock time
# give events that decay after posting and follow the daily rhythm, without rejection loops.
_RATE = np.asarray(DAILY_RHYTHM) / np.mean(DAILY_RHYTHM)
_CUM = np.r_[0.0, np.cumsum(_RATE)]  # _CUM[24] == 24


def _to_activity(t_local: np.ndarray) -> np.ndarray:
    day = np.floor(t_local / 24.0)
    rem = t_local - 24.0 * day
    hour = np.minimum(rem.astype(np.int64), 23)
    return 24.0 * day + _CUM[hour] + _RATE[hour] * (rem - hour)


def _from_activity(s: np.ndarray) -> np.ndarray:
    day = np.floor(s / 24.0)
    rem = s - 24.0 * day
    hour = np.clip(np.searchsorted(_CUM, rem, side="right") - 1, 0, 23)
    return 24.0 * day + hour + (rem - _CUM[hour]) / _RATE[hour]


def event_times(
    created_h: np.ndarray, live: np.ndarray, offset: np.ndarray, random_state: np.random.Generator
) -> np.ndarray:
    """Event times after posting: a mixture of fast and slow decays on the daily rhythm."""
    rng = random_state
    n = len(created_h)
    comp = np.searchsorted(np.array([0.55, 0.88]), rng.random(n), side="right")
    scale = np.array([3.0, 20.0, 80.0])[comp] * np.where(live, 0.3, 1.0)
    delay = rng.exponential(1.0, n) * scale + 0.01
    local = created_h + offset
    return np.maximum(_from_activity(_to_activity(local) + delay) - offset, created_h + 0.001)


def simulate_events(
    cfg: SimConfig,
    items: Items,
    creators: Creators,
    n_users: int,
    random_state: np.random.Generator,
) -> Events:
    """All interaction events of all items within the window (before moderation takes effect)."""
    rng = random_state
    n = len(items)
    lq = items.low_quality.astype(float)
    hi = items.harmful.astype(float)
    spam = (items.lq_kind == LQ_SPAM).astype(float)
    misleading = (items.lq_kind == LQ_MISLEADING).astype(float)
    q = item_quality(items, creators, rng)
    views = rng.poisson(expected_views(cfg, items, creators, q, rng))

    rates = {
        "like": sigmoid(-2.4 + 0.45 * q - 1.2 * lq),
        "share": sigmoid(-4.6 + 0.45 * q),
        "comment": sigmoid(-4.3 + 0.25 * q + 1.4 * hi),
        "report": sigmoid(-6.9 + 3.6 * lq + 3.2 * hi + 0.5 * misleading),
        "not_interested": sigmoid(-5.4 + 2.0 * lq - 0.3 * q),
        "download": sigmoid(-5.4 + 0.4 * q),
        "follow": sigmoid(-5.6 + 0.5 * q - 1.0 * spam),
    }
    counts = np.zeros((n, len(EVENT_KINDS)), np.int64)
    counts[:, KIND["view"]] = views
    for kind, p in rates.items():
        counts[:, KIND[kind]] = rng.binomial(views, p)

    item = np.repeat(np.tile(np.arange(n, dtype=np.int32), len(EVENT_KINDS)), counts.T.ravel())
    kind = np.repeat(np.repeat(np.arange(len(EVENT_KINDS), dtype=np.int8), n), counts.T.ravel())
    created = items.created_h[item]
    t_h = event_times(created, items.fmt[item] == 2, region_offsets()[items.region[item]], rng)
    keep = t_h < cfg.days * 24.0
    item, kind, t_h = item[keep], kind[keep], t_h[keep]
    m = len(item)
    is_view = kind == KIND["view"]

    # Users: activity is heavy-tailed too (rank density ~ r^-2/3, drawn by inverse CDF rather
    # than a weighted choice, which is slow at millions of events); abusive comments come from
    # a small troll pool.
    perm = rng.permutation(n_users).astype(np.int32)
    user = perm[np.minimum((n_users * rng.random(m) ** 3.0).astype(np.int64), n_users - 1)]
    user[is_view & (rng.random(m) < cfg.anonymous_view_share)] = -1

    mean_watch = sigmoid(0.3 + 0.4 * q - 0.4 * lq) * np.where(items.fmt == 2, 0.6, 1.0)
    mw = np.clip(mean_watch[item[is_view]], 0.02, 0.98)
    watch = np.full(m, np.nan)
    watch[is_view] = np.round(rng.beta(mw * 3.0, (1.0 - mw) * 3.0), 3)

    reason = np.full(m, -1, np.int8)
    is_report = np.flatnonzero(kind == KIND["report"])
    row = np.where(
        items.harmful, 3, np.where(misleading > 0, 2, np.where(items.low_quality, 1, 0))
    )[item[is_report]]
    cum = np.cumsum(_REASON_P, axis=1)[row]
    reason[is_report] = np.minimum(
        (rng.random(is_report.size)[:, None] > cum).sum(axis=1), len(REPORT_REASONS) - 1
    )

    text = np.full(m, -1, np.int16)
    is_comment = np.flatnonzero(kind == KIND["comment"])
    ci = item[is_comment]
    u = rng.random(is_comment.size)
    p_toxic = np.where(items.harmful[ci], 0.4, 0.015)
    p_spam = np.where(items.lq_kind[ci] == LQ_SPAM, 0.25, 0.01)
    toxic = u < p_toxic
    spammy = ~toxic & (u < p_toxic + p_spam)
    n_toxic = len(cfg.banks.toxic_comments)
    toxic_codes = np.arange(len(CLEAN_COMMENTS), len(CLEAN_COMMENTS) + n_toxic)
    spam_codes = np.arange(len(CLEAN_COMMENTS) + n_toxic, len(cfg.banks.comment_texts))
    text[is_comment] = rng.integers(0, len(CLEAN_COMMENTS), is_comment.size)
    text[is_comment[toxic]] = rng.choice(toxic_codes, size=int(toxic.sum()))
    text[is_comment[spammy]] = rng.choice(spam_codes, size=int(spammy.sum()))
    n_trolls = max(1, int(n_users * TROLL_SHARE))
    user[is_comment[toxic]] = rng.integers(0, n_trolls, int(toxic.sum()))

    order = np.argsort(t_h)  # deterministic; ties in float hours are practically absent
    return Events(item, kind, t_h, user, watch, reason, text).take(order)
