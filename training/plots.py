"""Evaluation plots as PNG files (matplotlib, Agg backend): PR curves, calibration, importance.

Each function draws from an `EvaluationReport`'s already-computed tables, so plotting never
re-scores anything; `write_plots` writes all of them into a folder for the MLflow run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: training jobs and tests have no display

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from training.evaluate import EvaluationReport

TOP_FEATURES = 20


def _grid(n: int, width: float = 4.5) -> tuple[Figure, list[plt.Axes]]:
    cols = max(1, min(n, 3))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 4.0 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat


def pr_curves_figure(
    curves: Mapping[str, pd.DataFrame], overall: Mapping[str, Mapping[str, float]]
) -> Figure:
    """One precision-recall curve per issue, with its PR-AUC and the chosen threshold's point."""
    fig, axes = _grid(len(curves))
    for ax, (issue, curve) in zip(axes, curves.items(), strict=False):
        metrics = overall.get(issue, {})
        if len(curve):
            ax.plot(curve["recall"], curve["precision"], lw=1.5)
        p, r = metrics.get("precision_at_threshold"), metrics.get("recall_at_threshold")
        if p is not None and r is not None and p == p and r == r:
            ax.scatter([r], [p], color="C3", zorder=3, label="threshold")
            ax.legend(loc="lower left")
        ax.set_title(f"{issue}  PR-AUC {metrics.get('pr_auc', float('nan')):.3f}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def calibration_figure(calibration: Mapping[str, pd.DataFrame]) -> Figure:
    """Reliability diagram per issue: observed positive rate against mean predicted probability."""
    fig, axes = _grid(len(calibration))
    for ax, (issue, bins) in zip(axes, calibration.items(), strict=False):
        used = bins[bins["n"] > 0] if len(bins) else bins
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        if len(used):
            ax.plot(used["mean_predicted"], used["fraction_positive"], marker="o", lw=1.5)
        ax.set_title(f"{issue} calibration")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("fraction positive")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def importance_figure(importances: Mapping[str, pd.DataFrame], top: int = TOP_FEATURES) -> Figure:
    """Top features by LightGBM gain per issue (horizontal bars, largest on top)."""
    fig, axes = _grid(len(importances), width=7.0)  # long feature names need room
    for ax, (issue, table) in zip(axes, importances.items(), strict=False):
        head = table.sort_values("gain", ascending=False).head(top).iloc[::-1]
        ax.barh(head["feature"].astype(str), head["gain"].astype(float))
        ax.set_title(f"{issue}: importance (gain)")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def write_plots(report: EvaluationReport, out: str | Path) -> list[Path]:
    """Write pr_curves.png, calibration.png and feature_importance.png into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "pr_curves.png": pr_curves_figure(report.pr_curves, report.overall),
        "calibration.png": calibration_figure(report.calibration),
        "feature_importance.png": importance_figure(report.importances),
    }
    written = []
    for name, fig in figures.items():
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)  # figures hold memory until closed; jobs may run many times
        written.append(path)
    return written
