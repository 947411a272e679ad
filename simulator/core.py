"""`simulate` (config -> the six raw tables, truth, incidents) and `write_simulation`.

The run is split into stages with their own random streams (spawned from the seed), so the
same config always yields identical tables, and tuning one stage does not reshuffle others.

Output folder: `<table>.parquet` for the six contract tables, plus
- `truth.parquet`: item_id; per issue `<issue>` 0/1 (Int8; wrongful_enforcement is NA for
  items never removed/restricted and judges the first such action) and `p_<issue>` (latent
  probability); `incident_id` (null unless a planted incident caused the item's problem);
  extras `lq_kind`, `spam_creator`, `actioned_at` (time of that first action).
- `incidents.json`: a list of {id, issue, kind, start, end|null (ISO UTC), segment
  {dimension: value}, description, strength, start_day, end_day, n_items,
  segment_rate_before/during (truth rate in the segment in the 7 days before / during;
  for wrongful_enforcement per actioned item, timed at the action), segment_n_before/during}.
  Segment dimensions are item columns (region, format, category, language, audio_id) or
  `hashtag` (one token of the item's space-separated hashtags).
- `simulation.json`: the config, to reproduce the run, plus the folder's declared
  `dataset_name` ("sim-default", or "sim-world-K" for a drawn world; read by
  `features.io.dataset_name`) and, for a drawn world, `world` (the draws, the settings they
  gave, the ranges they came from and the vocabulary; see simulator.worlds).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from common.progress import Progress
from features.contract import EVENT_KINDS, REPORT_REASONS, TABLE_ORDER
from features.io import write_dataset
from simulator.activity import Events, simulate_events
from simulator.config import SimConfig
from simulator.enforcement import (
    ACTIONS,
    LABEL_ISSUES,
    LABEL_SOURCES,
    OUTCOMES,
    SOURCES,
    Enforcement,
    apply_to_events,
    moderate,
)
from simulator.population import (
    FORMAT_NAMES,
    N_AUDIO,
    Creators,
    Items,
    apply_rate_incident,
    campaign,
    make_creators,
    make_items,
    segment_mask,
    window_h,
)
from simulator.vocab import CATEGORY_NAMES, LANGUAGES, MODERATION_POLICIES, REGION_NAMES

ISSUES = ("low_quality", "harmful_interactions", "wrongful_enforcement")
LQ_KIND_NAMES = ("none", "spam", "low_effort", "misleading")
_STAGES = ("creators", "items", "incidents", "events", "moderation", "tables")


@dataclass
class Simulation:
    """The output of one run: raw tables (contract), per-item truth, planted incidents."""

    tables: dict[str, pd.DataFrame]
    truth: pd.DataFrame
    incidents: list[dict[str, Any]]
    config: SimConfig = field(default_factory=SimConfig)


# --------------------------------------------------------------------------- conversions


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)).astype(object)


def _decode(codes: np.ndarray, vocab: np.ndarray | list[str] | tuple[str, ...]) -> pd.Series:
    """Integer codes (-1 = null) -> a pandas "str" column, decoded by Arrow (fast, no objects)."""
    codes = np.asarray(codes)
    mask = codes < 0
    indices = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask if mask.any() else None)
    arr = pa.DictionaryArray.from_arrays(
        indices, pa.array(np.asarray(vocab, dtype=object), type=pa.large_string())
    )
    return arr.dictionary_decode().to_pandas()


def _times(start: pd.Timestamp, hours: np.ndarray) -> pd.Series:
    """Float hours since `start` (NaN = missing) -> UTC timestamps at microsecond resolution."""
    hours = np.asarray(hours, dtype=float)
    us = np.round(np.nan_to_num(hours) * 3.6e9).astype(np.int64) + start.value // 1000
    values = us.astype("datetime64[us]")
    values[np.isnan(hours)] = np.datetime64("NaT")
    return pd.Series(pd.DatetimeIndex(values).tz_localize("UTC"))


# --------------------------------------------------------------------------- stages


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STAGES) + 2)
    names = (*_STAGES, "campaign", "filter")
    return {name: np.random.default_rng(s) for name, s in zip(names, children, strict=True)}


def _apply_incidents(
    cfg: SimConfig,
    items: Items,
    creators: Creators,
    audio_vocab: list[str],
    rng: np.random.Generator,
    rng_campaign: np.random.Generator,
) -> tuple[Creators, Items]:
    # Rate incidents first (on organic items), campaigns after (their items are planted).
    for j, inc in enumerate(cfg.incidents):
        if inc.kind in ("quality_drop", "abuse_surge"):
            apply_rate_incident(cfg, items, j, audio_vocab, rng)
    for j, inc in enumerate(cfg.incidents):
        if inc.kind == "spam_campaign":
            creators, items = campaign(cfg, items, creators, j, audio_vocab, rng_campaign)
    for inc in cfg.incidents:
        if inc.kind != "spam_campaign" and not segment_mask(items, inc.segment, audio_vocab).any():
            raise ValueError(
                f"incident {inc.id!r}: segment {inc.segment} matches no simulated item; "
                "pick values that occur (e.g. a popular hashtag or an audio id like a00003)"
            )
    return creators, items


def _sorted_by_time(items: Items) -> tuple[Items, np.ndarray]:
    """Items in posting order; returns them and old index -> new index."""
    order = np.argsort(items.created_h, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return Items(**{k: v[order] for k, v in items.__dict__.items()}), rank


def _build_tables(
    cfg: SimConfig,
    items: Items,
    creators: Creators,
    events: Events,
    enf: Enforcement,
    audio_vocab: list[str],
    n_users: int,
) -> dict[str, pd.DataFrame]:
    start = cfg.start
    item_ids = _ids("i", len(items), 7)
    creator_ids = _ids("c", len(creators), 6)
    tables: dict[str, pd.DataFrame] = {}
    tables["items"] = pd.DataFrame(
        {
            "item_id": pd.Series(item_ids, dtype="str"),
            "creator_id": _decode(items.creator, creator_ids),
            "created_at": _times(start, items.created_h),
            "format": _decode(items.fmt, FORMAT_NAMES),
            "duration_s": items.duration.astype("float64"),
            "region": _decode(items.region, REGION_NAMES),
            "language": _decode(items.language, LANGUAGES),
            "category": _decode(items.category, CATEGORY_NAMES),
            "caption": pd.Series(items.caption, dtype="str"),
            "hashtags": pd.Series(items.hashtags, dtype="str"),
            "audio_id": _decode(items.audio, audio_vocab),
        }
    )
    tables["creators"] = pd.DataFrame(
        {
            "creator_id": pd.Series(creator_ids, dtype="str"),
            "created_at": _times(start, creators.created_h),
            "region": _decode(creators.region, REGION_NAMES),
            "verified": creators.verified.astype(bool),
            "follower_count": creators.followers.astype("int64"),
        }
    )
    tables["events"] = pd.DataFrame(
        {
            "item_id": _decode(events.item, item_ids),
            "user_id": _decode(events.user, _ids("u", n_users, 7)),
            "ts": _times(start, events.t_h),
            "kind": _decode(events.kind, EVENT_KINDS),
            "watch_frac": events.watch.astype("float64"),
            "reason": _decode(events.reason, REPORT_REASONS),
            "text": _decode(events.text, cfg.banks.comment_texts),
        }
    )
    tables["moderation"] = pd.DataFrame(
        {
            "item_id": _decode(enf.mod_item, item_ids),
            "ts": _times(start, enf.mod_t),
            "action": _decode(enf.mod_action, ACTIONS),
            "source": _decode(enf.mod_source, SOURCES),
            "policy": _decode(enf.mod_policy, MODERATION_POLICIES),
        }
    )
    tables["appeals"] = pd.DataFrame(
        {
            "item_id": _decode(enf.app_item, item_ids),
            "filed_at": _times(start, enf.app_filed),
            "resolved_at": _times(start, enf.app_resolved),
            "outcome": _decode(enf.app_outcome, OUTCOMES),
        }
    )
    tables["labels"] = pd.DataFrame(
        {
            "item_id": _decode(enf.lab_item, item_ids),
            "issue": _decode(enf.lab_issue, LABEL_ISSUES),
            "label": enf.lab_value.astype("int64"),
            "labeled_at": _times(start, enf.lab_t),
            "source": _decode(enf.lab_source, LABEL_SOURCES),
        }
    )
    return {name: tables[name] for name in TABLE_ORDER}


def _truth(
    cfg: SimConfig, items: Items, creators: Creators, enf: Enforcement, item_ids: pd.Series
) -> pd.DataFrame:
    acted = ~np.isnan(enf.first_t)
    p_clean = (1.0 - items.p_lq) * (1.0 - items.p_hi)
    incident_ids = [inc.id for inc in cfg.incidents]
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "low_quality": pd.array(items.low_quality.astype(np.int8), dtype="Int8"),
            "p_low_quality": items.p_lq.astype("float64"),
            "harmful_interactions": pd.array(items.harmful.astype(np.int8), dtype="Int8"),
            "p_harmful_interactions": items.p_hi.astype("float64"),
            # Only actioned items can be wrongfully enforced: NA elsewhere.
            "wrongful_enforcement": pd.array(
                np.where(acted, enf.wrongful.astype(float), np.nan), dtype="Int8"
            ),
            "p_wrongful_enforcement": np.where(acted, p_clean, np.nan),
            "incident_id": _decode(items.incident, incident_ids),
            "lq_kind": _decode(items.lq_kind, LQ_KIND_NAMES),
            "spam_creator": creators.spam[items.creator].astype(bool),
            "actioned_at": _times(cfg.start, enf.first_t),
        }
    )


def _incident_records(
    cfg: SimConfig, items: Items, enf: Enforcement, audio_vocab: list[str]
) -> list[dict[str, Any]]:
    """incidents.json entries, with the truth rate in the segment before and during."""
    out = []
    for j, inc in enumerate(cfg.incidents):
        lo, hi = window_h(cfg, inc)
        seg = segment_mask(items, inc.segment, audio_vocab)
        if inc.issue == "wrongful_enforcement":
            t, value = enf.first_t, enf.wrongful.astype(float)
            seg &= ~np.isnan(t)
        else:
            t = items.created_h
            value = (items.low_quality if inc.issue == "low_quality" else items.harmful).astype(
                float
            )
        before = seg & (t >= max(0.0, lo - 7 * 24.0)) & (t < lo)
        during = seg & (t >= lo) & (t < hi)
        rec = {
            "id": inc.id,
            "issue": inc.issue,
            "kind": inc.kind,
            "start": (cfg.start + pd.Timedelta(hours=lo)).isoformat(),
            "end": None
            if inc.end_day is None
            else (cfg.start + pd.Timedelta(days=float(inc.end_day))).isoformat(),
            "segment": dict(inc.segment),
            "description": inc.description,
            "strength": inc.strength,
            "start_day": inc.start_day,
            "end_day": inc.end_day,
            "n_items": int(np.sum(items.incident == j)),
            # For wrongful_enforcement the rate is per actioned item, timed at the action.
            "segment_rate_before": float(value[before].mean()) if before.any() else None,
            "segment_rate_during": float(value[during].mean()) if during.any() else None,
            "segment_n_before": int(before.sum()),
            "segment_n_during": int(during.sum()),
        }
        if inc.policy is not None:
            rec["policy"] = inc.policy
        out.append(rec)
    return out


# --------------------------------------------------------------------------- public API


def simulate(config: SimConfig | None = None, *, progress: bool = False) -> Simulation:
    """Simulate an ecosystem: the six raw tables, per-item truth and the planted incidents."""
    cfg = config or SimConfig()
    rngs = _rngs(cfg.seed)
    with Progress("simulate", len(_STAGES), unit="stage", enabled=progress) as bar:
        bar.status("creators")
        n_creators = max(20, round(cfg.n_items / cfg.items_per_creator))
        creators = make_creators(cfg, n_creators, rngs["creators"])
        bar.update()
        bar.status("items")
        items = make_items(cfg, creators, cfg.n_items, rngs["items"])
        audio_vocab = list(_ids("a", N_AUDIO, 5))
        bar.update()
        bar.status("incidents")
        creators, items = _apply_incidents(
            cfg, items, creators, audio_vocab, rngs["incidents"], rngs["campaign"]
        )
        items, _ = _sorted_by_time(items)
        bar.update()
        bar.status("events")
        n_users = max(500, int(len(items) * cfg.users_per_item))
        events = simulate_events(cfg, items, creators, n_users, rngs["events"])
        bar.update()
        bar.status("moderation")
        enf = moderate(cfg, items, creators, events, audio_vocab, rngs["moderation"])
        events = apply_to_events(events, enf, len(items), rngs["filter"])
        bar.update()
        bar.status("tables")
        tables = _build_tables(cfg, items, creators, events, enf, audio_vocab, n_users)
        truth = _truth(cfg, items, creators, enf, tables["items"]["item_id"])
        incidents = _incident_records(cfg, items, enf, audio_vocab)
        bar.update()
    return Simulation(tables=tables, truth=truth, incidents=incidents, config=cfg)


def write_simulation(sim: Simulation, out: str | Path, overwrite: bool = False) -> Path:
    """Write the tables (Parquet), truth.parquet, incidents.json and simulation.json atomically."""
    buf = io.BytesIO()
    sim.truth.to_parquet(buf, index=False)
    manifest = {"dataset_name": sim.config.dataset_name, **sim.config.to_dict()}
    if sim.config.world_seed is not None:
        from simulator.worlds import draw_world

        manifest["world"] = draw_world(sim.config.world_seed).to_dict()
    extra = {
        "truth.parquet": buf.getvalue(),
        "incidents.json": orjson.dumps(sim.incidents, option=orjson.OPT_INDENT_2),
        "simulation.json": orjson.dumps(manifest, option=orjson.OPT_INDENT_2),
    }
    return write_dataset(sim.tables, out, extra_files=extra, overwrite=overwrite)


def summarize(sim: Simulation) -> str:
    """A short human-readable summary: rows per table, base rates per issue, incidents."""
    cfg = sim.config
    lines = [f"dataset {cfg.dataset_name}"]
    if cfg.world_seed is not None:
        lines[0] += (
            f" (drawn world: low_quality_rate {cfg.low_quality_rate:.3f}, harmful_rate "
            f"{cfg.harmful_rate:.3f}, auto_fp_rate {cfg.auto_fp_rate:.4f}, mean_views "
            f"{cfg.mean_views:.0f}, label_noise {cfg.label_noise:.3f}, review_rate "
            f"{cfg.review_rate:.3f})"
        )
    lines.append("rows per table:")
    for name, df in sim.tables.items():
        lines.append(f"  {name:<11} {len(df):>12,}")
    n_items = len(sim.tables["items"])
    lines.append(f"  events/item {len(sim.tables['events']) / max(n_items, 1):>12.1f}")
    lines.append("issue rates (truth; labels positive share):")
    labels = sim.tables["labels"]
    for issue in ISSUES:
        col = sim.truth[issue]
        lab = labels.loc[labels["issue"] == issue, "label"]
        lab_txt = f"{lab.mean():.3f} of {len(lab):,} labels" if len(lab) else "no labels"
        scope = (
            f"of {col.notna().sum():,} actioned items" if issue == "wrongful_enforcement" else ""
        )
        lines.append(f"  {issue:<22} {col.mean():.3f} {scope}; {lab_txt}".rstrip())
    lines.append("incidents:")
    for inc in sim.incidents:
        seg = ", ".join(f"{k}={v}" for k, v in inc["segment"].items())
        before, during = inc["segment_rate_before"], inc["segment_rate_during"]
        rates = (
            f"{before:.3f} -> {during:.3f}" if before is not None and during is not None else "n/a"
        )
        end = inc["end"] or "open"
        lines.append(
            f"  {inc['id']:<18} {inc['issue']:<22} [{seg}] {inc['start']} .. {end}; "
            f"segment rate {rates}; {inc['n_items']} items"
        )
    return "\n".join(lines)
