"""Server-side charts for the console: the geometry of small line charts, drawn as inline SVG.

Nothing here writes markup: `line_chart` returns numbers (polyline points, band and tick
positions) and plain label strings, and the console's `_chart.html` macro draws them, so
every label goes through Jinja's autoescape like any other text. No script, no CDN, nothing
the page's Content-Security-Policy would have to allow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from serving.review.db import parse_as_of

WIDTH, HEIGHT = 720, 220
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 14, 28


@dataclass
class Series:
    """One line: its CSS class, legend label and (x, y) polyline points in SVG units."""

    cls: str
    label: str
    points: str


@dataclass
class Chart:
    """What `_chart.html` draws."""

    title: str
    width: int = WIDTH
    height: int = HEIGHT
    series: list[Series] = field(default_factory=list)
    bands: list[dict[str, float | str]] = field(default_factory=list)
    lines: list[dict[str, float | str]] = field(default_factory=list)
    xticks: list[dict[str, float | str]] = field(default_factory=list)
    yticks: list[dict[str, float | str]] = field(default_factory=list)
    plot: dict[str, float] = field(default_factory=dict)


def _finite(v: object) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def line_chart(
    title: str,
    times: Sequence[str | datetime],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    bands: Sequence[tuple[str | datetime, str | datetime, str]] = (),
    lines: Sequence[tuple[str | datetime, str]] = (),
) -> Chart | None:
    """A chart of `series` (css class, label, values per time) over `times`, with shaded
    `bands` (start, end, label) and vertical `lines` (time, label); None without data."""
    ts = [parse_as_of(t) for t in times]
    if len(ts) < 2 or any(t is None for t in ts):
        return None
    t0, t1 = ts[0].timestamp(), ts[-1].timestamp()  # type: ignore[union-attr]
    if t1 <= t0:
        return None
    values = [v for _, _, vals in series for v in map(_finite, vals) if v is not None]
    if not values:
        return None
    top = max(values) * 1.1 or 1.0
    x0, x1 = PAD_L, WIDTH - PAD_R
    y0, y1 = HEIGHT - PAD_B, PAD_T

    def x(t: datetime | None) -> float:
        s = min(max(t.timestamp() if t else t0, t0), t1)
        return round(x0 + (x1 - x0) * (s - t0) / (t1 - t0), 1)

    def y(v: float) -> float:
        return round(y0 - (y0 - y1) * v / top, 1)

    chart = Chart(title=title, plot={"x0": x0, "x1": x1, "y0": y0, "y1": y1})
    for cls, label, vals in series:
        pts = [
            f"{x(t)},{y(v)}" for t, v in zip(ts, map(_finite, vals), strict=False) if v is not None
        ]
        if pts:
            chart.series.append(Series(cls=cls, label=label, points=" ".join(pts)))
    for a, b, label in bands:
        xa, xb = x(parse_as_of(a)), x(parse_as_of(b))
        chart.bands.append({"x": xa, "w": max(xb - xa, 2.0), "label": label})
    for t, label in lines:
        chart.lines.append({"x": x(parse_as_of(t)), "label": label})
    n = min(6, len(ts))
    for k in range(n):
        t = ts[round(k * (len(ts) - 1) / max(n - 1, 1))]
        chart.xticks.append({"x": x(t), "text": f"{t:%m-%d}"})  # type: ignore[str-format]
    for k in range(4):
        v = top * k / 3
        chart.yticks.append({"y": y(v), "text": f"{v:.3g}"})
    return chart
