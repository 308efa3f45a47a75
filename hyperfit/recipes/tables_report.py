"""A plain report for the commands that produce tables with intervals (analyze, retention): ``report.md`` and
``report.html`` from (caption, header, rows, notes) sections. The data stay in ``summary.json``; this only lays
them out, escaped, with each interval printed beside its figure."""

from __future__ import annotations

import html
import math
from pathlib import Path

from hyperfit.common.runs import write_text_atomic

Section = tuple[str, list[str], list[list[str]], list[str]]  # caption, header, rows, notes


def fmt(value, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return pattern.format(value) if isinstance(value, int | float) else str(value)


def fmt_ci(value, ci, pattern: str = "{:.3f}") -> str:
    """``0.512 [0.480, 0.551]``: a figure and its 95 % interval (the interval left out when unknown)."""
    if ci is None or any(not isinstance(c, int | float) or not math.isfinite(c) for c in ci):
        return fmt(value, pattern)
    return f"{fmt(value, pattern)} [{fmt(ci[0], pattern)}, {fmt(ci[1], pattern)}]"


def write_tables_report(out: Path, *, title: str, intro: list[str], sections: list[Section]) -> Path:
    """Write ``out/report.md`` and ``out/report.html``; return the HTML path."""
    md = [f"# {title}", ""] + [line for p in intro for line in (p, "")]
    for caption, header, rows, notes in sections:
        md += [f"## {caption}", ""]
        if header:
            md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        md += [f"- {note}" for note in notes] + ([""] if notes else [])
    write_text_atomic(out / "report.md", "\n".join(md) + "\n")
    esc = html.escape
    body = "".join(f"<p>{esc(p)}</p>" for p in intro)
    for caption, header, rows, notes in sections:
        body += f"<h2>{esc(caption)}</h2>"
        if header:
            body += "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
            body += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
            body += "</table>"
        if notes:
            body += "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>
"""
    write_text_atomic(out / "report.html", page)
    return out / "report.html"
