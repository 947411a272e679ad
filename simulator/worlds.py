"""Drawn worlds: simulated ecosystems whose parameters come from documented ranges.

The default world (`SimConfig()` as is) is the one the project was built on; anything tuned,
even unknowingly, to its base rates, traffic or vocabulary would look good there and nowhere
else. `draw_world(seed)` draws a different, equally plausible ecosystem from the ranges below,
and `WorldParams.config(...)` turns it into a `SimConfig`. The same seed always gives the same
world; the data seed (`SimConfig.seed`) stays independent, so one world can be sampled at many
sizes.

Ranges (multipliers are log-uniform, so x0.3-3 is as likely to halve as to double a rate):

| parameter                      | default      | drawn world                                   |
|--------------------------------|--------------|-----------------------------------------------|
| low_quality_rate               | 0.12         | x0.3-3 (spam_creator_share scales with it)    |
| harmful_rate                   | 0.05         | x0.3-3                                        |
| auto_fp_rate, human_fp_rate    | 0.012, 0.03  | x0.3-3, one multiplier (wrongful_enforcement) |
| mean_views (events per item)   | 52           | x0.2-10                                       |
| label_noise                    | 0.05         | 0-10% (uniform)                               |
| review_rate                    | 0.3 (CLI)    | 2-10% (uniform)                               |
| appeal_rate_wrong / _right     | 0.55 / 0.15  | 0.30-0.80 / 0.05-0.30 (uniform)               |
| overturn_rate_wrong / _right   | 0.75 / 0.10  | 0.50-0.95 / 0.02-0.25 (uniform)               |
| incident strength              | 4-5          | x0.5-2 per incident (at least 1.2)            |
| spam and abuse vocabulary      | vocab banks  | a same-size subset of each larger pool        |

The vocabulary pools (`simulator.vocab.*_POOL`) include the default banks, so a drawn world
shares some words with the default one and some not; its abusive comments need not contain any
word of `features.schema.ABUSE_LEXICON`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.config import SimConfig
from simulator.vocab import (
    DEFAULT_BANKS,
    MISLEADING_HOOK_POOL,
    SPAM_COMMENT_POOL,
    SPAM_CTA_POOL,
    SPAM_OPENER_POOL,
    SPAM_TAG_POOL,
    SPAM_THING_POOL,
    TOXIC_COMMENT_POOL,
    URL_POOL,
    TextBanks,
)

# name -> (low, high, log-uniform?). Multipliers ("x_...") scale the SimConfig default.
RANGES: dict[str, tuple[float, float, bool]] = {
    "x_low_quality_rate": (0.3, 3.0, True),
    "x_harmful_rate": (0.3, 3.0, True),
    "x_wrongful_rate": (0.3, 3.0, True),
    "x_events_per_item": (0.2, 10.0, True),
    "label_noise": (0.0, 0.10, False),
    "review_rate": (0.02, 0.10, False),
    "appeal_rate_wrong": (0.30, 0.80, False),
    "appeal_rate_right": (0.05, 0.30, False),
    "overturn_rate_wrong": (0.50, 0.95, False),
    "overturn_rate_right": (0.02, 0.25, False),
}
INCIDENT_SCALE = (0.5, 2.0)  # log-uniform multiplier of each incident's strength
MIN_STRENGTH = 1.2  # a scaled incident must still raise its rate noticeably
N_INCIDENT_SCALES = 8  # incident j gets scale j mod 8 (files may plant more than the default 4)
POOLS: dict[str, tuple[str, ...]] = {
    "spam_tags": SPAM_TAG_POOL,
    "spam_openers": SPAM_OPENER_POOL,
    "spam_things": SPAM_THING_POOL,
    "spam_ctas": SPAM_CTA_POOL,
    "urls": URL_POOL,
    "misleading_hooks": MISLEADING_HOOK_POOL,
    "toxic_comments": TOXIC_COMMENT_POOL,
    "spam_comments": SPAM_COMMENT_POOL,
}
_SALT = 0x3D_0A1D  # keeps world draws apart from data draws that use the same integer seed


@dataclass(frozen=True)
class WorldParams:
    """One drawn world: the draws (`draws`, keyed as RANGES), per-incident strength scales and
    the vocabulary banks. `config(...)` applies them to a SimConfig."""

    seed: int
    draws: dict[str, float]
    incident_scales: tuple[float, ...]
    banks: TextBanks

    def settings(self) -> dict[str, Any]:
        """The SimConfig fields this world sets (defaults times the drawn multipliers)."""
        d = {f.name: f.default for f in dataclasses.fields(SimConfig)}
        x = self.draws
        return {
            "low_quality_rate": d["low_quality_rate"] * x["x_low_quality_rate"],
            "spam_creator_share": d["spam_creator_share"] * x["x_low_quality_rate"],
            "harmful_rate": d["harmful_rate"] * x["x_harmful_rate"],
            "auto_fp_rate": d["auto_fp_rate"] * x["x_wrongful_rate"],
            "human_fp_rate": d["human_fp_rate"] * x["x_wrongful_rate"],
            "mean_views": d["mean_views"] * x["x_events_per_item"],
            **{
                k: x[k]
                for k in (
                    "label_noise",
                    "review_rate",
                    "appeal_rate_wrong",
                    "appeal_rate_right",
                    "overturn_rate_wrong",
                    "overturn_rate_right",
                )
            },
            "banks": self.banks,
            "world_seed": self.seed,
        }

    def config(self, **overrides: Any) -> SimConfig:
        """A SimConfig of this world; `overrides` (n_items, days, seed, incidents, an explicit
        review_rate, ...) win over the drawn values. Incident strengths are scaled."""
        base = SimConfig(**{**self.settings(), **overrides})
        scaled = tuple(
            dataclasses.replace(
                inc,
                strength=round(
                    max(MIN_STRENGTH, inc.strength * self.incident_scales[j % N_INCIDENT_SCALES]),
                    3,
                ),
            )
            for j, inc in enumerate(base.incidents)
        )
        return dataclasses.replace(base, incidents=scaled)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the world (what `simulation.json` keeps under "world")."""
        settings = {k: v for k, v in self.settings().items() if k not in ("banks", "world_seed")}
        return {
            "seed": self.seed,
            "draws": {k: round(v, 6) for k, v in self.draws.items()},
            "settings": {k: round(float(v), 6) for k, v in settings.items()},
            "incident_scales": [round(s, 4) for s in self.incident_scales],
            "ranges": {
                k: [lo, hi, "log-uniform" if log else "uniform"]
                for k, (lo, hi, log) in RANGES.items()
            },
            "banks": self.banks.to_dict(),
        }


def _uniform(rng: np.random.Generator, lo: float, hi: float, log: bool) -> float:
    if log:
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_world(seed: int) -> WorldParams:
    """Draw world `seed`'s parameters from RANGES, INCIDENT_SCALE and POOLS (deterministic)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"world seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([_SALT, seed])
    draws = {name: _uniform(rng, lo, hi, log) for name, (lo, hi, log) in RANGES.items()}
    scales = tuple(_uniform(rng, *INCIDENT_SCALE, True) for _ in range(N_INCIDENT_SCALES))
    banks: dict[str, tuple[str, ...]] = {}
    for name, pool in POOLS.items():
        k = len(getattr(DEFAULT_BANKS, name))
        picks = rng.choice(len(pool), size=k, replace=False)
        banks[name] = tuple(pool[i] for i in picks)
    # A campaign's script varies between three of the world's calls to action.
    banks["campaign_ctas"] = banks["spam_ctas"][:3]
    return WorldParams(seed=seed, draws=draws, incident_scales=scales, banks=TextBanks(**banks))
