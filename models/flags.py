"""Which issues a row is flagged for: the one rule every scorer applies.

Numpy only, so that the serving worker's scoring route can import it at start-up without
pandas, LightGBM or scikit-learn (the model loads those after start-up).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def flag_matrix(bundle: Any, probs: np.ndarray) -> np.ndarray:
    """(n, n_issues) booleans: probability (columns in `issue_names` order) at or above the
    issue's threshold. A disabled issue (threshold None, probability NaN) and an issue that
    does not apply to a row (NaN: another anchor) are never flagged."""
    names = bundle.issue_names
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(names))
    thresholds = np.array(
        [np.nan if bundle.thresholds[n] is None else float(bundle.thresholds[n]) for n in names],
        dtype=np.float64,
    )
    with np.errstate(invalid="ignore"):
        return probs >= thresholds  # NaN on either side: False
