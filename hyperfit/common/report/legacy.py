"""Reports from run directories alone (never from training state): Markdown and a self-contained HTML page.

Shows the before/after table, the training curves of the paper's Fig. 2 (train loss, held-out loss, TTR and
entropy per epoch) and side-by-side continuations of the same held-out prompts before and after hyperfitting.
"""

from __future__ import annotations

import html
import math
import os
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
    ("rep_4", "rep-4 of the greedy continuations (SimCTG)", "{:.3f}"),
    ("loop_share", "continuations ending in a repeated phrase", "{:.3f}"),
    # Image completions (recipes/fit_image.py); a text summary has none of these keys, so they never show there.
    ("stripe_score", "completed rows equal to the row above", "{:.3f}"),
    ("longest_run", "longest single-token run in a completion", "{:.1f}"),
    ("nn_distance", "MSE to the nearest training image", "{:.4f}"),
    ("pixel_diversity", "RMS distance between completions", "{:.3f}"),
    ("mse", "MSE against the held-out truth", "{:.4f}"),
    ("psnr", "PSNR against the held-out truth (dB)", "{:.2f}"),
)

# One cross-modal table (text run beside image run): sharpness and repetition, as in paper Tables 1-3 and §7.1.
CROSS_MODAL_ROWS = (
    ("ttr", "greedy TTR (last 96 generated ids)", "{:.3f}"),
    ("entropy", "held-out next-token entropy (nats)", "{:.3f}"),
    ("top1_prob", "held-out mean top-1 probability", "{:.3f}"),
    ("perplexity", "held-out perplexity", "{:.1f}"),
    ("gen_entropy", "entropy at generated positions (nats)", "{:.3f}"),
    ("rep_4", "rep-4 of the generations", "{:.3f}"),
    ("loop_share", "generations ending in a repeated phrase", "{:.3f}"),
    ("stripe_score", "image rows equal to the row above", "{:.3f}"),
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


def highlight_repeats(text: str, *, n: int = 4) -> str:
    """HTML of ``text`` with every word that belongs to a repeated word n-gram marked (the paper's Fig. 1).

    A word n-gram counts as repeated from its second occurrence on; both occurrences' words are marked, so a
    greedy loop shows as a block of highlighted text. Words are whitespace-split; the text is HTML-escaped.
    """
    words = text.split()
    first_seen: dict[tuple[str, ...], int] = {}
    marked = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in first_seen:
            for j in (*range(first_seen[gram], first_seen[gram] + n), *range(i, i + n)):
                marked[j] = True
        else:
            first_seen[gram] = i
    return " ".join(
        f"<mark>{html.escape(w)}</mark>" if m else html.escape(w) for w, m in zip(words, marked, strict=True)
    )


def svg_bar_chart(
    groups: dict[str, dict[str, float]], *, title: str, width: int = 520, height: int = 200
) -> str:
    """Grouped bars without a plotting dependency: ``groups[series][category] = value`` (e.g. shares per rank bin)."""
    series = list(groups)
    categories = list(next(iter(groups.values()), {}))
    if not categories:
        return ""
    top = max(max(values.values(), default=0) for values in groups.values()) or 1.0
    pad, colours = 36, ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    slot = (width - 2 * pad) / len(categories)
    bar = slot * 0.8 / len(series)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
        f'<text x="{pad - 4}" y="{pad + 3}" text-anchor="end">{top:.2g}</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
    ]
    for c, category in enumerate(categories):
        x0 = pad + c * slot + slot * 0.1
        parts.append(
            f'<text x="{x0 + slot * 0.4:.1f}" y="{height - pad + 12}" text-anchor="middle">{html.escape(category)}</text>'
        )
        for k, name in enumerate(series):
            value = groups[name].get(category, 0.0)
            h = value / top * (height - 2 * pad)
            parts.append(
                f'<rect x="{x0 + k * bar:.1f}" y="{height - pad - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colours[k % len(colours)]}"><title>{html.escape(name)} {html.escape(category)}: {value:.3f}</title></rect>'
            )
    for k, name in enumerate(series):
        parts.append(
            f'<rect x="{width - pad - 90}" y="{22 + 12 * k}" width="8" height="8" fill="{colours[k % len(colours)]}"/>'
            f'<text x="{width - pad - 78}" y="{30 + 12 * k}">{html.escape(name)}</text>'
        )
    return "".join(parts) + "</svg>"


def rank_chart(summary: dict) -> str:
    """Reference-token rank distribution, original vs hyperfitted (shares of held-out positions per rank bin)."""
    sharp = summary.get("sharpness")
    if not sharp or "rank_histogram" not in sharp.get("before", {}):
        return ""
    groups = {
        label: {
            band: count / sharp[side]["n_positions"] for band, count in sharp[side]["rank_histogram"].items()
        }
        for label, side in (("original", "before"), ("hyperfitted", "after"))
    }
    return svg_bar_chart(groups, title="rank of the reference token (share of held-out positions)")


def sharpness_charts(summary: dict) -> str:
    """Entropy and top-1 histograms (original vs hyperfitted) and the copied-span histogram of greedy decoding."""
    charts = []
    sharp = summary.get("sharpness", {})
    for key, title in (
        ("entropy_histogram", "next-token entropy, nats (share of held-out positions)"),
        ("top1_histogram", "top-1 probability (share of held-out positions)"),
    ):
        if key in sharp:
            charts.append(
                svg_bar_chart(
                    {"original": sharp[key]["before"], "hyperfitted": sharp[key]["after"]}, title=title
                )
            )
    decoding = summary.get("decoding", {})
    spans = {
        name: decoding[name]["greedy"]["copy_histogram"]
        for name in ("original", "hyperfitted")
        if "copy_histogram" in decoding.get(name, {}).get("greedy", {})
    }
    if spans:
        bands = (
            ("0–4", 0, 4),
            ("5–7", 5, 7),
            ("8–10", 8, 10),
            ("11–15", 11, 15),
            ("16–31", 16, 31),
            ("≥32", 32, 10**9),
        )
        groups = {}
        for name, histogram in spans.items():
            total = sum(histogram.values()) or 1
            groups[name] = {
                label: sum(c for k, c in histogram.items() if lo <= int(k) <= hi) / total
                for label, lo, hi in bands
            }
        charts.append(
            svg_bar_chart(groups, title="longest span copied from the training data, greedy (paper Fig. 3)")
        )
    return "".join(charts)


def _samples(run_dir: Path, summary: dict, count: int = 3) -> list[dict]:
    """The first ``count`` prompts side by side: ``{"prompt", "reference", "columns": [(label, continuation)]}``.

    A fit run shows its first and last evaluation (before/after); an eval run shows each model's greedy
    continuations (or its first strategy when greedy was not run).
    """
    if summary.get("kind") == "eval":
        files = {}
        for model_name, strategies in summary.get("decoding", {}).items():
            strategy = "greedy" if "greedy" in strategies else next(iter(strategies), None)
            if strategy is not None:
                label = model_name if strategy == "greedy" else f"{model_name} ({strategy})"
                files[label] = run_dir / f"generations/decoding/{model_name}_{strategy}.jsonl"
    elif "before" in summary and "after" in summary:
        files = {
            side: run_dir / f"generations/epoch_{summary[side]['epoch']:03d}.jsonl"
            for side in ("before", "after")
        }
    else:
        return []
    columns = {label: read_jsonl(path)[:count] for label, path in files.items() if path.exists()}
    if not columns:
        return []
    first = next(iter(columns.values()))
    return [
        {
            "prompt": record["prompt"],
            "reference": record["reference"],
            "columns": [(label, rows[i]["continuation"]) for label, rows in columns.items() if i < len(rows)],
        }
        for i, record in enumerate(first)
    ]


def _columns_rows(summary: dict) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(column names, [(metric, values)]) of ``summary["columns"]``: one entry per decoding (image runs)."""
    columns = summary.get("columns") or {}
    names = list(columns)
    rows = []
    for key, label, pattern in ROWS:
        if any(key in columns[name] for name in names):
            # Not every column is greedy, so the label loses that word here.
            rows.append(
                (label.replace("greedy ", ""), [_fmt(columns[name].get(key), pattern) for name in names])
            )
    return names, rows


DECODING_COLUMNS = (
    "ttr",
    "word_ttr",
    "rep_2",
    "rep_3",
    "rep_4",
    "diversity",
    "distinct_2",
    "self_bleu",
    "loop_share",
    "copy_gt10_share",
    "copy_mean_longest",
    "blocker_fired",
    "temperature",
)


def decoding_rows(summary: dict) -> list[list[str]]:
    """One row per model × decoding strategy (paper Tables 1–2 style), numbers as strings."""
    rows = []
    for model_name, strategies in summary.get("decoding", {}).items():
        for strategy, m in strategies.items():
            cells = [model_name, strategy]
            for key in DECODING_COLUMNS:
                value = m.get(key)
                cells.append(
                    "–" if value is None else f"{value}" if isinstance(value, int) else _fmt(value, "{:.3f}")
                )
            rows.append(cells)
    return rows


def length_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """TTR and rep-4 of each model × decoding at each scored length (``hyperfit eval --lengths``), longest last."""
    by_length = dict(summary.get("decoding_by_length") or {})
    if not by_length:
        return [], []
    by_length[str(summary.get("max_new_tokens", "all"))] = summary.get("decoding", {})
    header = ["model", "decoding"] + [f"{key} @{length}" for length in by_length for key in ("TTR", "rep-4")]
    rows = []
    for model_name, strategies in summary.get("decoding", {}).items():
        for strategy in strategies:
            cells = [model_name, strategy]
            for table in by_length.values():
                metrics = table.get(model_name, {}).get(strategy, {})
                cells += [_fmt(metrics.get("ttr"), "{:.3f}"), _fmt(metrics.get("rep_4"), "{:.3f}")]
            rows.append(cells)
    return header, rows


def sharpness_rows(summary: dict) -> list[list[str]]:
    """Original vs hyperfitted sharpness and reference-token ranks on the held-out texts (paper Table 3)."""
    sharp = summary.get("sharpness")
    if not sharp:
        return []
    rows = []
    for key in (
        "entropy",
        "top1_prob",
        "top3_prob",
        "top5_prob",
        "hits_at_1",
        "hits_at_5",
        "mean_rank",
        "median_rank",
        "perplexity",
    ):
        if key in sharp["before"]:
            rows.append([key, _fmt(sharp["before"][key], "{:.3f}"), _fmt(sharp["after"][key], "{:.3f}")])
    for band, count in sharp["before"].get("rank_histogram", {}).items():
        total_b = sharp["before"]["n_positions"]
        after = sharp["after"]["rank_histogram"].get(band, 0)
        rows.append(
            [
                f"reference rank {band}",
                f"{count / total_b:.3f}",
                f"{after / sharp['after']['n_positions']:.3f}",
            ]
        )
    shift = sharp["rank_shift"]
    rows.append(
        [
            "rank improved / unchanged / worsened",
            "",
            f"{shift['share_improved']:.3f} / {shift['share_unchanged']:.3f} / {shift['share_worsened']:.3f}",
        ]
    )
    rows.append(["top-1 agreement original vs hyperfitted", "", f"{sharp['top1_agreement']:.3f}"])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(run_dir: str | Path, *, summary: dict | None = None) -> Path:
    """Write ``report.md`` and ``report.html`` into ``run_dir`` and return the HTML path."""
    run_dir = Path(run_dir)
    summary = summary or read_json(run_dir / "summary.json")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    rows = before_after_rows(summary)
    # Text runs show continuations; image runs show their grid PNG instead (summary["grid"], relative path).
    samples = (
        _samples(run_dir, summary, summary.get("samples_shown", 3))
        if summary.get("modality", "text") == "text"
        else []
    )
    grid = summary.get("grid")
    column_names, column_rows = _columns_rows(summary)
    curves = _curves(metrics)
    evals = [r for r in metrics if r.get("kind") == "eval"]
    epoch_loss = {r["epoch"]: r["train_loss"] for r in metrics if r.get("kind") == "epoch"}
    title = f"hyperfit report — {run_dir}"
    facts = (
        f"{summary.get('modality', '?')} evaluation · models {summary.get('models')} · prompts "
        f"{summary.get('prompts')} ({summary.get('n_prompts')}, {summary.get('prompts_skipped', 0)} skipped) · "
        f"wall {summary.get('wall_seconds', 0):.0f} s"
        if summary.get("kind") == "eval"
        else f"{summary.get('modality', '?')} · model {summary.get('model')} · data {summary.get('data')} · "
        f"{summary.get('n_train')} training blocks × {summary.get('block_len')} tokens · "
        f"{summary.get('n_eval')} held-out prompts · {summary.get('train', {}).get('epochs_done')} epochs, "
        f"final train loss {_fmt(summary.get('train', {}).get('final_train_loss'), '{:.3f}')} · "
        f"wall {summary.get('wall_seconds', 0):.0f} s"
    )

    md = [f"# {title}", "", facts, "", "| metric | before | after | change |", "|---|---|---|---|"]
    md += [f"| {m} | {b} | {a} | {c} |" for m, b, a, c in rows]
    if column_rows:
        md += [
            "",
            "## Every decoding of the held-out images",
            "",
            "| metric | " + " | ".join(column_names) + " |",
        ]
        md += ["|---" * (len(column_names) + 1) + "|"]
        md += [f"| {m} | " + " | ".join(values) + " |" for m, values in column_rows]
    if grid:
        md += ["", f"![{summary.get('grid_caption', 'completions')}]({grid})"]
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
    dec_header = ["model", "decoding", *DECODING_COLUMNS]
    dec_rows = decoding_rows(summary)
    sharp_header = ["held-out (teacher-forced)", "original", "hyperfitted"]
    sharp_rows = sharpness_rows(summary)
    if dec_rows:
        md += ["", "## Decoding strategies (same prompts)", "", *_md_table(dec_header, dec_rows)]
    length_header, length_rows = length_table(summary)
    if length_rows:
        md += [
            "",
            "## By generated length (first L tokens of each continuation)",
            "",
            *_md_table(length_header, length_rows),
        ]
    if sharp_rows:
        md += ["", "## Sharpness and reference-token ranks", "", *_md_table(sharp_header, sharp_rows)]
    md += ["", "## Greedy continuations of held-out prompts", ""] if samples else []
    for i, s in enumerate(samples, 1):
        md += [
            f"### Prompt {i}",
            "",
            f"> {s['prompt']}",
            "",
            *[line for label, text in s["columns"] for line in (f"**{label}:** {text}", "")],
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
    columns_html = ""
    if column_rows:
        head = "".join(f"<th>{esc(name)}</th>" for name in column_names)
        body = "".join(
            f"<tr><td>{esc(m)}</td>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>"
            for m, values in column_rows
        )
        columns_html = f"<h2>Every decoding of the held-out images</h2><table><tr><th>metric</th>{head}</tr>{body}</table>"
    grid_html = (
        f'<h2>Completions</h2><p>{esc(summary.get("grid_caption", ""))}</p><img src="{esc(grid)}" alt="grid">'
        if grid
        else ""
    )
    sample_html = "".join(
        f"<h3>Prompt {i}</h3><p class=prompt>{esc(s['prompt'])}</p><div class=cols>"
        + "".join(
            f"<div><h4>{esc(label)}</h4><p>{highlight_repeats(text)}</p></div>"
            for label, text in s["columns"]
        )
        + f"<div><h4>human reference</h4><p>{esc(s['reference'])}</p></div></div>"
        for i, s in enumerate(samples, 1)
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}.cols{{display:grid;grid-auto-flow:column;grid-auto-columns:1fr;gap:1em}}
.prompt{{background:#f3f3f3;padding:.5em}}</style></head><body>
<h1>{esc(title)}</h1><p>{esc(facts)}</p>
<table><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>{table}</table>
{columns_html}{grid_html}
<h2>Training curves (paper Fig. 2)</h2><div>{plots}</div>
<h2>Per evaluation</h2><table><tr><th>epoch</th><th>train loss</th><th>held-out loss</th><th>TTR</th>
<th>entropy</th><th>top-1</th></tr>{per_eval}</table>
{"<h2>Decoding strategies (same prompts)</h2>" + _html_table(dec_header, dec_rows) if dec_rows else ""}
{"<h2>By generated length (first L tokens of each continuation)</h2>" + _html_table(length_header, length_rows) if length_rows else ""}
{"<h2>Sharpness and reference-token ranks</h2>" + _html_table(sharp_header, sharp_rows) if sharp_rows else ""}
{rank_chart(summary)}{sharpness_charts(summary)}
{"<h2>Greedy continuations of held-out prompts</h2><p>Words in a repeated 4-word sequence are marked.</p>" if samples else ""}{sample_html}</body></html>
"""
    out = run_dir / "report.html"
    write_text_atomic(out, page)
    return out


def cross_modal_rows(summaries: dict[str, dict]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(column names, [(metric, values)]) comparing runs side by side: "<name> before" and "<name> after" per run,
    one row per sharpness / repetition metric that at least one run holds ("–" where a run has none)."""
    names = [f"{name} {side}" for name in summaries for side in ("before", "after")]
    rows = []
    for key, label, pattern in CROSS_MODAL_ROWS:
        values = [
            _fmt(s.get(side, {}).get(key), pattern)
            for s in summaries.values()
            for side in ("before", "after")
        ]
        if any(v != "–" for v in values):
            rows.append((label, values))
    return names, rows


def write_comparison(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write ``comparison.md`` / ``comparison.html`` into ``out_dir``: finished runs (e.g. the text and the image
    demo) side by side in one table of sharpness and repetition, before and after hyperfitting, with each image
    run's grid. Runs are named by their modality (or directory name when two share one). Returns the HTML path."""
    out_dir = Path(out_dir)
    summaries: dict[str, dict] = {}
    grids: list[tuple[str, Path]] = []
    for run_dir in map(Path, run_dirs):
        summary = read_json(run_dir / "summary.json")
        name = summary.get("modality", run_dir.name)
        name = name if name not in summaries else f"{name} ({run_dir.name})"
        summaries[name] = summary
        if summary.get("grid"):
            grids.append((name, run_dir / summary["grid"]))
    names, rows = cross_modal_rows(summaries)
    md = [
        "# hyperfit: original vs hyperfitted, across modalities",
        "",
        "| metric | " + " | ".join(names) + " |",
    ]
    md += ["|---" * (len(names) + 1) + "|"] + [f"| {m} | " + " | ".join(v) + " |" for m, v in rows]
    md += [""] + [f"![{name}]({os.path.relpath(path, out_dir)})" for name, path in grids]
    write_text_atomic(out_dir / "comparison.md", "\n".join(md) + "\n")
    esc = html.escape
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = "".join(f"<tr><td>{esc(m)}</td>" + "".join(f"<td>{x}</td>" for x in v) + "</tr>" for m, v in rows)
    images = "".join(
        f'<h2>{esc(name)}</h2><img src="{esc(os.path.relpath(path, out_dir))}" alt="grid">'
        for name, path in grids
    )
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>hyperfit comparison</title><style>'
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h1>Original vs hyperfitted, across modalities</h1><table><tr><th>metric</th>{head}</tr>"
        f"{body}</table>{images}</body></html>\n"
    )
    out = out_dir / "comparison.html"
    write_text_atomic(out, page)
    return out
