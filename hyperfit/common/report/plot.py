"""Every chart of every report: a ``Plot`` drawn as one inline SVG string (line or grouped-bar chart).

Axes with "nice" ticks (1, 2, 2.5 or 5 × 10^k), tick labels, axis labels, a legend, optional log-scaled x, dashed
reference lines and error bars for intervals. Written by hand rather than with matplotlib, which would add a large
dependency for two chart kinds (docs/reports.md has the measured comparison). All text passes through
``html.escape``; the output is safe to inline.
"""

from __future__ import annotations

import math
from html import escape

from hyperfit.common.report.data import Plot, Series

# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in grey print.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 58, 150, 30, 48  # the legend lives in the right margin


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def nice_ticks(low: float, high: float, *, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]: steps of 1, 2, 2.5 or 5 × 10^k."""
    if not (_finite(low) and _finite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def tick_label(value: float) -> str:
    """Short label: 0.25, 1.5, 1e-05, 2000 (``:g`` with enough digits, no float noise)."""
    if value == 0:
        return "0"
    return f"{value:.4g}"


def _text(x: float, y: float, label: str, *, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(label)}</text>'


def _y_range(plot: Plot, *, include_zero: bool) -> tuple[float, float] | None:
    values = [v for s in plot.series for v in (*s.y, *(s.low or []), *(s.high or [])) if _finite(v)]
    values += [v for _, v in plot.references if _finite(v)]
    if include_zero:
        values.append(0.0)
    if not values:
        return None
    return min(values), max(values)


def _frame(plot: Plot, y_ticks: list[float], sy) -> list[str]:
    """Title, y grid with tick labels, the two axes and the axis labels."""
    plot_w = WIDTH - LEFT - RIGHT
    parts = [
        f"<title>{escape(plot.title)}</title>",
        _text(LEFT + plot_w / 2, 16, plot.title, extra=' font-weight="bold" font-size="12"'),
    ]
    for tick in y_ticks:
        y = sy(tick)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(_text(LEFT - 5, y + 3.5, tick_label(tick), anchor="end"))
    parts.append(
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#666"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#666"/>'
    )
    if plot.x_label:
        parts.append(_text(LEFT + plot_w / 2, HEIGHT - 8, plot.x_label))
    if plot.y_label:
        middle = TOP + (HEIGHT - TOP - BOTTOM) / 2
        parts.append(_text(14, middle, plot.y_label, extra=f' transform="rotate(-90 14 {middle:.1f})"'))
    return parts


def _legend(names: list[str], references: list[tuple[str, float]]) -> list[str]:
    parts, y = [], TOP + 6
    for i, name in enumerate(names):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(
            f'<rect x="{WIDTH - RIGHT + 12}" y="{y - 8}" width="10" height="10" fill="{colour}"/>'
            + _text(WIDTH - RIGHT + 27, y + 1, name, anchor="start")
        )
        y += 16
    for name, _ in references:
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 10}" y1="{y - 3}" x2="{WIDTH - RIGHT + 24}" y2="{y - 3}" stroke="#555" '
            'stroke-dasharray="4 3"/>' + _text(WIDTH - RIGHT + 27, y + 1, name, anchor="start")
        )
        y += 16
    return parts


def _reference_lines(plot: Plot, sy) -> list[str]:
    return [
        f'<line class="reference" x1="{LEFT}" y1="{sy(value):.1f}" x2="{WIDTH - RIGHT}" y2="{sy(value):.1f}" '
        f'stroke="#555" stroke-dasharray="4 3"><title>{escape(name)}: {escape(tick_label(value))}</title></line>'
        for name, value in plot.references
        if _finite(value)
    ]


def _category_label(x: float, label: str, *, slot: float) -> str:
    """A category under the x axis; tilted when it is wider than its slot (about 5.5 px a character)."""
    if len(label) * 5.5 <= slot * 0.95:
        return _text(x, HEIGHT - BOTTOM + 15, label)
    y = HEIGHT - BOTTOM + 10
    return _text(x, y, label, anchor="end", extra=f' transform="rotate(-25 {x:.1f} {y:.1f})"')


def _error_bar(x: float, y_low: float, y_high: float, colour: str) -> str:
    return (
        f'<g class="errorbar" stroke="{colour}" stroke-width="1.2">'
        f'<line x1="{x:.1f}" y1="{y_low:.1f}" x2="{x:.1f}" y2="{y_high:.1f}"/>'
        f'<line x1="{x - 4:.1f}" y1="{y_low:.1f}" x2="{x + 4:.1f}" y2="{y_low:.1f}"/>'
        f'<line x1="{x - 4:.1f}" y1="{y_high:.1f}" x2="{x + 4:.1f}" y2="{y_high:.1f}"/></g>'
    )


def _bounds(series: Series, i: int) -> tuple[float, float] | None:
    if series.low is None or series.high is None or i >= len(series.low) or i >= len(series.high):
        return None
    low, high = series.low[i], series.high[i]
    return (low, high) if _finite(low) and _finite(high) else None


def _svg(parts: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10" role="img" '
        f'aria-label="{escape(title)}">' + "".join(parts) + "</svg>"
    )


def line_svg(plot: Plot) -> str:
    """Points joined per series; numeric x (log10-scaled with ``log_x``) or category labels at equal spacing."""
    categorical = any(isinstance(x, str) for s in plot.series for x in s.x)
    categories = list(dict.fromkeys(str(x) for s in plot.series for x in s.x)) if categorical else []

    def position(x) -> float | None:
        if categorical:
            return float(categories.index(str(x)))
        if not _finite(x) or (plot.log_x and x <= 0):
            return None
        return math.log10(x) if plot.log_x else float(x)

    xs = [p for s in plot.series for x in s.x if (p := position(x)) is not None]
    y_range = _y_range(plot, include_zero=False)
    if not xs or y_range is None:
        return ""
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    elif not categorical:  # keep the end points (and their error bars) off the axes
        pad = (x1 - x0) * 0.03
        x0, x1 = x0 - pad, x1 + pad
    y_ticks = nice_ticks(*y_range)
    y0, y1 = min(y_ticks[0], y_range[0]), max(y_ticks[-1], y_range[1])
    inner = 10 if categorical else 0  # keep category points off the axis

    def sx(x: float) -> float:
        return LEFT + inner + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT - 2 * inner)

    def sy(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    parts = _frame(plot, y_ticks, sy)
    if categorical:
        x_ticks = [(float(i), label) for i, label in enumerate(categories)]
    elif plot.log_x:
        distinct = sorted(set(xs))
        decades = range(math.floor(x0), math.ceil(x1) + 1)
        x_ticks = [(x, tick_label(10**x)) for x in (distinct if len(distinct) <= 12 else decades)]
    else:
        x_ticks = [(x, tick_label(x)) for x in nice_ticks(x0, x1) if x0 - 1e-9 <= x <= x1 + 1e-9]
    slot = (WIDTH - LEFT - RIGHT) / max(len(x_ticks), 1)
    for x, label in x_ticks:
        parts.append(
            f'<line x1="{sx(x):.1f}" y1="{HEIGHT - BOTTOM}" x2="{sx(x):.1f}" y2="{HEIGHT - BOTTOM + 4}" '
            'stroke="#666"/>' + _category_label(sx(x), label, slot=slot)
        )
    parts += _reference_lines(plot, sy)
    for k, series in enumerate(plot.series):
        colour = COLOURS[k % len(COLOURS)]
        runs: list[list[tuple[float, float]]] = [[]]  # a missing value breaks the line
        for i, (x, y) in enumerate(zip(series.x, series.y, strict=False)):
            px = position(x)
            if px is None or not _finite(y):
                runs.append([])
                continue
            runs[-1].append((sx(px), sy(y)))
            bounds = _bounds(series, i)
            if bounds:
                parts.append(_error_bar(sx(px), sy(bounds[0]), sy(bounds[1]), colour))
            parts.append(
                f'<circle cx="{sx(px):.1f}" cy="{sy(y):.1f}" r="2.8" fill="{colour}"><title>'
                f"{escape(series.name)}, {escape(str(x))}: {escape(tick_label(y))}</title></circle>"
            )
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{points}"/>'
                )
    parts += _legend([s.name for s in plot.series], plot.references)
    return _svg(parts, plot.title)


def bar_svg(plot: Plot) -> str:
    """Grouped bars: one slot per category (the union of the series' ``x`` labels), one bar per series."""
    categories = list(dict.fromkeys(str(x) for s in plot.series for x in s.x))
    y_range = _y_range(plot, include_zero=True)
    if not categories or y_range is None:
        return ""
    y_ticks = nice_ticks(*y_range)
    y0, y1 = min(y_ticks[0], y_range[0]), max(y_ticks[-1], y_range[1])

    def sy(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    parts = _frame(plot, y_ticks, sy)
    slot = (WIDTH - LEFT - RIGHT) / len(categories)
    bar = slot * 0.8 / max(len(plot.series), 1)
    for c, category in enumerate(categories):
        parts.append(_category_label(LEFT + slot * (c + 0.5), category, slot=slot))
    for k, series in enumerate(plot.series):
        colour = COLOURS[k % len(COLOURS)]
        for i, (x, y) in enumerate(zip(series.x, series.y, strict=False)):
            if not _finite(y):
                continue
            left = LEFT + slot * (categories.index(str(x)) + 0.1) + k * bar
            top, bottom = sorted((sy(y), sy(0.0)))
            parts.append(
                f'<rect x="{left:.1f}" y="{top:.1f}" width="{bar:.1f}" height="{bottom - top:.1f}" '
                f'fill="{colour}"><title>{escape(series.name)}, {escape(str(x))}: {escape(tick_label(y))}'
                "</title></rect>"
            )
            bounds = _bounds(series, i)
            if bounds:
                parts.append(_error_bar(left + bar / 2, sy(bounds[0]), sy(bounds[1]), "#222"))
    parts += _reference_lines(plot, sy)
    parts += _legend([s.name for s in plot.series], plot.references)
    return _svg(parts, plot.title)


def plot_svg(plot: Plot) -> str:
    """The SVG of ``plot``, or "" when it has no finite value to draw."""
    if plot.kind == "line":
        return line_svg(plot)
    if plot.kind == "bar":
        return bar_svg(plot)
    raise ValueError(f"plot kind {plot.kind!r} is unknown; use 'line' or 'bar'.")
