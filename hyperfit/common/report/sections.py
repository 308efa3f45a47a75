"""Report blocks every run shares, built from a run directory's ``summary.json`` and ``metrics.jsonl`` alone.

Everything here is about ids and logits: the before/after table (for the metric rows a caller names), the
per-evaluation table and training curves (paper Fig. 2), the models × decoding strategies table (Tables 1-2), the
sharpness and reference-rank comparison (Table 3, Fig. 4) and the copied-span histogram (Fig. 3). Callers add
their own rows, columns, samples and figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hyperfit.common.report.data import Cell, Plot, Section, Series, Table, Text

MetricRow = tuple[str, str, str]  # (summary key, label, format)

# Headline metrics of any run's evaluation, in report order (each shown only when the summary holds it).
HEADLINE_ROWS: tuple[MetricRow, ...] = (
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
)

# Sharpness and repetition side by side across runs (``hyperfit compare``), as in paper Tables 1-3.
CROSS_RUN_ROWS: tuple[MetricRow, ...] = (
    ("ttr", "greedy TTR (last 96 generated ids)", "{:.3f}"),
    ("entropy", "held-out next-token entropy (nats)", "{:.3f}"),
    ("top1_prob", "held-out mean top-1 probability", "{:.3f}"),
    ("perplexity", "held-out perplexity", "{:.1f}"),
    ("gen_entropy", "entropy at generated positions (nats)", "{:.3f}"),
    ("rep_4", "rep-4 of the generations", "{:.3f}"),
    ("loop_share", "generations ending in a repeated phrase", "{:.3f}"),
)

# The decoding figures whose paired differences between models and strategies are shown (``compare``).
DIFFERENCE_ROWS: tuple[MetricRow, ...] = (
    ("ttr", "TTR", "{:.3f}"),
    ("rep_4", "rep-4", "{:.3f}"),
    ("loop_share", "loop share", "{:.3f}"),
)

# Generation metrics of ``compare.generation_metrics`` per model × strategy, in table order.
DECODING_COLUMNS: tuple[str, ...] = (
    "ttr",
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
    "blocker_changed",
    "temperature",
)

SHARPNESS_KEYS = (
    "entropy",
    "top1_prob",
    "top3_prob",
    "top5_prob",
    "hits_at_1",
    "hits_at_5",
    "mean_rank",
    "median_rank",
    "perplexity",
)

# Longest copied span (tokens) in bands, for the copy histogram.
COPY_BANDS = (
    ("0–4", 0, 4),
    ("5–7", 5, 7),
    ("8–10", 8, 10),
    ("11–15", 11, 15),
    ("16–31", 16, 31),
    ("≥32", 32, 10**9),
)


def change(before, after) -> str:
    """Relative change in whole percent ("+55 %"), or "–" when it is undefined."""
    if not isinstance(before, int | float) or not isinstance(after, int | float) or not before:
        return "–"
    return f"{(after - before) / before * 100:+.0f} %"


def recorded_interval(record: dict, key: str) -> tuple[float, float] | None:
    """``record["<key>_ci"]`` as a pair when it holds two numbers (older runs have none)."""
    ci = record.get(f"{key}_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci):
        return (ci[0], ci[1])
    return None


def signed(fmt: str) -> str:
    """``fmt`` with an explicit sign, for differences ("{:.3f}" -> "{:+.3f}")."""
    return fmt.replace("{:", "{:+", 1) if "{:+" not in fmt else fmt


INCLUDES_ZERO = "interval includes 0"


def difference_cell(difference: dict | None, fmt: str = "{:.3f}") -> Cell | None:
    """A paired difference (``stats.paired_difference``'s dict) as a signed value with its 95 % interval, noted
    when the interval includes zero; None when there is none."""
    if not difference:
        return None
    note = INCLUDES_ZERO if difference.get("ci_includes_zero") else ""
    return Cell(difference["diff"], ci=tuple(difference["ci"]), fmt=signed(fmt), note=note)


def p_cell(difference: dict | None) -> Cell | None:
    return None if not difference else Cell(difference["p"], fmt="{:.2g}")


def before_after_table(summary: dict, rows: Sequence[MetricRow], *, caption: str = "") -> Table | None:
    """metric | before | after | change, for each row whose key both ``summary["before"]`` and ``["after"]`` hold;
    each value with its 95 % interval when recorded, and, when ``summary["differences"]["after_minus_before"]``
    holds the metric, after − before paired over the same prompts with its interval and permutation p."""
    before, after = summary.get("before", {}), summary.get("after", {})
    changes = summary.get("differences", {}).get("after_minus_before") or {}
    cells = []
    for key, label, fmt in rows:
        if key not in before or key not in after:
            continue
        row = [
            label,
            Cell(before[key], ci=recorded_interval(before, key), fmt=fmt),
            Cell(after[key], ci=recorded_interval(after, key), fmt=fmt),
            change(before[key], after[key]),
        ]
        if changes:
            row += [difference_cell(changes.get(key), fmt), p_cell(changes.get(key))]
        cells.append(row)
    if not cells:
        return None
    columns = ["metric", "before", "after", "change"]
    if changes:
        columns += ["after − before [95 % CI]", "p"]
    return Table(columns, cells, caption=caption)


def undistinguished(differences: dict[str, dict], labels: dict[str, str], *, units: str) -> Text | None:
    """Plain words on which of ``differences`` (``{key: paired difference}``, ``labels`` naming the keys) cannot
    be told from zero on the units measured: those whose 95 % interval includes 0, and those whose interval
    excludes 0 while the permutation p is 0.05 or more (on a few units the percentile bootstrap is too narrow)."""
    shown = {key: d for key, d in differences.items() if key in labels and d}
    if not shown:
        return None
    n = next(iter(shown.values()))["n"]
    open_ = [labels[key] for key, d in shown.items() if d["ci_includes_zero"]]
    weak = [labels[key] for key, d in shown.items() if not d["ci_includes_zero"] and d["p"] >= 0.05]
    if not open_ and not weak:
        return Text(
            f"Every difference above has a 95 % interval that excludes zero and p < 0.05 on these {n} {units}."
        )
    words = []
    if open_:
        words.append(
            f"Not distinguishable from zero on these {n} {units} (the 95 % interval of the paired difference "
            f"includes 0): {', '.join(open_)}."
        )
    if weak:
        words.append(
            f"Interval excludes 0 but the permutation p is 0.05 or more, so not established on these {n} {units} "
            f"either (a bootstrap interval over few {units} is too narrow): {', '.join(weak)}."
        )
    return Text(" ".join(words))


def before_after_note(summary: dict, rows: Sequence[MetricRow], *, units: str = "prompts") -> Text | None:
    """The before/after differences that cannot be told from zero, in words."""
    changes = summary.get("differences", {}).get("after_minus_before") or {}
    return undistinguished(changes, {key: label for key, label, _ in rows}, units=units)


def strategy_differences_tables(
    summary: dict, *, figures: Sequence[MetricRow], units: str = "prompts"
) -> list[Table | Text]:
    """One table per stated decoding difference in ``summary["differences"]`` other than after − before (e.g.
    ``hyperfitted_greedy_minus_original``: the hyperfitted model's greedy decoding against each strategy of the
    original), a row per strategy with each figure's paired difference and p, and the sentence naming those
    that cannot be told from zero."""
    blocks: list[Table | Text] = []
    for name, by_strategy in (summary.get("differences") or {}).items():
        if name == "after_minus_before" or not by_strategy:
            continue
        shown = [
            (key, label, fmt) for key, label, fmt in figures if any(key in d for d in by_strategy.values())
        ]
        if not shown:
            continue
        model, _, baseline = name.partition("_minus_")
        if model.endswith("_greedy"):
            caption = f"{model.removesuffix('_greedy')} decoding greedily minus {baseline} with each strategy"
        else:
            caption = f"{model} minus {baseline}, both with the same strategy"
        rows = [
            [
                strategy,
                *(
                    cell
                    for key, _, fmt in shown
                    for cell in (difference_cell(d.get(key), fmt), p_cell(d.get(key)))
                ),
            ]
            for strategy, d in by_strategy.items()
        ]
        columns = ["strategy", *(c for _, label, _ in shown for c in (f"{label} [95 % CI]", "p"))]
        blocks.append(Table(columns, rows, caption=f"{caption}, paired over the same {units}"))
        flat = {
            f"{strategy} {label}": d[key]
            for strategy, d in by_strategy.items()
            for key, label, _ in shown
            if d.get(key)
        }
        note = undistinguished(flat, {k: k for k in flat}, units=units)
        if note is not None:
            blocks.append(note)
    return blocks


def per_evaluation_table(metrics: list[dict]) -> Table | None:
    """One row per evaluation: epoch, mean train loss of that epoch, held-out loss, TTR, entropy, top-1."""
    evals = [r for r in metrics if r.get("kind") == "eval"]
    if not evals:
        return None
    epoch_loss = {r["epoch"]: r["train_loss"] for r in metrics if r.get("kind") == "epoch"}
    return Table(
        ["epoch", "train loss", "held-out loss", "TTR", "entropy", "top-1"],
        [
            [
                r["epoch"],
                epoch_loss.get(r["epoch"]),
                r.get("loss"),
                Cell(r.get("ttr"), ci=recorded_interval(r, "ttr")),
                r.get("entropy"),
                r.get("top1_prob"),
            ]
            for r in evals
        ],
    )


def training_curves(metrics: list[dict]) -> list[Plot]:
    """Paper Fig. 2 per epoch: training and held-out loss in one chart, greedy TTR, held-out entropy."""
    epochs = [r for r in metrics if r.get("kind") == "epoch"]
    evals = [r for r in metrics if r.get("kind") == "eval"]

    def series(name: str, records: list[dict], key: str) -> Series:
        return Series(name, [r["epoch"] for r in records], [r.get(key, float("nan")) for r in records])

    plots = [
        Plot(
            "training and held-out loss",
            [series("train loss", epochs, "train_loss"), series("held-out loss", evals, "loss")],
            x_label="epoch",
            y_label="nats / token",
        ),
        Plot("greedy TTR", [series("TTR", evals, "ttr")], x_label="epoch", y_label="TTR"),
        Plot(
            "held-out next-token entropy",
            [series("entropy", evals, "entropy")],
            x_label="epoch",
            y_label="nats",
        ),
    ]
    return [p for p in plots if any(s.x for s in p.series)]


def decoding_table(summary: dict, *, columns: Sequence[str] = DECODING_COLUMNS) -> Table | None:
    """One row per model × decoding strategy (paper Tables 1-2): ``summary["decoding"][model][strategy]``; a value
    with a recorded ``<key>_ci`` shows its interval."""

    def cell(metrics: dict, key: str):
        value = metrics.get(key)
        interval = metrics.get(f"{key}_ci")
        return Cell(value, ci=tuple(interval)) if interval and isinstance(value, float) else value

    rows = [
        [model_name, strategy, *(cell(m, key) for key in columns)]
        for model_name, strategies in summary.get("decoding", {}).items()
        for strategy, m in strategies.items()
    ]
    return Table(["model", "decoding", *columns], rows) if rows else None


def length_table(summary: dict) -> Table | None:
    """TTR and rep-4 of each model × decoding at each scored length (``decoding_by_length``), longest last."""
    by_length = dict(summary.get("decoding_by_length") or {})
    if not by_length:
        return None
    by_length[str(summary.get("max_new_tokens", "all"))] = summary.get("decoding", {})
    header = ["model", "decoding"] + [f"{key} @{length}" for length in by_length for key in ("TTR", "rep-4")]
    rows = []
    for model_name, strategies in summary.get("decoding", {}).items():
        for strategy in strategies:
            cells: list = [model_name, strategy]
            for table in by_length.values():
                metrics = table.get(model_name, {}).get(strategy, {})
                cells += [metrics.get("ttr"), metrics.get("rep_4")]
            rows.append(cells)
    return Table(header, rows)


def _rank_shares(side: dict) -> dict[str, float]:
    return {band: count / side["n_positions"] for band, count in side.get("rank_histogram", {}).items()}


def sharpness_table(summary: dict) -> Table | None:
    """Original vs hyperfitted sharpness and reference-token ranks on the held-out blocks (paper Table 3)."""
    sharp = summary.get("sharpness")
    if not sharp:
        return None
    before, after = sharp["before"], sharp["after"]
    rows: list[list] = [[key, Cell(before[key]), Cell(after[key])] for key in SHARPNESS_KEYS if key in before]
    after_shares = _rank_shares(after)
    rows += [
        [f"reference rank {band}", share, after_shares.get(band, 0.0)]
        for band, share in _rank_shares(before).items()
    ]
    shift = sharp["rank_shift"]
    rows.append(
        [
            "rank improved / unchanged / worsened",
            "",
            f"{shift['share_improved']:.3f} / {shift['share_unchanged']:.3f} / {shift['share_worsened']:.3f}",
        ]
    )
    rows.append(["top-1 agreement original vs hyperfitted", "", sharp["top1_agreement"]])
    return Table(["held-out (teacher-forced)", "original", "hyperfitted"], rows)


def _bars(title: str, groups: dict[str, dict[str, float]], *, x_label: str) -> Plot:
    return Plot(
        title,
        [Series(name, list(shares), list(shares.values())) for name, shares in groups.items()],
        kind="bar",
        x_label=x_label,
        y_label="share of positions",
    )


def sharpness_plots(summary: dict) -> list[Plot]:
    """Reference-rank, entropy and top-1 distributions (original vs hyperfitted, shares of held-out positions)
    and the longest span each greedy continuation copies from the training data (paper Fig. 3)."""
    plots = []
    sharp = summary.get("sharpness", {})
    if "rank_histogram" in sharp.get("before", {}):
        groups = {"original": _rank_shares(sharp["before"]), "hyperfitted": _rank_shares(sharp["after"])}
        plots.append(_bars("rank of the reference token", groups, x_label="rank"))
    for key, title, x_label in (
        ("entropy_histogram", "next-token entropy", "nats"),
        ("top1_histogram", "top-1 probability", "probability"),
    ):
        if key in sharp:
            groups = {"original": sharp[key]["before"], "hyperfitted": sharp[key]["after"]}
            plots.append(_bars(title, groups, x_label=x_label))
    decoding = summary.get("decoding", {})
    spans = {
        name: decoding[name]["greedy"]["copy_histogram"]
        for name in ("original", "hyperfitted")
        if "copy_histogram" in decoding.get(name, {}).get("greedy", {})
    }
    if spans:
        groups = {}
        for name, histogram in spans.items():
            total = sum(histogram.values()) or 1
            groups[name] = {
                label: sum(c for k, c in histogram.items() if lo <= int(k) <= hi) / total
                for label, lo, hi in COPY_BANDS
            }
        plot = _bars("longest span copied from the training data, greedy", groups, x_label="tokens")
        plot.y_label = "share of continuations"
        plots.append(plot)
    return plots


def spread_cell(spread: dict | None, fmt: str = "{:.3f}", *, difference: bool = False) -> Cell | None:
    """A figure's spread over seeds (``stats.mean_sd``) as one cell, "mean ± sd" (the mean signed for a
    ``difference``); None when there is none."""
    if not spread:
        return None
    sd = spread["sd"]
    sd_text = fmt.format(sd) if isinstance(sd, int | float) and math.isfinite(sd) else "–"
    mean_fmt = signed(fmt) if difference else fmt
    return Cell(f"{mean_fmt.format(spread['mean'])} ± {sd_text}", fmt=fmt)


def cross_run_table(summaries: dict[str, dict], rows: Sequence[MetricRow]) -> Table:
    """One column per run and side ("<name> before", "<name> after"), each value with its 95 % interval when
    recorded, and "<name> after − before" (paired over the run's held-out units, interval and p) for runs that
    record it; one row per metric some run holds.

    A run repeated over seeds (a summary with ``mean_sd``: ``{"before" | "after" | "after_minus_before":
    {figure: stats.mean_sd}}``) shows each figure as its mean ± sd over the seeds instead."""

    def has_change(summary: dict) -> bool:
        if "mean_sd" in summary:
            return bool(summary["mean_sd"].get("after_minus_before"))
        return bool(summary.get("differences", {}).get("after_minus_before"))

    sides = [(name, side) for name in summaries for side in ("before", "after", "after − before")]
    sides = [(name, side) for name, side in sides if side != "after − before" or has_change(summaries[name])]
    cells = []
    for key, label, fmt in rows:
        row, found = [label], False
        for name, side in sides:
            summary = summaries[name]
            if "mean_sd" in summary:
                group = "after_minus_before" if side == "after − before" else side
                spread = summary["mean_sd"].get(group, {}).get(key)
                found = found or (spread is not None and side != "after − before")
                row.append(spread_cell(spread, fmt, difference=group == "after_minus_before"))
                continue
            if side == "after − before":
                d = summary["differences"]["after_minus_before"].get(key)
                cell = difference_cell(d, fmt)
                if cell is not None:
                    cell.note = "; ".join(x for x in (f"p {d['p']:.2g}", cell.note) if x)
                row.append(cell)
                continue
            value = summary.get(side, {}).get(key)
            found = found or value is not None
            row.append(Cell(value, ci=recorded_interval(summary.get(side, {}), key), fmt=fmt))
        if found:
            cells.append(row)
    return Table(["metric", *(f"{name} {side}" for name, side in sides)], cells)


def per_seed_table(
    name: str, seed_summaries: dict[int, dict], rows: Sequence[MetricRow], mean_sd: dict
) -> Table | None:
    """One run repeated over seeds, seed by seed: a row per metric and side (before, after, after − before),
    each seed's value with its own 95 % interval (or paired difference) as that seed's run recorded it, and the
    mean ± sd over the seeds; None when no seed holds any of ``rows``."""
    cells = []
    for key, label, fmt in rows:
        for side, group in (
            ("before", "before"),
            ("after", "after"),
            ("after − before", "after_minus_before"),
        ):
            values = []
            for summary in seed_summaries.values():
                if group == "after_minus_before":
                    d = summary.get("differences", {}).get("after_minus_before", {}).get(key)
                    values.append(difference_cell(d, fmt))
                else:
                    record = summary.get(side, {})
                    value = record.get(key)
                    values.append(
                        None if value is None else Cell(value, ci=recorded_interval(record, key), fmt=fmt)
                    )
            if any(v is not None for v in values):
                spread = mean_sd.get(group, {}).get(key)
                cells.append(
                    [
                        label,
                        side,
                        *values,
                        spread_cell(spread, fmt, difference=side == "after − before"),
                    ]
                )
    if not cells:
        return None
    columns = ["metric", "", *(f"seed {s}" for s in seed_summaries), "mean ± sd"]
    return Table(
        columns, cells, caption=f"{name}: each seed's run, with its 95 % intervals over held-out units"
    )


def cross_run_plots(
    summaries: dict[str, dict], rows: Sequence[MetricRow], *, share_keys: Sequence[str]
) -> list[Plot]:
    """The cross-run table as charts: the relative change of every metric per run, and the metrics that are
    shares (``share_keys``: TTR, top-1 probability, rep-4, ...) before and after, per run."""
    changes, shares = [], []
    for name, summary in summaries.items():
        before, after = summary.get("before", {}), summary.get("after", {})
        labels, values = [], []
        for key, _, _ in rows:
            b, a = before.get(key), after.get(key)
            if isinstance(b, int | float) and isinstance(a, int | float) and b:
                labels.append(key)
                values.append((a - b) / b * 100)
        if labels:
            changes.append(Series(name, labels, values))
        for side in ("before", "after"):
            unit = [key for key in share_keys if isinstance(summary.get(side, {}).get(key), int | float)]
            if unit:
                shares.append(Series(f"{name} {side}", unit, [summary[side][key] for key in unit]))
    plots = []
    if changes:
        plots.append(
            Plot(
                "change after hyperfitting",
                changes,
                kind="bar",
                x_label="metric",
                y_label="% of the original",
            )
        )
    if shares:
        plots.append(Plot("shares before and after", shares, kind="bar", x_label="metric", y_label="share"))
    return plots


def drop_empty(sections: list[Section]) -> list[Section]:
    """The sections with the blocks a run does not have (``None``) left out, and the sections left empty."""
    kept = []
    for section in sections:
        blocks = [b for b in section.blocks if b is not None]
        if blocks:
            kept.append(Section(section.title, blocks))
    return kept
