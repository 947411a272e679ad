"""Simulation settings and planted incidents.

`SimConfig` holds every knob of a run (sizes, base rates, moderator behaviour) with sane
defaults; `Incident` describes one planted incident: which issue it moves, in which segment,
from when (and until when, if it was fixed), and how strongly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import FORMATS
from simulator.vocab import (
    CATEGORY_NAMES,
    DEFAULT_BANKS,
    LANGUAGES,
    MODERATION_POLICIES,
    REGION_NAMES,
    TextBanks,
)

DEFAULT_START = pd.Timestamp("2026-10-01T00:00:00Z")

# kind -> the issue it moves. spam_campaign injects new spam creators' items into the
# segment; quality_drop / abuse_surge multiply the issue probability of the segment's items;
# enforcement_misfire raises the auto-moderator's false-positive rate in the segment.
INCIDENT_KINDS: dict[str, str] = {
    "spam_campaign": "low_quality",
    "quality_drop": "low_quality",
    "abuse_surge": "harmful_interactions",
    "enforcement_misfire": "wrongful_enforcement",
}
# Segment dimensions: item columns, plus "hashtag" (one tag among the item's hashtags).
SEGMENT_DIMS: tuple[str, ...] = ("region", "format", "category", "language", "hashtag", "audio_id")
_KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "region": REGION_NAMES,
    "format": FORMATS,
    "category": CATEGORY_NAMES,
    "language": LANGUAGES,
}
_TOKEN = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Incident:
    """A planted incident: `strength` multiplies the issue rate in `segment` from `start_day`.

    Days are offsets from the simulation start (floats allowed); `end_day` None means the
    incident is still running at the end of the window, otherwise it was fixed then.
    """

    id: str
    issue: str
    kind: str
    start_day: float
    end_day: float | None
    segment: Mapping[str, str]
    strength: float = 4.0
    description: str = ""
    policy: str | None = None  # enforcement_misfire: the policy the misfiring rule cites

    def __post_init__(self) -> None:
        where = f"incident {self.id!r}"
        if not self.id or not isinstance(self.id, str):
            raise ValueError(f"incident id must be a non-empty string, got {self.id!r}")
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(
                f"{where}: unknown kind {self.kind!r}; expected one of {', '.join(INCIDENT_KINDS)}"
            )
        if self.issue != INCIDENT_KINDS[self.kind]:
            raise ValueError(
                f"{where}: kind {self.kind!r} moves issue {INCIDENT_KINDS[self.kind]!r}, "
                f"got issue {self.issue!r}"
            )
        if not isinstance(self.segment, Mapping) or not self.segment:
            raise ValueError(f"{where}: segment must be a non-empty {{dimension: value}} mapping")
        for dim, value in self.segment.items():
            if dim not in SEGMENT_DIMS:
                raise ValueError(
                    f"{where}: unknown segment dimension {dim!r}; expected one of "
                    f"{', '.join(SEGMENT_DIMS)}"
                )
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"{where}: segment {dim} must be a non-empty string, got {value!r}"
                )
            if dim in _KNOWN_VALUES and value not in _KNOWN_VALUES[dim]:
                raise ValueError(
                    f"{where}: segment {dim}={value!r} is not simulated; expected one of "
                    f"{', '.join(_KNOWN_VALUES[dim])}"
                )
            if dim in ("hashtag", "audio_id") and not _TOKEN.match(value):
                raise ValueError(
                    f"{where}: segment {dim}={value!r} must be one token of letters, digits or _"
                )
        if not float(self.start_day) >= 0:
            raise ValueError(f"{where}: start_day must be >= 0, got {self.start_day!r}")
        if self.end_day is not None and not float(self.end_day) > float(self.start_day):
            raise ValueError(
                f"{where}: end_day must be after start_day {self.start_day}, got {self.end_day!r}"
            )
        if not float(self.strength) > 1.0:
            raise ValueError(
                f"{where}: strength must be > 1 (a rate multiplier), got {self.strength!r}"
            )
        if self.policy is not None and self.policy not in MODERATION_POLICIES:
            raise ValueError(
                f"{where}: unknown policy {self.policy!r}; expected one of "
                f"{', '.join(MODERATION_POLICIES)}"
            )
        object.__setattr__(self, "segment", dict(self.segment))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Incident:
        """Build from a JSON-like dict; `issue` may be omitted (it follows from `kind`)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an incident must be a JSON object, got {type(data).__name__}")
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(
                f"incident {data.get('id')!r}: unknown field(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(allowed))}"
            )
        missing = [k for k in ("id", "kind", "start_day", "segment") if k not in data]
        if missing:
            raise ValueError(f"incident {data.get('id')!r}: missing field(s) {', '.join(missing)}")
        values = dict(data)
        values.setdefault("issue", INCIDENT_KINDS.get(str(values["kind"]), ""))
        values.setdefault("end_day", None)
        for key in ("start_day", "end_day", "strength"):
            if values.get(key) is not None and not isinstance(values[key], int | float):
                raise ValueError(
                    f"incident {values['id']!r}: {key} must be a number, got {values[key]!r}"
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "issue": self.issue,
            "kind": self.kind,
            "start_day": self.start_day,
            "end_day": self.end_day,
            "segment": dict(self.segment),
            "strength": self.strength,
            "description": self.description,
            "policy": self.policy,
        }


def default_incidents(days: float) -> tuple[Incident, ...]:
    """Four incidents in the second half of a `days`-long window; two of them get fixed."""

    step = 1.0 if days >= 10 else 0.5  # whole days when the window allows it

    def at(frac: float) -> float:
        return min(max(step, round(days * frac / step) * step), days - step)

    def until(start: float, frac: float) -> float:
        return min(float(days), max(start + step, at(frac)))

    return (
        Incident(
            id="spam-lifehack",
            issue="low_quality",
            kind="spam_campaign",
            start_day=at(0.55),
            end_day=None,
            segment={"hashtag": "lifehack"},
            strength=4.0,
            description="New spam accounts flood #lifehack with giveaway scams.",
        ),
        Incident(
            id="misfire-us-video",
            issue="wrongful_enforcement",
            kind="enforcement_misfire",
            start_day=at(0.62),
            end_day=until(at(0.62), 0.82),
            segment={"region": "US", "format": "video"},
            strength=5.0,
            policy="adult_content",
            description="An auto-moderation rule update misfires on US videos; rolled back.",
        ),
        Incident(
            id="abuse-gaming",
            issue="harmful_interactions",
            kind="abuse_surge",
            start_day=at(0.70),
            end_day=None,
            segment={"category": "gaming"},
            strength=4.0,
            description="A harassment wave hits comment sections of gaming items.",
        ),
        Incident(
            id="spam-audio",
            issue="low_quality",
            kind="spam_campaign",
            start_day=at(0.78),
            end_day=until(at(0.78), 0.90),
            segment={"audio_id": "a00003"},
            strength=5.0,
            description="A spam ring reuses one trending sound; the ring is taken down.",
        ),
    )


def load_incidents(path: str | Path) -> tuple[Incident, ...]:
    """Read incidents from a JSON file: a list of incident objects (or {"incidents": [...]})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"incidents file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"incidents file {str(path)!r} is not valid JSON: {exc}") from None
    if isinstance(data, Mapping) and "incidents" in data:
        data = data["incidents"]
    if not isinstance(data, list):
        raise ValueError(
            f"incidents file {str(path)!r} must hold a JSON list of incidents, "
            f"got {type(data).__name__}"
        )
    return tuple(Incident.from_dict(d) for d in data)


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes one simulated run; same config -> identical tables."""

    n_items: int = 20_000  # organic items; spam campaigns add their own on top
    days: int = 28
    seed: int = 0
    start: pd.Timestamp = DEFAULT_START
    items_per_creator: float = 8.0
    spam_creator_share: float = 0.025
    # Base (pre-incident) item rates; the intercepts of the latent models are solved to hit them.
    low_quality_rate: float = 0.12
    harmful_rate: float = 0.05
    mean_views: float = 52.0  # mean views per item before moderation and window truncation
    anonymous_view_share: float = 0.12  # views without user_id (logged-out)
    users_per_item: float = 3.0
    auto_fp_rate: float = 0.012  # share of non-violating items the auto-moderator acts on
    human_fp_rate: float = 0.03  # share of reviewed non-violating items humans act on
    appeal_rate_wrong: float = 0.55
    appeal_rate_right: float = 0.15
    overturn_rate_wrong: float = 0.75
    overturn_rate_right: float = 0.10
    review_rate: float = 0.3  # share of items in the random analyst review sample
    label_noise: float = 0.05  # share of review labels flipped
    incidents: tuple[Incident, ...] | None = field(default=None)
    # The spam and abuse vocabulary (simulator.vocab.TextBanks); drawn worlds change it.
    banks: TextBanks = DEFAULT_BANKS
    # The world these settings were drawn from (simulator.worlds.draw_world); None: the default.
    world_seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_items, int) or self.n_items < 50:
            raise ValueError(f"n_items must be an integer >= 50, got {self.n_items!r}")
        if not isinstance(self.days, int) or self.days < 2:
            raise ValueError(f"days must be an integer >= 2, got {self.days!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        start = pd.Timestamp(self.start)
        if start.tzinfo is None:
            raise ValueError(f"start must be a UTC timestamp, got naive {self.start!r}")
        object.__setattr__(self, "start", start.tz_convert("UTC"))
        for name in (
            "spam_creator_share",
            "low_quality_rate",
            "harmful_rate",
            "anonymous_view_share",
            "auto_fp_rate",
            "human_fp_rate",
            "appeal_rate_wrong",
            "appeal_rate_right",
            "overturn_rate_wrong",
            "overturn_rate_right",
            "review_rate",
            "label_noise",
        ):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {value!r}")
        if not 0.005 <= self.low_quality_rate <= 0.6 or not 0.005 <= self.harmful_rate <= 0.6:
            raise ValueError(
                "low_quality_rate and harmful_rate must be in 0.005..0.6, got "
                f"{self.low_quality_rate!r} and {self.harmful_rate!r}"
            )
        for name in ("items_per_creator", "mean_views", "users_per_item"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        incidents = default_incidents(self.days) if self.incidents is None else self.incidents
        incidents = tuple(
            i if isinstance(i, Incident) else Incident.from_dict(i) for i in incidents
        )
        ids = [i.id for i in incidents]
        if len(set(ids)) != len(ids):
            raise ValueError(f"incident ids must be unique, got {ids}")
        for inc in incidents:
            if inc.start_day >= self.days:
                raise ValueError(
                    f"incident {inc.id!r} starts on day {inc.start_day}, after the {self.days}-day window"
                )
        object.__setattr__(self, "incidents", incidents)
        if not isinstance(self.banks, TextBanks):
            raise ValueError(f"banks must be a simulator.vocab.TextBanks, got {self.banks!r}")
        if self.world_seed is not None and (
            not isinstance(self.world_seed, int) or self.world_seed < 0
        ):
            raise ValueError(f"world_seed must be a non-negative integer, got {self.world_seed!r}")

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=self.days)

    @property
    def dataset_name(self) -> str:
        """The declared name of the dataset this config writes: one name per world, not per
        size or data seed, so models trained on the same world share one registered model."""
        return "sim-default" if self.world_seed is None else f"sim-world-{self.world_seed}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "incidents":
                value = [i.to_dict() for i in value]
            elif f.name == "banks":
                value = value.to_dict()
            elif isinstance(value, pd.Timestamp):
                value = value.isoformat()
            out[f.name] = value
        return out
