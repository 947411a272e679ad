"""The analyst report: one self-contained HTML page (charts inlined as base64 PNG, text escaped).

`render_report(result)` is what the service mounts; `write_discovery` writes it to report.html.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import orjson
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from discovery.pipeline import DiscoveryResult, Trend
from discovery.rootcause import format_table
from discovery.series import segment_key

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("discovery", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
)


def chart_png(trend: Trend, *, width: float = 7.5, height: float = 2.4) -> str:
    """A trend chart (observed rate, baseline, anomaly window shaded) as a base64 PNG data URI."""
    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    times = pd.DatetimeIndex(trend.times).tz_convert(None)
    ax.plot(times, trend.observed, color="#1f5fa8", lw=1.2, label="observed rate")
    ax.plot(times, trend.baseline, color="#888888", lw=1.0, ls="--", label="baseline")
    if trend.marked is not None:
        a, b = (pd.Timestamp(t).tz_convert(None) for t in trend.marked)
        ax.axvspan(
            a,
            max(b, a + pd.Timedelta(hours=6)),
            color="#d62728",
            alpha=0.18,
            label="anomaly (start → detected)",
        )
        ax.axvline(a, color="#d62728", lw=0.8)
    finite = np.asarray(trend.observed, dtype=float)
    if np.isfinite(finite).any():
        top = np.nanpercentile(finite, 99.5)
        ax.set_ylim(
            0,
            max(
                top * 1.15,
                np.nanmax(trend.baseline[np.isfinite(trend.baseline)], initial=0) * 1.3,
                1e-6,
            ),
        )
    ax.set_title(trend.title, fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt_rate(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if not np.isfinite(v) else f"{v:.4f}"


def report_context(result: DiscoveryResult, *, max_charts: int = 30) -> dict[str, Any]:
    """Plain data for the template (all user text stays str; the template escapes it)."""
    incidents = []
    for i, inc in enumerate(result.incidents):
        ev = inc.evidence
        drill = format_table(inc.drilldown.head(8)) if inc.drilldown is not None else []
        incidents.append(
            {
                "n": i + 1,
                "issue": inc.issue,
                "segment": segment_key(inc.segment),
                "start": inc.start.strftime("%Y-%m-%d %H:%M"),
                "detected_at": inc.detected_at.strftime("%Y-%m-%d %H:%M"),
                "severity": f"{inc.severity:.1f}",
                "baseline_rate": _fmt_rate(ev.get("baseline_rate")),
                "observed_rate": _fmt_rate(ev.get("observed_rate")),
                "ratio": ev.get("rate_ratio"),
                "numerator": f"{ev.get('numerator', 0):.0f}",
                "expected": ev.get("expected"),
                "p_value": f"{ev.get('p_value', 1.0):.2e}",
                "contribution": ev.get("contribution"),
                "surprise": ev.get("surprise"),
                "signal": inc.signal,
                "items": ev.get("items"),
                # segments folded into this incident (incidents._absorb_spillovers)
                "spillovers": [
                    {"segment": sp["segment"], "start": sp["start"][:16].replace("T", " ")}
                    for sp in ev.get("spillovers", [])
                ],
                "chart": chart_png(result.trends[i])
                if i < min(len(result.trends), max_charts)
                else None,
                "drilldown": [
                    {
                        **row,
                        "baseline_rate": _fmt_rate(row["baseline_rate"]),
                        "observed_rate": _fmt_rate(row["observed_rate"]),
                    }
                    for row in drill
                ],
            }
        )
    clusters = result.clusters.head(25).to_dict("records") if len(result.clusters) else []
    start, end = result.data_range or (None, None)
    return {
        "title": "surfacer — issue discovery report",
        "range": f"{start:%Y-%m-%d} → {end:%Y-%m-%d}" if start is not None else "",
        "source": "model scores" if result.used_scores else "raw proxies (no scores file)",
        "signals": result.signals,
        "skipped": dict(result.skipped),
        "overview": [chart_png(t, height=1.9) for t in result.overview],
        "incidents": incidents,
        "clusters": clusters,
    }


def render_report(result: DiscoveryResult) -> str:
    """The discovery report as one self-contained HTML string (no external assets)."""
    return _ENV.get_template("report.html.j2").render(**report_context(result))


def write_discovery(result: DiscoveryResult, out: str | Path) -> Path:
    """Write incidents.json, skipped.json (issues disabled in the scoring model, and why) and
    report.html into `out` (created if missing)."""
    out = Path(out)
    # Everything is rendered before anything is written, and each file replaces the old one
    # in one rename: the service reading this folder never sees a truncated incidents.json,
    # and a run failing half-way leaves the previous run's files whole.
    files = {
        "incidents.json": orjson.dumps(result.incidents_json(), option=orjson.OPT_INDENT_2),
        "skipped.json": orjson.dumps(result.skipped, option=orjson.OPT_INDENT_2),
        "report.html": render_report(result).encode("utf-8"),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = out / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, out / name)
        finally:
            tmp.unlink(missing_ok=True)
    return out
