"""Paths inside the repo that tests read (nothing outside it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIKTOK_SPEC = REPO / "features" / "specs" / "tiktok_claims.toml"
TIKTOK_CSV = REPO / "data" / "tiktok_claims.csv"
