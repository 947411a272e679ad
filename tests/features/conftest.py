"""Fixtures for the features tests: a small valid dataset of all six raw tables."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support.tables import make_tables


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    """A fresh valid six-table dataset (tests may modify it)."""
    return make_tables()
