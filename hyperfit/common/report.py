"""Reports from run directories alone (never from training state): Markdown and a self-contained HTML page.

Shows the before/after table, the training curves of the paper's Fig. 2 (train loss, held-out loss, TTR and
entropy per epoch) and side-by-side continuations of the same held-out prompts before and after hyperfitting.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from hyperfit.common.runs import read_json, read_jsonl, write_text_atomic

ROWS = (
    ("ttr", "greedy TTR (last 96 generated ids)", "{:.3f}"),
    ("entropy", "held-out next-token entropy (nats)", "{:.3f}"),
    ("top1_prob", "held-out mean top-1 probability", "{:.3f}"),
    ("target_top1", "held-out reference token ranked first", "{:.3f}"),
    ("loss", "held-out loss (nats/token)", "{:.3f}"),
    ("perplexity", "held-out perplexity (corpus)", "{:.1f}"),
    ("seq_perplexity", "held-out perplexity (mean per block)", "{:.1f}"),
    ("gen_entropy", "entropy at generated positions (nats)", "{:.3f}"),
    ("gen_top1_prob", "top-1 probability at generated positions", "{:.3f}"),
    ("gen_length", "generated tokens per prompt", "{:.1f}"),
)


def _fmt(value, pattern: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return pattern.format(value)


def before_after_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, change) for every headline metric the summary holds."""
    rows = []
    before, after = summary.get("before", {}), summary.get("after", {})
    for key, label, pattern in ROWS:
        if key in before and key in after:
            b, a = before[key], after[key]
            change = f"{(a - b) / b * 100:+.0f} %" if b else "–"
            rows.append((label, _fmt(b, pattern), _fmt(a, pattern), change))
    return rows


def _curves(metrics: list[dict]) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {
        "train loss": [],
        "held-out loss": [],
        "TTR": [],
        "entropy": [],
    }
    for record in metrics:
        if record.get("kind") == "epoch":
            curves["train loss"].append((record["epoch"], record["train_loss"]))
        elif record.get("kind") == "eval":
            curves["held-out loss"].append((record["epoch"], record.get("loss", float("nan"))))
            curves["TTR"].append((record["epoch"], record.get("ttr", float("nan"))))
            curves["entropy"].append((record["epoch"], record.get("entropy", float("nan"))))
    return curves


def svg_line_plot(
    series: list[tuple[float, float]], *, title: str, width: int = 300, height: int = 180
) -> str:
    """A minimal inline SVG line plot (no plotting dependency), with min/max labels on both axes."""
    points = [(x, y) for x, y in series if isinstance(y, int | float) and math.isfinite(y)]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 36

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad + (y0 - y) / (y1 - y0) * (height - 2 * pad)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"/>' for x, y in points)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">'
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{pad - 4}" y="{sy(y1) + 3:.1f}" text-anchor="end">{y1:.3g}</text>'
        f'<text x="{pad - 4}" y="{sy(y0) + 3:.1f}" text-anchor="end">{y0:.3g}</text>'
        f'<text x="{pad}" y="{height - pad + 14}" text-anchor="middle">{x0:g}</text>'
        f'<text x="{width - pad}" y="{height - pad + 14}" text-anchor="middle">{x1:g}</text>'
        f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">epoch</text>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{path}"/>'
        f'<g fill="#1f77b4">{dots}</g></svg>'
    )


def _samples(run_dir: Path, summary: dict, count: int = 3) -> list[dict]:
    before = read_jsonl(run_dir / f"generations/epoch_{summary['before']['epoch']:03d}.jsonl")
    after = read_jsonl(run_dir / f"generations/epoch_{summary['after']['epoch']:03d}.jsonl")
    return [
        {
            "prompt": b["prompt"],
            "before": b["continuation"],
            "after": a["continuation"],
            "reference": b["reference"],
        }
        for b, a in list(zip(before, after, strict=False))[:count]
    ]


def write_report(run_dir: str | Path, *, summary: dict | None = None) -> Path:
    """Write ``report.md`` and ``report.html`` into ``run_dir`` and return the HTML path."""
    run_dir = Path(run_dir)
    summary = summary or read_json(run_dir / "summary.json")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    rows = before_after_rows(summary)
    samples = _samples(run_dir, summary)
    curves = _curves(metrics)
    evals = [r for r in metrics if r.get("kind") == "eval"]
    epoch_loss = {r["epoch"]: r["train_loss"] for r in metrics if r.get("kind") == "epoch"}
    title = f"hyperfit report — {run_dir}"
    facts = (
        f"{summary.get('modality', '?')} · model {summary.get('model')} · data {summary.get('data')} · "
        f"{summary.get('n_train')} training blocks × {summary.get('block_len')} tokens · "
        f"{summary.get('n_eval')} held-out prompts · {summary.get('train', {}).get('epochs_done')} epochs, "
        f"final train loss {_fmt(summary.get('train', {}).get('final_train_loss'), '{:.3f}')} · "
        f"wall {summary.get('wall_seconds', 0):.0f} s"
    )

    md = [f"# {title}", "", facts, "", "| metric | before | after | change |", "|---|---|---|---|"]
    md += [f"| {m} | {b} | {a} | {c} |" for m, b, a, c in rows]
    md += [
        "",
        "## Per evaluation",
        "",
        "| epoch | train loss | held-out loss | TTR | entropy | top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for r in evals:
        md.append(
            f"| {r['epoch']} | {_fmt(epoch_loss.get(r['epoch']), '{:.3f}')} | {_fmt(r.get('loss'), '{:.3f}')} | "
            f"{_fmt(r.get('ttr'), '{:.3f}')} | {_fmt(r.get('entropy'), '{:.3f}')} | {_fmt(r.get('top1_prob'), '{:.3f}')} |"
        )
    md += ["", "## Greedy continuations of held-out prompts", ""]
    for i, s in enumerate(samples, 1):
        md += [
            f"### Prompt {i}",
            "",
            f"> {s['prompt']}",
            "",
            "**Before:** " + s["before"],
            "",
            "**After:** " + s["after"],
            "",
            "**Human reference:** " + s["reference"],
            "",
        ]
    write_text_atomic(run_dir / "report.md", "\n".join(md) + "\n")

    esc = html.escape
    table = "".join(f"<tr><td>{esc(m)}</td><td>{b}</td><td>{a}</td><td>{c}</td></tr>" for m, b, a, c in rows)
    per_eval = "".join(
        f"<tr><td>{r['epoch']}</td><td>{_fmt(epoch_loss.get(r['epoch']), '{:.3f}')}</td>"
        f"<td>{_fmt(r.get('loss'), '{:.3f}')}</td><td>{_fmt(r.get('ttr'), '{:.3f}')}</td>"
        f"<td>{_fmt(r.get('entropy'), '{:.3f}')}</td><td>{_fmt(r.get('top1_prob'), '{:.3f}')}</td></tr>"
        for r in evals
    )
    plots = "".join(svg_line_plot(series, title=name) for name, series in curves.items())
    sample_html = "".join(
        f"<h3>Prompt {i}</h3><p class=prompt>{esc(s['prompt'])}</p><div class=cols>"
        f"<div><h4>before</h4><p>{esc(s['before'])}</p></div><div><h4>after</h4><p>{esc(s['after'])}</p></div>"
        f"<div><h4>human reference</h4><p>{esc(s['reference'])}</p></div></div>"
        for i, s in enumerate(samples, 1)
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}.cols{{display:grid;grid-template-columns:1fr 1fr 1fr;gap:1em}}
.prompt{{background:#f3f3f3;padding:.5em}}</style></head><body>
<h1>{esc(title)}</h1><p>{esc(facts)}</p>
<table><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>{table}</table>
<h2>Training curves (paper Fig. 2)</h2><div>{plots}</div>
<h2>Per evaluation</h2><table><tr><th>epoch</th><th>train loss</th><th>held-out loss</th><th>TTR</th>
<th>entropy</th><th>top-1</th></tr>{per_eval}</table>
<h2>Greedy continuations of held-out prompts</h2>{sample_html}</body></html>
"""
    out = run_dir / "report.html"
    write_text_atomic(out, page)
    return out
