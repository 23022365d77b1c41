"""Hand-written SVG charts (standard library only): a line chart over categorical x values with
interval whiskers, grouped bars in one or more panels, and a ratio chart (one row per configuration, its
interval, the target line, the verdict). Every function returns the SVG as a string.

Values are (y, low, high) triples (low/high may be None: no whisker) or None for a missing point.
Colours are fixed per implementation and mode (series_colour) and per verdict (VERDICT_COLOURS), so the
same thing has the same colour in every report.
"""
import math
from xml.sax.saxutils import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
# one colour per implementation and mode, the same in every report (a name without a mode is block's)
SERIES_COLOURS = {"engine block": "#1f77b4", "engine fail_fast": "#17becf", "baseline block": "#d62728",
                  "baseline fail_fast": "#ff9896", "engine": "#1f77b4", "baseline": "#d62728"}
VERDICT_COLOURS = {"met": "#2ca02c", "not met": "#d62728", "inconclusive": "#ff7f0e",
                   "not comparable": "#7f7f7f", "no data": "#bbbbbb"}


def series_colour(name, index=0):
    """The fixed colour of an implementation/mode series name; other names take the palette in order."""
    return SERIES_COLOURS.get(name) or PALETTE[(index + 2) % len(PALETTE)]
FONT = 'font-family="Helvetica, Arial, sans-serif"'


def nice_ticks(top, count=5):
    """Tick values from 0 to at least `top`, on a 1/2/2.5/5 x 10^k step."""
    if not top or top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        step = mult * power
        if step * count >= top:
            break
    n = int(math.ceil(top / step - 1e-9))
    return [i * step for i in range(n + 1)]


def fmt_tick(v):
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _text(x, y, s, size=12, anchor="middle", weight=None, rotate=None, color="#222"):
    attrs = f'x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}" {FONT}'
    if weight:
        attrs += f' font-weight="{weight}"'
    if rotate is not None:
        attrs += f' transform="rotate({rotate} {x:.1f} {y:.1f})"'
    return f"<text {attrs}>{escape(str(s))}</text>"


def _top_of(series_values):
    top = 0.0
    for values in series_values:
        for v in values:
            if v is None:
                continue
            y, lo, hi = v
            for c in (y, hi):
                if c is not None and math.isfinite(c):
                    top = max(top, c)
    return top


def _clip(s, limit):
    s = str(s)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _frame(width, height, title, note, subtitle=None):
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
             _text(width / 2, 22, _clip(title, width // 9), size=15, weight="bold")]
    if subtitle:
        parts.append(_text(width / 2, 40, _clip(subtitle, width // 6), size=11, color="#444"))
    if note:
        parts.append(_text(width / 2, height - 8, note, size=11, color="#555"))
    return parts


def _y_axis(parts, left, top, plot_w, plot_h, ticks, y_label):
    ymax = ticks[-1] or 1.0
    for t in ticks:
        y = top + plot_h - plot_h * t / ymax
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(_text(left - 6, y + 4, fmt_tick(t), size=11, anchor="end"))
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
                 f'stroke="#333"/>')
    parts.append(_text(left - 48, top + plot_h / 2, y_label, size=12, rotate=-90))
    return ymax


def _legend(parts, names, x, y, colours=None):
    for i, name in enumerate(names):
        color = (colours or {}).get(name) or series_colour(name, i)
        yy = y + i * 18
        parts.append(f'<rect x="{x}" y="{yy - 9}" width="12" height="12" fill="{color}"/>')
        parts.append(_text(x + 18, yy + 2, name, size=12, anchor="start"))


def _whisker(parts, x, ymap, lo, hi, color):
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return
    y1, y2 = ymap(max(lo, 0.0)), ymap(hi)
    parts.append(f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y2:.1f}" stroke="{color}" '
                 f'stroke-width="1.2"/>')
    for yy in (y1, y2):
        parts.append(f'<line x1="{x - 4:.1f}" y1="{yy:.1f}" x2="{x + 4:.1f}" y2="{yy:.1f}" stroke="{color}" '
                     f'stroke-width="1.2"/>')


def line_chart(title, x_label, y_label, x_values, series, note=None, width=720, height=420, subtitle=None):
    """x_values: labels, evenly spaced; series: [(name, [(y, lo, hi) | None per x])]."""
    left, right, top, bottom = 80, 170, 56 if subtitle else 40, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = _frame(width, height, title, note, subtitle)
    ymax = _y_axis(parts, left, top, plot_w, plot_h, nice_ticks(_top_of(v for _, v in series) * 1.05),
                   y_label)
    n = max(1, len(x_values))
    step = plot_w / n
    xs = [left + step * (i + 0.5) for i in range(len(x_values))]
    for x, label in zip(xs, x_values, strict=True):
        parts.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 5}" '
                     f'stroke="#333"/>')
        parts.append(_text(x, top + plot_h + 20, label, size=11))
    parts.append(_text(left + plot_w / 2, top + plot_h + 42, x_label, size=12))

    def ymap(v):
        return top + plot_h - plot_h * v / ymax

    for i, (name, values) in enumerate(series):
        color = series_colour(name, i)
        points = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None and v[0] is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{ymap(v[0]):.1f}" for x, v in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, (y, lo, hi) in points:
            _whisker(parts, x, ymap, lo, hi, color)
            parts.append(f'<circle cx="{x:.1f}" cy="{ymap(y):.1f}" r="3.5" fill="{color}"/>')
    _legend(parts, [name for name, _ in series], left + plot_w + 16, top + 12)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def bar_panels(title, panels, series_names, note=None, panel_width=380, height=420, subtitle=None):
    """Grouped bars in side-by-side panels.

    panels: [{"title", "y_label", "categories": [label], "values": {series name: [(y, lo, hi) | None
    per category]}}]; series_names fixes the bar order and colours across panels.
    """
    left, right, top, bottom = 72, 20, 72 if subtitle else 56, 70
    legend_w = 170
    width = panel_width * len(panels) + legend_w
    parts = _frame(width, height, title, note, subtitle)
    for p_index, panel in enumerate(panels):
        x0 = p_index * panel_width
        plot_w, plot_h = panel_width - left - right, height - top - bottom
        parts.append(_text(x0 + left + plot_w / 2, top - 10, panel["title"], size=13, weight="bold"))
        values = panel["values"]
        ymax = _y_axis(parts, x0 + left, top, plot_w, plot_h,
                       nice_ticks(_top_of(values.get(s, []) for s in series_names) * 1.05),
                       panel["y_label"])

        def ymap(v, _ymax=ymax, _plot_h=plot_h):
            return top + _plot_h - _plot_h * v / _ymax

        cats = panel["categories"]
        group_w = plot_w / max(1, len(cats))
        bar_w = group_w * 0.8 / max(1, len(series_names))
        for c_index, cat in enumerate(cats):
            gx = x0 + left + group_w * c_index + group_w * 0.1
            for s_index, name in enumerate(series_names):
                v = (values.get(name) or [None] * len(cats))[c_index]
                if v is None or v[0] is None:
                    continue
                y, lo, hi = v
                color = series_colour(name, s_index)
                bx = gx + bar_w * s_index
                parts.append(f'<rect x="{bx:.1f}" y="{ymap(y):.1f}" width="{bar_w * 0.92:.1f}" '
                             f'height="{max(0.0, top + plot_h - ymap(y)):.1f}" fill="{color}"/>')
                _whisker(parts, bx + bar_w * 0.46, ymap, lo, hi, "#222")
            parts.append(_text(x0 + left + group_w * (c_index + 0.5), top + plot_h + 20, _clip(cat, 14), size=11))
        parts.append(_text(x0 + left + plot_w / 2, top + plot_h + 42, panel.get("x_label", ""), size=12))
    _legend(parts, series_names, panel_width * len(panels) + 10, top + 12)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def ratio_chart(title, rows, target, direction, x_label, note=None, subtitle=None, label_header=None, width=760):
    """One row per configuration: the ratio, its interval, coloured by verdict, against a dashed target
    line. rows: [{"label", "ratio", "low", "high", "verdict"}]; ratio None: nothing drawn but the label;
    an infinite bound is drawn to the edge. label_header names what the labels list (above them)."""
    row_h = 22
    longest = max([len(str(r["label"])) for r in rows] + [8])
    left = min(420, 24 + 7 * longest)
    width = max(width, left + 460)
    right, top, bottom = 130, 84 if subtitle else 68, 56
    plot_w = width - left - right
    plot_h = row_h * max(1, len(rows))
    height = top + plot_h + bottom
    parts = _frame(width, height, title, note, subtitle)
    finite = [target]
    for r in rows:
        for k in ("ratio", "low", "high"):
            v = r.get(k)
            if v is not None and math.isfinite(v):
                finite.append(v)
    lo_v = min(0.0, min(finite))
    ticks = nice_ticks(max(finite) * 1.08 - lo_v)
    span = ticks[-1] or 1.0

    def xmap(v):
        v = min(max(v, lo_v), lo_v + span)
        return left + plot_w * (v - lo_v) / span

    for t in ticks:
        x = xmap(lo_v + t)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#e5e5e5"/>')
        parts.append(_text(x, top + plot_h + 16, fmt_tick(lo_v + t), size=11))
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>')
    parts.append(_text(left + plot_w / 2, top + plot_h + 36, x_label, size=12))
    tx = xmap(target)
    parts.append(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{top + plot_h}" stroke="#222" '
                 f'stroke-dasharray="5,4" stroke-width="1.5"/>')
    parts.append(_text(tx, top - 10, f"target {direction.replace('>=', '≥').replace('<=', '≤')} {target:g}",
                       size=11))
    if label_header:
        parts.append(_text(8, top - 10, _clip(label_header, 60), size=11, anchor="start", weight="bold"))
    for i, r in enumerate(rows):
        y = top + row_h * (i + 0.5)
        parts.append(_text(left - 8, y + 4, _clip(r["label"], 56), size=11, anchor="end"))
        colour = VERDICT_COLOURS.get(r.get("verdict"), "#555")
        low, high, est = r.get("low"), r.get("high"), r.get("ratio")
        if low is not None and high is not None:
            x1, x2 = xmap(low if math.isfinite(low) else lo_v), xmap(high if math.isfinite(high) else lo_v + span)
            parts.append(f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{colour}" '
                         f'stroke-width="2"/>')
            for xx, v in ((x1, low), (x2, high)):
                if math.isfinite(v):
                    parts.append(f'<line x1="{xx:.1f}" y1="{y - 5:.1f}" x2="{xx:.1f}" y2="{y + 5:.1f}" '
                                 f'stroke="{colour}" stroke-width="2"/>')
        if est is not None and math.isfinite(est):
            fill = "white" if r.get("verdict") == "not comparable" else colour
            parts.append(f'<circle cx="{xmap(est):.1f}" cy="{y:.1f}" r="4.5" fill="{fill}" stroke="{colour}" '
                         f'stroke-width="2"/>')
        parts.append(_text(left + plot_w + 8, y + 4, r.get("verdict") or "", size=11, anchor="start",
                           color=colour))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
