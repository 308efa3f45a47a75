"""An experiment's report: ``report.md`` and ``report.html`` (tables, notes, links to the variant runs) and the
inline SVG line plots drawn without a plotting dependency, like ``hyperfit.common.report.svg_line_plot``."""

from __future__ import annotations

import html
import math
from pathlib import Path

from hyperfit.common.runs import write_text_atomic
from hyperfit.recipes.experiments.shared import Outcome


def write_experiment_report(out: Path, summary: dict, outcome: Outcome, configs: tuple) -> None:
    """``report.md`` (tables, plots as .svg files beside it) and ``report.html`` (tables, inline plots)."""
    _, data_cfg, train_cfg, eval_cfg, _, _ = configs
    title = f"hyperfit experiment {summary['experiment']} — {out}"
    facts = (
        f"model {summary['model']} · data {summary['data']} · unless the experiment varies them: "
        f"{data_cfg.n_train} training blocks × {data_cfg.block_len} tokens, batch {train_cfg.batch_size}, "
        f"lr {train_cfg.lr:g}, {train_cfg.epochs} epochs, seed {train_cfg.seed}, {train_cfg.precision} · "
        f"{data_cfg.n_eval} held-out prompts, {eval_cfg.prompt_tokens}-token context, {eval_cfg.max_new_tokens} "
        f"greedy tokens, TTR over the last {eval_cfg.ttr_window} · wall {summary['wall_seconds']:.0f} s"
    )
    plots = {name: svg for name, svg in outcome.plots.items() if svg}
    for name, svg in plots.items():
        write_text_atomic(out / name, svg + "\n")
    variants = summary["variants"]
    md = [f"# {title}", "", summary["question"], "", facts, ""]
    for caption, header, cells in outcome.tables:
        md += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(row) + " |" for row in cells] + [""]
    md += [f"![{name}]({name})" for name in plots] + [""]
    md += ["## Notes", ""] + [f"- {note}" for note in outcome.notes] + [""]
    md += ["## Variant runs", ""] + [f"- [runs/{v}](runs/{v}/report.md)" for v in variants]
    write_text_atomic(out / "report.md", "\n".join(md) + "\n")

    esc = html.escape
    tables = "".join(
        f"<h2>{esc(caption)}</h2><table><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr>"
        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in cells)
        + "</table>"
        for caption, header, cells in outcome.tables
    )
    notes = "".join(f"<li>{esc(note)}</li>" for note in outcome.notes)
    links = "".join(f'<li><a href="runs/{esc(v)}/report.html">runs/{esc(v)}</a></li>' for v in variants)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1>{esc(title)}</h1><p>{esc(summary["question"])}</p><p>{esc(facts)}</p>{tables}
<div>{"".join(plots.values())}</div><h2>Notes</h2><ul>{notes}</ul><h2>Variant runs</h2><ul>{links}</ul>
</body></html>
"""
    write_text_atomic(out / "report.html", page)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def svg_plot(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    log_x: bool = False,
    reference: tuple[str, float] | None = None,
    width: int = 520,
    height: int = 260,
) -> str:
    """Several named lines in one inline SVG, with a legend and an optional dashed horizontal reference line
    (e.g. the original model). Like ``report.svg_line_plot`` (no plotting dependency), plus an x label."""
    to_x = math.log10 if log_x else float
    lines = {
        name: [(to_x(x), y) for x, y in points if isinstance(y, int | float) and math.isfinite(y)]
        for name, points in series.items()
    }
    lines = {name: points for name, points in lines.items() if points}
    if not lines:
        return ""
    xs = sorted({x for points in lines.values() for x, _ in points})
    ys = [y for points in lines.values() for _, y in points] + ([reference[1]] if reference else [])
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, right, top, bottom = 44, 130, 24, 38

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    ticks = xs if len(xs) <= 12 else [xs[0], xs[-1]]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">',
        f'<text x="{(width - right + left) / 2}" y="14" text-anchor="middle" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{sy(y1) + 3:.1f}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{left - 4}" y="{sy(y0) + 3:.1f}" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{(width - right + left) / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>',
    ]
    parts += [
        f'<text x="{sx(x):.1f}" y="{height - bottom + 13}" text-anchor="middle">{10**x if log_x else x:.4g}</text>'
        for x in ticks
    ]
    if reference:
        y = sy(reference[1])
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#777" stroke-dasharray="4 3"/>'
            f'<text x="{width - right + 6}" y="{y + 3:.1f}">{html.escape(reference[0])}</text>'
        )
    for i, (name, points) in enumerate(lines.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"/>' for x, y in points)
        legend_y = top + 14 * i + 10 + (14 if reference else 0)
        parts += [
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>',
            f'<g fill="{colour}">{dots}</g>',
            f'<text x="{width - right + 6}" y="{legend_y}" fill="{colour}">{html.escape(name)}</text>',
        ]
    return "".join(parts) + "</svg>"
