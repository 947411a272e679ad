"""Creators, items and their latent truth (low quality, harmful interactions).

All draws are vectorized over creators/items. Times are float hours since the simulation
start; `simulator.core` converts them to UTC timestamps when it builds the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulator.config import Incident, SimConfig
from simulator.vocab import (
    CAPTION_CLOSERS,
    CAPTION_OPENERS,
    CATEGORIES,
    CATEGORY_NAMES,
    CATEGORY_TAGS,
    CATEGORY_TOPICS,
    DAILY_RHYTHM,
    DEFAULT_BANKS,
    EMOJIS,
    GENERAL_TAGS,
    LANGUAGES,
    LOW_EFFORT_CAPTIONS,
    MISLEADING_PRONE,
    REGION_NAMES,
    REGIONS,
    SPAM_EMOJIS,
    TOPIC_TAGS,
    TextBanks,
)

FORMAT_NAMES = ("video", "photo", "live")
N_AUDIO = 5000
# Low-quality kinds (0 means the item is fine).
LQ_NONE, LQ_SPAM, LQ_LOW_EFFORT, LQ_MISLEADING = 0, 1, 2, 3
P_CAMPAIGN_SPAM = 0.9  # low-quality probability of a campaign item


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def zipf_probs(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** exponent
    return w / w.sum()


def solve_intercept(
    linear: np.ndarray, target: float, fixed: np.ndarray | None = None, cap: float = 0.97
) -> np.ndarray:
    """Probabilities sigmoid(b + linear) with b solved (bisection) so the mean hits `target`.

    `fixed` holds already-decided probabilities (NaN where free); they count in the mean.
    """
    free = np.ones(linear.shape, bool) if fixed is None else np.isnan(fixed)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        p = np.minimum(sigmoid(mid + linear), cap)
        if fixed is not None:
            p = np.where(free, p, fixed)
        if p.mean() < target:
            lo = mid
        else:
            hi = mid
    p = np.minimum(sigmoid((lo + hi) / 2 + linear), cap)
    return p if fixed is None else np.where(free, p, fixed)


def rhythm_accept(
    t_h: np.ndarray, utc_offset: np.ndarray, random_state: np.random.Generator
) -> np.ndarray:
    """Thinning step of the daily rhythm: keep a time with probability rhythm(local hour)/max."""
    rng = random_state
    rhythm = np.asarray(DAILY_RHYTHM)
    hour = np.floor(np.mod(t_h + utc_offset, 24.0)).astype(np.int64)
    return rng.random(len(t_h)) < rhythm[hour] / rhythm.max()


def rhythm_times(
    n: int, lo: float, hi: float, utc_offset: np.ndarray, random_state: np.random.Generator
) -> np.ndarray:
    """Hours since start in [lo, hi) following the local-time daily rhythm (evening peak)."""
    rng = random_state
    t = rng.uniform(lo, hi, n)
    todo = np.flatnonzero(~rhythm_accept(t, utc_offset, rng))
    for _ in range(30):  # rejection sampling; each round keeps about half of what is left
        if not todo.size:
            break
        t[todo] = rng.uniform(lo, hi, todo.size)
        todo = todo[~rhythm_accept(t[todo], utc_offset[todo], rng)]
    return t


@dataclass
class Creators:
    region: np.ndarray  # int codes into REGION_NAMES
    created_h: np.ndarray  # hours since start (negative: before the window)
    verified: np.ndarray
    followers: np.ndarray
    quality: np.ndarray
    spam: np.ndarray
    category: np.ndarray  # main category code
    activity: np.ndarray

    def __len__(self) -> int:
        return len(self.region)

    def extend(self, other: Creators) -> Creators:
        return Creators(
            **{k: np.concatenate([getattr(self, k), getattr(other, k)]) for k in self.__dict__}
        )


@dataclass
class Items:
    creator: np.ndarray
    created_h: np.ndarray
    fmt: np.ndarray  # codes into FORMAT_NAMES
    duration: np.ndarray
    region: np.ndarray
    language: np.ndarray  # codes into LANGUAGES
    category: np.ndarray
    caption: np.ndarray  # object array of str or None
    hashtags: np.ndarray  # object array of str
    audio: np.ndarray  # codes into the audio vocabulary, -1 for none
    p_lq: np.ndarray
    u_lq: np.ndarray  # the uniform draw behind low_quality (kept so incidents shift it monotonely)
    lq_kind: np.ndarray
    p_hi: np.ndarray
    u_hi: np.ndarray
    incident: np.ndarray  # index into config.incidents, -1 for none

    def __len__(self) -> int:
        return len(self.creator)

    @property
    def low_quality(self) -> np.ndarray:
        return self.u_lq < self.p_lq

    @property
    def harmful(self) -> np.ndarray:
        return self.u_hi < self.p_hi

    def extend(self, other: Items) -> Items:
        return Items(
            **{k: np.concatenate([getattr(self, k), getattr(other, k)]) for k in self.__dict__}
        )


def region_offsets() -> np.ndarray:
    return np.array([REGIONS[r][1] for r in REGION_NAMES])


def make_creators(cfg: SimConfig, n: int, random_state: np.random.Generator) -> Creators:
    """Organic creators: heavy-tailed followers, a few verified, a few percent spammers."""
    rng = random_state
    shares = np.array([REGIONS[r][0] for r in REGION_NAMES])
    region = rng.choice(len(REGION_NAMES), size=n, p=shares / shares.sum())
    spam = rng.random(n) < cfg.spam_creator_share
    followers = np.where(
        spam, rng.lognormal(3.5, 1.5, n), rng.lognormal(5.6, 2.3, n)
    )  # median ~270, tail into the millions
    followers = np.minimum(np.floor(followers), 8e7).astype(np.int64)
    verified = ~spam & (rng.random(n) < sigmoid(1.8 * (np.log10(followers + 1.0) - 5.6)))
    # Account age overlaps: many genuine creators are new, many spammers use aged accounts.
    recent = rng.random(n) < np.where(spam, 0.55, 0.2)
    created_h = -np.where(recent, rng.uniform(24, 200 * 24, n), rng.uniform(200 * 24, 1500 * 24, n))
    cat_shares = np.array([CATEGORIES[c][0] for c in CATEGORY_NAMES])
    category = rng.choice(len(CATEGORY_NAMES), size=n, p=cat_shares / cat_shares.sum())
    activity = rng.lognormal(0.0, 0.9, n) * np.where(spam, 2.0, 1.0)
    return Creators(
        region=region,
        created_h=created_h,
        verified=verified,
        followers=followers,
        quality=rng.normal(0.0, 1.0, n),
        spam=spam,
        category=category,
        activity=activity,
    )


def _languages(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lang_index = {lang: i for i, lang in enumerate(LANGUAGES)}
    out = np.empty(len(region), np.int16)
    u = rng.random(len(region))
    for r, name in enumerate(REGION_NAMES):
        mask = region == r
        langs, weights = REGIONS[name][2], np.cumsum(REGIONS[name][3])
        pick = np.searchsorted(weights / weights[-1], u[mask], side="right")
        out[mask] = np.array([lang_index[lang] for lang in langs])[np.minimum(pick, len(langs) - 1)]
    return out


def _formats(category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    table = np.cumsum(np.array([CATEGORIES[c][2] for c in CATEGORY_NAMES]), axis=1)
    u = rng.random(len(category))[:, None]
    return np.minimum((u > table[category]).sum(axis=1), 2).astype(np.int8)


def _durations(fmt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(fmt)
    video = np.clip(rng.lognormal(np.log(22.0), 0.8, n), 3.0, 600.0)
    live = np.clip(rng.lognormal(np.log(1800.0), 0.7, n), 60.0, 4 * 3600.0)
    return np.round(np.where(fmt == 0, video, np.where(fmt == 2, live, np.nan)), 1)


def _pick(bank: tuple[str, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(bank, dtype=object)[rng.integers(0, len(bank), n)]


def _join(*parts: np.ndarray) -> np.ndarray:
    """Element-wise ' '.join of object arrays of str, skipping empty parts (Arrow kernels)."""
    arrays = [pa.array(np.asarray(p, dtype=object), type=pa.string()) for p in parts]
    # Join everything, then squeeze the gaps empty parts leave (null-skipping in the join
    # kernel miscounts rows whose parts are all null in pyarrow 25, so nulls are avoided).
    joined = pc.binary_join_element_wise(*arrays, " ")
    joined = pc.utf8_trim(pc.replace_substring_regex(joined, "  +", " "), " ")
    out = np.asarray(joined.to_numpy(zero_copy_only=False), dtype=object)
    if len(out) != len(arrays[0]):
        raise RuntimeError(f"joined {len(out)} rows, expected {len(arrays[0])}")
    return out


# P(caption style | low-quality kind); rows and columns: none, spam, low_effort, misleading.
_CAPTION_STYLE_P = np.array(
    [
        [0.91, 0.01, 0.06, 0.02],
        [0.25, 0.70, 0.05, 0.00],
        [0.40, 0.00, 0.60, 0.00],
        [0.35, 0.00, 0.05, 0.60],
    ]
)


def make_captions(
    category: np.ndarray,
    lq_kind: np.ndarray,
    random_state: np.random.Generator,
    banks: TextBanks = DEFAULT_BANKS,
) -> np.ndarray:
    """Captions from templates: normal, spam (caps, URL, 'FREE', emojis), misleading, low-effort.

    Spam and misleading wording comes from `banks` (the world's vocabulary)."""
    rng = random_state
    n = len(category)
    topics = np.array([CATEGORY_TOPICS[c] for c in CATEGORY_NAMES], dtype=object)
    topic = topics[category, rng.integers(0, topics.shape[1], n)]
    emoji = np.where(rng.random(n) < 0.4, _pick(EMOJIS, n, rng), "")
    normal = _join(_pick(CAPTION_OPENERS, n, rng), topic, _pick(CAPTION_CLOSERS, n, rng), emoji)
    spam = _join(
        _pick(banks.spam_openers, n, rng),
        _pick(banks.spam_things, n, rng) + "!!!",
        np.where(rng.random(n) < 0.5, _pick(banks.spam_ctas, n, rng), ""),
        _pick(banks.urls, n, rng),
        _pick(SPAM_EMOJIS, n, rng),
    )
    misleading = _join(_pick(banks.misleading_hooks, n, rng), topic + "!!", emoji)
    low_effort = _pick(LOW_EFFORT_CAPTIONS, n, rng)
    # The caption style follows the item's problem only loosely: some spam looks normal,
    # some fine items are terse or clickbaity, so text alone does not give the answer away.
    cum = np.cumsum(_CAPTION_STYLE_P, axis=1)[lq_kind]
    style = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), 3)
    caption = np.where(
        style == LQ_SPAM,
        spam,
        np.where(
            style == LQ_MISLEADING,
            misleading,
            np.where(style == LQ_LOW_EFFORT, low_effort, normal),
        ),
    )
    null = rng.random(n) < np.where(style == LQ_LOW_EFFORT, 0.35, 0.08)
    caption[null & (style != LQ_SPAM)] = None
    return caption


def _draw_distinct(
    first: np.ndarray, n_vocab: int, probs: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    second = rng.choice(n_vocab, size=len(first), p=probs)
    clash = second == first
    second[clash] = (second[clash] + 1) % n_vocab
    return second


def make_hashtags(
    category: np.ndarray,
    lq_kind: np.ndarray,
    random_state: np.random.Generator,
    banks: TextBanks = DEFAULT_BANKS,
) -> np.ndarray:
    """1-5 tags per item: category tags, general tags, Zipf-popular topic tags; spam adds the
    world's spam tags (`banks.spam_tags`)."""
    rng = random_state
    n = len(category)
    cat_tags = np.array([CATEGORY_TAGS[c] for c in CATEGORY_NAMES], dtype=object)
    spam_item = lq_kind == LQ_SPAM
    cat_tag = cat_tags[category, rng.choice(cat_tags.shape[1], size=n, p=zipf_probs(8, 1.0))]
    general = _pick(GENERAL_TAGS, n, rng)
    topics = np.asarray(TOPIC_TAGS, dtype=object)
    tp = zipf_probs(len(TOPIC_TAGS), 1.0)
    t1 = rng.choice(len(TOPIC_TAGS), size=n, p=tp)
    t2 = _draw_distinct(t1, len(TOPIC_TAGS), tp, rng)
    spam_tags = np.asarray(banks.spam_tags, dtype=object)
    sp = zipf_probs(len(spam_tags), 0.8)
    s1 = rng.choice(len(spam_tags), size=n, p=sp)
    s2 = _draw_distinct(s1, len(spam_tags), sp, rng)
    u = rng.random((n, 4))
    empty = np.full(n, "", dtype=object)
    return _join(
        np.where(u[:, 0] < 0.9, cat_tag, empty),
        np.where(spam_item, spam_tags[s1], np.where(u[:, 1] < 0.55, general, empty)),
        np.where(u[:, 2] < 0.5, topics[t1], empty),
        # A few fine items run real giveaways and borrow the spam tags.
        np.where(
            spam_item | (u[:, 1] > 0.97),
            spam_tags[s2],
            np.where(u[:, 3] < 0.25, topics[t2], empty),
        ),
    )


def make_items(
    cfg: SimConfig, creators: Creators, n: int, random_state: np.random.Generator
) -> Items:
    """Organic items: posted by creators in proportion to activity, with a daily rhythm."""
    rng = random_state
    w = creators.activity / creators.activity.sum()
    creator = rng.choice(len(creators), size=n, p=w)
    region = np.where(
        rng.random(n) < 0.95, creators.region[creator], rng.integers(0, len(REGION_NAMES), n)
    ).astype(np.int16)
    created_h = rhythm_times(n, 0.0, cfg.days * 24.0, region_offsets()[region], rng)
    cat_shares = np.array([CATEGORIES[c][0] for c in CATEGORY_NAMES])
    category = np.where(
        rng.random(n) < 0.75,
        creators.category[creator],
        rng.choice(len(CATEGORY_NAMES), size=n, p=cat_shares / cat_shares.sum()),
    ).astype(np.int16)
    fmt = _formats(category, rng)
    spam = creators.spam[creator]
    q = creators.quality[creator]

    # Latent truth. Spam creators' items are spam with high probability; other creators'
    # items are low quality more often when the creator's quality is low.
    misleading_prone = np.isin(category, [CATEGORY_NAMES.index(c) for c in MISLEADING_PRONE])
    fixed = np.where(spam, 0.8, np.nan)
    p_lq = solve_intercept(-0.9 * q + 0.4 * misleading_prone, cfg.low_quality_rate, fixed)
    u_lq = rng.random(n)
    lq = u_lq < p_lq
    kind_u = rng.random(n)
    lq_kind = np.where(
        ~lq,
        LQ_NONE,
        np.where(
            spam,
            LQ_SPAM,
            np.where(kind_u < np.where(misleading_prone, 0.55, 0.15), LQ_MISLEADING, LQ_LOW_EFFORT),
        ),
    ).astype(np.int8)
    cat_shift = np.array([CATEGORIES[c][1] for c in CATEGORY_NAMES])[category]
    log_f = np.log10(creators.followers[creator] + 1.0)
    p_hi = solve_intercept(
        cat_shift + 0.35 * (log_f - 3.0) - 0.3 * q + 0.8 * (lq_kind == LQ_MISLEADING),
        cfg.harmful_rate,
    )
    u_hi = rng.random(n)

    has_audio = rng.random(n) < np.where(fmt == 1, 0.35, 0.85)
    audio = np.where(has_audio, rng.choice(N_AUDIO, size=n, p=zipf_probs(N_AUDIO, 1.1)), -1)
    return Items(
        creator=creator,
        created_h=created_h,
        fmt=fmt,
        duration=_durations(fmt, rng),
        region=region,
        language=_languages(region, rng),
        category=category,
        caption=make_captions(category, lq_kind, rng, cfg.banks),
        hashtags=make_hashtags(category, lq_kind, rng, cfg.banks),
        audio=audio.astype(np.int32),
        p_lq=p_lq,
        u_lq=u_lq,
        lq_kind=lq_kind,
        p_hi=p_hi,
        u_hi=u_hi,
        incident=np.full(n, -1, np.int16),
    )


def window_h(cfg: SimConfig, inc: Incident) -> tuple[float, float]:
    end = cfg.days if inc.end_day is None else min(float(inc.end_day), cfg.days)
    return float(inc.start_day) * 24.0, end * 24.0


def segment_mask(items: Items, segment: dict[str, str], audio_vocab: list[str]) -> np.ndarray:
    """Items matching every {dimension: value} of a segment."""
    mask = np.ones(len(items), bool)
    for dim, value in segment.items():
        if dim == "region":
            mask &= items.region == REGION_NAMES.index(value)
        elif dim == "format":
            mask &= items.fmt == FORMAT_NAMES.index(value)
        elif dim == "category":
            mask &= items.category == CATEGORY_NAMES.index(value)
        elif dim == "language":
            mask &= items.language == LANGUAGES.index(value)
        elif dim == "audio_id":
            code = audio_vocab.index(value) if value in audio_vocab else -2
            mask &= items.audio == code
        elif dim == "hashtag":
            tags = pd.Series(items.hashtags, dtype="str")
            mask &= tags.str.contains(rf"(?:^| ){value}(?: |$)", regex=True).to_numpy()
        else:
            raise ValueError(f"unknown segment dimension {dim!r}")
    return mask


def apply_rate_incident(
    cfg: SimConfig,
    items: Items,
    index: int,
    audio_vocab: list[str],
    random_state: np.random.Generator,
) -> None:
    """quality_drop / abuse_surge: multiply the issue probability of in-segment items posted
    during the incident (capped); each item keeps its uniform draw, so truth only flips up."""
    inc = cfg.incidents[index]
    lo, hi = window_h(cfg, inc)
    hit = (
        segment_mask(items, inc.segment, audio_vocab)
        & (items.created_h >= lo)
        & (items.created_h < hi)
    )
    if inc.issue == "harmful_interactions":
        was = items.harmful
        items.p_hi[hit] = np.minimum(items.p_hi[hit] * inc.strength, 0.9)
        became = hit & ~was & items.harmful
    else:
        was = items.low_quality
        items.p_lq[hit] = np.minimum(items.p_lq[hit] * inc.strength, 0.9)
        became = hit & ~was & items.low_quality
        items.lq_kind[became] = LQ_LOW_EFFORT
        items.caption[became] = make_captions(
            items.category[became], items.lq_kind[became], random_state, cfg.banks
        )
    # The affected items are those whose truth the incident flipped.
    items.incident[became & (items.incident < 0)] = index


def campaign(
    cfg: SimConfig,
    items: Items,
    creators: Creators,
    index: int,
    audio_vocab: list[str],
    random_state: np.random.Generator,
) -> tuple[Creators, Items]:
    """spam_campaign: new spam accounts post near-identical items into the segment.

    The number of injected items is solved so the in-segment low-quality rate during the
    incident reaches `strength` x its base rate (capped at 0.7, where the count still stays
    within a few times the organic volume).
    """
    rng = random_state
    inc = cfg.incidents[index]
    lo, hi = window_h(cfg, inc)
    seg = segment_mask(items, inc.segment, audio_vocab)
    n_seg_day = max(seg.sum(), 1) / cfg.days
    base = float(items.p_lq[seg].mean()) if seg.sum() >= 20 else float(items.p_lq.mean())
    target = min(inc.strength * base, 0.7)
    m = round(n_seg_day * (hi - lo) / 24.0 * (target - base) / (P_CAMPAIGN_SPAM - target))
    m = max(m, 10)
    k = max(2, int(np.ceil(m / 12)))
    new = Creators(
        region=rng.integers(0, len(REGION_NAMES), k),
        created_h=lo - rng.uniform(2, 72, k),  # fresh accounts, made just before the wave
        verified=np.zeros(k, bool),
        followers=np.floor(rng.lognormal(2.5, 1.0, k)).astype(np.int64),
        quality=rng.normal(-1.5, 0.5, k),
        spam=np.ones(k, bool),
        category=rng.integers(0, len(CATEGORY_NAMES), k).astype(creators.category.dtype),
        activity=np.ones(k),
    )
    creator = len(creators) + rng.integers(0, k, m)
    region = new.region[creator - len(creators)].astype(np.int16)
    if "region" in inc.segment:
        region[:] = REGION_NAMES.index(inc.segment["region"])
    created_h = rhythm_times(m, lo, hi, region_offsets()[region], rng)
    cat_shares = np.array([CATEGORIES[c][0] for c in CATEGORY_NAMES])
    category = rng.choice(len(CATEGORY_NAMES), size=m, p=cat_shares / cat_shares.sum())
    if "category" in inc.segment:
        category[:] = CATEGORY_NAMES.index(inc.segment["category"])
    fmt = np.where(rng.random(m) < 0.75, 0, 1).astype(np.int8)
    if "format" in inc.segment:
        fmt[:] = FORMAT_NAMES.index(inc.segment["format"])
    language = _languages(region, rng)
    if "language" in inc.segment:
        language[:] = LANGUAGES.index(inc.segment["language"])
    p_lq = np.full(m, P_CAMPAIGN_SPAM)
    u_lq = rng.random(m)
    lq_kind = np.where(u_lq < p_lq, LQ_SPAM, LQ_NONE).astype(np.int8)
    # One campaign, one script: a fixed lure and URL with small variations.
    banks = cfg.banks
    lure = str(rng.choice(banks.spam_things))
    url = str(rng.choice(banks.urls))
    caption = _join(
        np.full(m, f"{banks.spam_openers[0]} {lure}!!!", dtype=object),
        _pick(banks.campaign_ctas, m, rng),
        np.full(m, url, dtype=object),
        _pick(SPAM_EMOJIS, m, rng),
    )
    caption[lq_kind == LQ_NONE] = None
    tags = make_hashtags(category, np.full(m, LQ_SPAM, np.int8), rng, banks)
    if "hashtag" in inc.segment:
        tags = _join(np.full(m, inc.segment["hashtag"], dtype=object), tags)
    audio = rng.choice(N_AUDIO, size=m, p=zipf_probs(N_AUDIO, 1.1)).astype(np.int32)
    if "audio_id" in inc.segment:
        if inc.segment["audio_id"] not in audio_vocab:
            audio_vocab.append(inc.segment["audio_id"])
        audio[:] = audio_vocab.index(inc.segment["audio_id"])
    p_hi = np.full(m, float(np.mean(items.p_hi)))
    injected = Items(
        creator=creator,
        created_h=created_h,
        fmt=fmt,
        duration=_durations(fmt, rng),
        region=region,
        language=language,
        category=category.astype(np.int16),
        caption=caption,
        hashtags=tags,
        audio=audio,
        p_lq=p_lq,
        u_lq=u_lq,
        lq_kind=lq_kind,
        p_hi=p_hi,
        u_hi=rng.random(m),
        incident=np.full(m, index, np.int16),
    )
    return creators.extend(new), items.extend(injected)
