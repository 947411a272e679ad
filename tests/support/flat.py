"""A small flat dataset (CSV + TOML spec) whose labels depend on text, a count and a category."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

WORDS_BAD = ["free", "crypto", "giveaway", "click", "winner"]
WORDS_OK = ["recipe", "garden", "travel", "music", "dance", "story", "coffee", "sunset"]


def write_flat_dataset(folder: Path, n: int = 1200, seed: int = 0) -> Path:
    """A flat dataset whose labels depend on text, a count and a category (so all paths matter)."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["us", "br", "in", "de"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    views = rng.lognormal(6, 1.5, size=n).round()
    reports = rng.poisson(0.5 + views * 0.001)
    spammy = rng.random(n) < 0.3
    words = [
        " ".join(
            rng.choice(WORDS_BAD if s else WORDS_OK, size=2).tolist()
            + rng.choice(WORDS_OK, size=3).tolist()
        )
        for s in spammy
    ]
    logit = -2.0 + 2.5 * spammy + 0.8 * (region == "br") + 1.2 * (reports > 2)
    spam = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    other = (rng.random(n) < 1 / (1 + np.exp(-(-1.0 + 0.002 * np.minimum(views, 2000))))).astype(
        int
    )
    frame = pd.DataFrame(
        {
            "id": [f"v{i:05d}" for i in range(n)],
            "caption": words,
            "views": views,
            "reports": reports,
            "region": region,
            "status": np.where(spam == 1, "spam", "ok"),
            "ban": np.where(other == 1, "banned", "active"),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "items.csv", index=False)
    spec = folder / "spec.toml"
    spec.write_text(
        'name = "synthetic"\n'
        'path = "items.csv"\n'
        'id = "id"\n'
        'text = ["caption"]\n'
        'numeric = ["views", "reports"]\n'
        'categorical = ["region"]\n'
        "[labels.spam]\n"
        'column = "status"\n'
        'equals = "spam"\n'
        "[labels.ban]\n"
        'column = "ban"\n'
        'not_equals = "active"\n'
    )
    return spec


def records_of(frame: pd.DataFrame) -> list[dict]:
    """Frame rows as plain dicts with None for missing values (what a JSON client posts)."""
    out = []
    for row in frame.to_dict("records"):
        out.append(
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        )
    return out
