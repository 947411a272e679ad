"""common.logs: MLflow's no-action warnings are dropped, the others still get through."""

from __future__ import annotations

import logging
import os

import pytest

from common.logs import MLFLOW_ENV, quiet_mlflow


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_noise_is_dropped_and_real_warnings_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    quiet_mlflow()
    quiet_mlflow()  # idempotent: one filter per logger
    logger = logging.getLogger("mlflow.pyfunc")
    assert len(logger.filters) == 1
    keep = Keep()
    logger.addHandler(keep)
    try:
        logger.warning("Passing a Python object ... serialized using CloudPickle, it requires")
        logger.warning("The model could not be loaded from runs:/abc")
    finally:
        logger.removeHandler(keep)
    assert keep.messages == ["The model could not be loaded from runs:/abc"]


def test_environment_defaults_do_not_override_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    quiet_mlflow()
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
