"""TEMPORARY renderer for the study report, until the shared report renderer (``hyperfit.common.report``: Report,
Section, Table, Cell, Plot, Series, Text, write_report_files) lands; the names and fields below are that API's,
so switching is a change of import. Writes ``report.md`` and ``report.html`` (autoescaped, inline SVG plots).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from hyperfit.common.runs import write_text_atomic


@dataclass
class Cell:
    value: float | int | str | None
    ci: tuple[float, float] | None = None
    fmt: str = "{:.3f}"
    note: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    fmt: str = "{:.3f}"


@dataclass
class Series:
    name: str
    x: list[float | str]
    y: list[float]
    low: list[float] | None = None
    high: list[float] | None = None


@dataclass
class Plot:
    title: str
    series: list[Series]
    kind: str = "line"
    x_label: str = ""
    y_label: str = ""
    log_x: bool = False


@dataclass
class Text:
    markdown: str


@dataclass
class Section:
    title: str
    blocks: list[Any]


@dataclass
class Report:
    title: str
    sections: list[Section]
    subtitle: str = ""
    meta: dict = field(default_factory=dict)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and value == value and abs(value) != float("inf")


def format_cell(cell: Any, fmt: str) -> str:
    if isinstance(cell, Cell):
        if cell.value is None or (isinstance(cell.value, float) and not _finite(cell.value)):
            text = "–"
        else:
            text = cell.fmt.format(cell.value) if isinstance(cell.value, int | float) else str(cell.value)
        if cell.ci is not None and all(_finite(v) for v in cell.ci):
            text += f" [{cell.fmt.format(cell.ci[0])}, {cell.fmt.format(cell.ci[1])}]"
        return text + (f" ({cell.note})" if cell.note else "")
    if cell is None or (isinstance(cell, float) and not _finite(cell)):
        return "–"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, float):
        return fmt.format(cell)
    return str(cell)


def bar_svg(plot: Plot, *, width: int = 720, height: int = 300) -> str:
    """Grouped bars (x categories × series) with interval whiskers, as an SVG string (escaped labels)."""
    from html import escape

    categories = list(dict.fromkeys(x for s in plot.series for x in s.x))
    top = max([1e-9] + [h for s in plot.series for h in (s.high or s.y) if _finite(h)])
    left, bottom, right, upper = 50, 80, 10, 20
    plot_w, plot_h = width - left - right, height - bottom - upper
    group = plot_w / max(len(categories), 1)
    bar = group * 0.8 / max(len(plot.series), 1)
    colours = ["#2b5cab", "#d9822b", "#3a9a5b", "#a23b72", "#777777", "#c0392b"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    parts.append(f'<text x="{left}" y="14" font-size="13">{escape(plot.title)}</text>')
    for k in range(5):
        y = upper + plot_h * (1 - k / 4)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 5}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{top * k / 4:.2f}</text>'
        )
    for s_index, series in enumerate(plot.series):
        colour = colours[s_index % len(colours)]
        for x, y, k in zip(series.x, series.y, range(len(series.x)), strict=False):
            if not _finite(y):
                continue
            cx = left + categories.index(x) * group + group * 0.1 + s_index * bar
            h = plot_h * y / top
            parts.append(
                f'<rect x="{cx:.1f}" y="{upper + plot_h - h:.1f}" width="{bar * 0.9:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(series.name)} {escape(str(x))}: {y:.3f}</title></rect>'
            )
            if series.low and series.high and _finite(series.low[k]) and _finite(series.high[k]):
                mid = cx + bar * 0.45
                y_low = upper + plot_h * (1 - series.low[k] / top)
                y_high = upper + plot_h * (1 - series.high[k] / top)
                parts.append(
                    f'<line x1="{mid:.1f}" x2="{mid:.1f}" y1="{y_low:.1f}" y2="{y_high:.1f}" stroke="#222"/>'
                )
    for k, x in enumerate(categories):
        cx = left + k * group + group / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{upper + plot_h + 12}" font-size="10" text-anchor="end" '
            f'transform="rotate(-30 {cx:.1f} {upper + plot_h + 12})">{escape(str(x))}</text>'
        )
    for s_index, series in enumerate(plot.series):
        x = left + s_index * 140
        parts.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{colours[s_index % len(colours)]}"/>'
        )
        parts.append(f'<text x="{x + 14}" y="{height - 5}" font-size="11">{escape(series.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_HTML = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ report.title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:0.6rem 0 1.2rem}th,td{border:1px solid #ccc;padding:0.25rem 0.6rem;font-size:0.9rem}
th{background:#f2f2f2}caption{caption-side:bottom;font-size:0.85rem;color:#555;text-align:left;padding-top:0.3rem}</style>
</head><body>
<h1>{{ report.title }}</h1>{% if report.subtitle %}<p>{{ report.subtitle }}</p>{% endif %}
{% for section in report.sections %}<h2>{{ section.title }}</h2>
{% for block in section.blocks %}{% if block.kind == "text" %}{% for p in block.paragraphs %}<p>{{ p }}</p>{% endfor %}
{% elif block.kind == "table" %}<table><thead><tr>{% for c in block.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for row in block.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
{% if block.caption %}<caption>{{ block.caption }}</caption>{% endif %}</table>
{% elif block.kind == "plot" %}<figure>{{ block.svg|safe }}</figure>{% endif %}{% endfor %}{% endfor %}
</body></html>
"""
)


def write_report_files(report: Report, out_dir: str | Path) -> Path:
    """Write out_dir/report.md and out_dir/report.html atomically; return the HTML path."""
    out_dir = Path(out_dir)
    md = [f"# {report.title}", ""]
    if report.subtitle:
        md += [report.subtitle, ""]
    html_sections = []
    for section in report.sections:
        md += [f"## {section.title}", ""]
        blocks = []
        for block in section.blocks:
            if isinstance(block, Text):
                md += [block.markdown, ""]
                blocks.append(
                    {"kind": "text", "paragraphs": [p for p in block.markdown.split("\n\n") if p.strip()]}
                )
            elif isinstance(block, Table):
                rows = [[format_cell(c, block.fmt) for c in row] for row in block.rows]
                md.append("| " + " | ".join(block.columns) + " |")
                md.append("|" + "---|" * len(block.columns))
                md += ["| " + " | ".join(r) + " |" for r in rows]
                md += ([f"\n{block.caption}"] if block.caption else []) + [""]
                blocks.append(
                    {"kind": "table", "columns": block.columns, "rows": rows, "caption": block.caption}
                )
            elif isinstance(block, Plot):
                blocks.append({"kind": "plot", "svg": bar_svg(block)})
                md += [f"*Plot: {block.title} (see report.html).*", ""]
        html_sections.append({"title": section.title, "blocks": blocks})
    write_text_atomic(out_dir / "report.md", "\n".join(md).rstrip() + "\n")
    html = _HTML.render(
        report={"title": report.title, "subtitle": report.subtitle, "sections": html_sections}
    )
    write_text_atomic(out_dir / "report.html", html)
    return out_dir / "report.html"
