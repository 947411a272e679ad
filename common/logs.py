"""Quiet third-party output: MLflow's INFO chatter and its warnings that need no action.

The CLI calls `quiet_mlflow()` before any command runs. It only sets environment variables
(inherited by serving workers and Dask processes) and logger filters, so it imports nothing
heavy and works whether or not MLflow is loaded yet.
"""

from __future__ import annotations

import logging
import os

# MLflow reads these when it is imported; callers' own values win.
MLFLOW_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # no "Creating initial MLflow database tables..." etc.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # tqdm frames in logs
}

# MLflow warnings about how it works, not about the model or the data: surfacer logs its
# pyfunc as a Python object on purpose (ScoringBundle), and `pip` is not in a uv venv.
NOISE = {
    "mlflow.pyfunc": ("serialized using CloudPickle",),
    "mlflow.utils.environment": ("installed pip version",),
}


class _Drop(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


def quiet_mlflow() -> None:
    """MLflow down to the warnings that matter, in this process and the ones it starts."""
    for name, value in MLFLOW_ENV.items():
        os.environ.setdefault(name, value)
    for name, fragments in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(fragments))
