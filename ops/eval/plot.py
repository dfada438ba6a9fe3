"""`opsctl eval --plot FILE`: accuracy against tokens per task, one dot and 95% interval per model (SVG).

Drawn with leather (pure Python, no dependencies of its own), imported only here and only when
--plot is given, so no other opsctl command pays for it. SVG only: leather draws nothing else
(convert with `rsvg-convert -o chart.png chart.svg` if a PNG is needed).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

WIDTH, HEIGHT = 900, 600
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")


def check_path(path: str) -> None:
    """ValueError unless FILE can be an SVG chart (checked before anything is sent)."""
    if not path.lower().endswith(".svg"):
        raise ValueError(f"--plot {path}: the chart is SVG only; name the file *.svg")
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ValueError(f"--plot {path}: directory {parent} does not exist")


def write(path: str, rows, title: str) -> int:
    """Write the chart; the number of models drawn (those with an accuracy and tokens per task)."""
    import leather

    class IntervalDot(leather.Dots):
        """A dot at (tokens, accuracy) with its 95% interval as a vertical bar, and a tooltip."""

        def to_svg(self, width, height, x_scale, y_scale, series, palette):
            group = ET.Element("g")
            group.set("class", "series interval-dots")
            for d in series.data():
                x = x_scale.project(d.x, 0, width)
                y = y_scale.project(d.y, height, 0)
                low = y_scale.project(d.row["low"], height, 0)
                high = y_scale.project(d.row["high"], height, 0)
                item = ET.SubElement(group, "g")
                ET.SubElement(item, "title").text = d.row["tip"]
                ET.SubElement(item, "line", x1=str(x), x2=str(x), y1=str(low), y2=str(high),
                              stroke=self._fill_color, **{"stroke-width": "2"})
                for end in (low, high):
                    ET.SubElement(item, "line", x1=str(x - 5), x2=str(x + 5), y1=str(end), y2=str(end),
                                  stroke=self._fill_color, **{"stroke-width": "2"})
                ET.SubElement(item, "circle", cx=str(x), cy=str(y), r=str(self._radius), fill=self._fill_color)
            return group

    from ops.eval.metrics import SOURCE_METRICS

    # One basis for every dot: the proxy's prompt+completion tokens when all models have them, else
    # completion tokens (all an answer's usage reports for a strategy).
    total = all(r.source == SOURCE_METRICS for r in rows)
    tokens = (lambda r: r.tokens_per_task) if total else (lambda r: r.completion_tokens_per_task)
    basis = "upstream prompt+completion, proxy metrics" if total else "completion tokens"
    drawn = [r for r in rows if r.accuracy is not None and tokens(r) is not None]
    if not drawn:
        raise ValueError("no model has both an accuracy and tokens per task to draw")
    chart = leather.Chart(title)
    chart.add_x_scale(0, max(tokens(r) for r in drawn) * 1.15 or 1.0)
    chart.add_y_scale(0, 1)
    chart.add_x_axis(name=f"tokens per task ({basis})")
    chart.add_y_axis(name="accuracy, 95% Wilson interval")
    for i, row in enumerate(drawn):
        tip = (f"{row.model}: accuracy {row.accuracy:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] over "
               f"{row.samples} answers, {tokens(row):g} tokens per task ({basis})")
        data = [{"x": tokens(row), "y": row.accuracy, "low": row.ci_low, "high": row.ci_high, "tip": tip}]
        series = leather.Series(data, x=lambda r, i: r["x"], y=lambda r, i: r["y"], name=row.model)
        chart.add_series(series, IntervalDot(fill_color=COLORS[i % len(COLORS)], radius=5))
    # leather wraps the legend against the whole width while drawing it inside the margins: it
    # overflows on the right. A wider per-character estimate while rendering wraps it in time.
    saved = leather.theme.legend_font_char_width
    leather.theme.legend_font_char_width = saved * 1.25
    try:
        chart.to_svg(path, width=WIDTH, height=HEIGHT)
    finally:
        leather.theme.legend_font_char_width = saved
    return len(drawn)
