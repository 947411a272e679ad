"""The retraining job: labels, time-aware split, fit, calibrate, evaluate, MLflow logging.

`train` and `TrainResult` (training.pipeline) are re-exported lazily, so importing the
package (the CLI does at start-up) does not load LightGBM and scikit-learn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from training import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
