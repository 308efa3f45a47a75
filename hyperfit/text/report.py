"""The text side of the reports: a fit-text run's and an eval run's ``Report``, with the continuations side by side.

Built from the run directory alone (``summary.json``, ``metrics.jsonl``, ``generations/``); the shared blocks
(before/after, training curves, decoding strategies, sharpness) come from ``hyperfit.common.report.sections``,
the text-only parts (word-level TTR, decoded continuations beside the human reference) from here.
"""

from __future__ import annotations

from pathlib import Path

from hyperfit.common.hardware import describe_machine
from hyperfit.common.report import Cell, Plot, Report, Sample, Samples, Section, Series, Table, Text
from hyperfit.common.report.render import format_value
from hyperfit.common.report.sections import (
    DECODING_COLUMNS,
    DIFFERENCE_ROWS,
    HEADLINE_ROWS,
    before_after_note,
    before_after_table,
    decoding_table,
    drop_empty,
    length_table,
    per_evaluation_table,
    sharpness_plots,
    sharpness_table,
    strategy_differences_tables,
    training_curves,
)
from hyperfit.common.runs import read_json, read_jsonl


def _with_words(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The id-level columns with their word-level twins (over the decoded continuation's whitespace words)."""
    twins = {"ttr": "word_ttr", "rep_4": "word_rep_4", "diversity": "word_diversity"}
    return tuple(name for key in columns for name in (key, twins.get(key)) if name)


TEXT_DECODING_COLUMNS = _with_words(DECODING_COLUMNS)
MARKED = "Words inside a repeated 4-word sequence are marked."


def continuation_samples(run_dir: Path, summary: dict, *, count: int) -> Samples | None:
    """The first ``count`` held-out prompts with every column's continuation and the human reference.

    A fit run shows its first and last evaluation (original and hyperfitted greedy); an eval run shows each
    model's greedy continuations (or its first strategy when greedy was not run).
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
            f"{name} (epoch {summary[side]['epoch']})": run_dir
            / f"generations/epoch_{summary[side]['epoch']:03d}.jsonl"
            for name, side in (("original", "before"), ("hyperfitted", "after"))
        }
    else:
        return None
    columns = {label: read_jsonl(path)[:count] for label, path in files.items() if path.exists()}
    if not columns:
        return None
    first = next(iter(columns.values()))
    items = [
        Sample(
            f"Prompt {i}",
            {
                **{label: rows[i - 1]["continuation"] for label, rows in columns.items() if i <= len(rows)},
                "human reference": record["reference"],
            },
            prompt=record["prompt"],
        )
        for i, record in enumerate(first, 1)
    ]
    return Samples(items, caption=MARKED)


def text_decoding_table(summary: dict):
    """The decoding table with the text columns, and Dataset BLEU (with its interval) when it was measured."""
    measured = any("dataset_bleu" in m for s in summary.get("decoding", {}).values() for m in s.values())
    return decoding_table(summary, columns=(*TEXT_DECODING_COLUMNS, *(("dataset_bleu",) if measured else ())))


def retention_table(summary: dict) -> Table | None:
    """Held-out perplexity on every bundled domain before → after, 95 % intervals over blocks, the paired ratio."""
    retention = summary.get("retention") or {}
    if not retention:
        return None
    rows = [
        [
            domain + (" (trained on)" if r["trained_on"] else ""),
            Cell(r["perplexity_before"], ci=tuple(r["perplexity_before_ci"]), fmt="{:.1f}"),
            Cell(r["perplexity_after"], ci=tuple(r["perplexity_after_ci"]), fmt="{:.1f}"),
            Cell(r["ratio"], ci=tuple(r["ratio_ci"]), fmt="{:.2f}"),
            Cell(r["p"]),
        ]
        for domain, r in retention.items()
    ]
    return Table(["domain", "before [95 % CI]", "after [95 % CI]", "after / before [95 % CI]", "p"], rows)


def ttr_by_position_plot(summary: dict) -> Plot | None:
    """TTR of a sliding window against the generated position, per model × strategy (paper appendix Fig. 9)."""
    curves = summary.get("ttr_by_position") or {}
    series = [
        Series(f"{model_name} {strategy}", curve["position"], curve["mean"])
        for model_name, strategies in curves.items()
        for strategy, curve in strategies.items()
    ]
    if not series:
        return None
    return Plot("TTR of a sliding window by position", series, x_label="generated tokens", y_label="TTR")


def fit_report(run_dir: str | Path, summary: dict | None = None) -> Report:
    """The report of a finished (or finishing) fit-text run: before/after, curves, decodings, sharpness, samples."""
    run_dir = Path(run_dir)
    summary = summary or read_json(run_dir / "summary.json")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    train = summary.get("train", {})
    facts = (
        f"text · model {summary.get('model')} · data {summary.get('data')} · {summary.get('n_train')} training "
        f"blocks × {summary.get('block_len')} tokens · {summary.get('n_eval')} held-out prompts · "
        f"{train.get('epochs_done')} epochs, final train loss {format_value(train.get('final_train_loss'))} · "
        f"wall {summary.get('wall_seconds', 0):.0f} s"
    )
    if summary.get("machine"):
        facts += f" · {describe_machine(summary['machine'])}"
    before, after = summary.get("before", {}), summary.get("after", {})
    headline = before_after_table(
        summary,
        HEADLINE_ROWS,
        caption=f"before = epoch {before.get('epoch')} (the original model), after = epoch {after.get('epoch')}",
    )
    sections = [
        Section("Before and after hyperfitting", [headline, before_after_note(summary, HEADLINE_ROWS)]),
        Section("Training curves (paper Fig. 2)", [*training_curves(metrics), per_evaluation_table(metrics)]),
        Section("Decoding strategies (same prompts)", [text_decoding_table(summary)]),
        Section(
            "Differences between decodings (paired over prompts)",
            strategy_differences_tables(summary, figures=DIFFERENCE_ROWS),
        ),
        Section("Sharpness and reference-token ranks", [sharpness_table(summary), *sharpness_plots(summary)]),
        Section("Retention: held-out perplexity on every bundled domain", [retention_table(summary)]),
        Section(
            "Greedy continuations of held-out prompts",
            [continuation_samples(run_dir, summary, count=summary.get("samples_shown", 3))],
        ),
    ]
    return Report(f"hyperfit report — {run_dir}", drop_empty(sections), subtitle=facts)


def eval_report(run_dir: str | Path, summary: dict | None = None) -> Report:
    """The report of ``hyperfit eval``: models × strategies, by length, sharpness, every model's continuations."""
    run_dir = Path(run_dir)
    summary = summary or read_json(run_dir / "summary.json")
    facts = (
        f"text evaluation · models {summary.get('models')} · prompts {summary.get('prompts')} "
        f"({summary.get('n_prompts')}, {summary.get('prompts_skipped', 0)} skipped) · "
        f"wall {summary.get('wall_seconds', 0):.0f} s"
    )
    sharpness = [sharpness_table(summary)]
    # Three or more models: each against the first.
    for pair, sharp in summary.get("sharpness_pairs", {}).items():
        table = sharpness_table({"sharpness": sharp})
        table.caption = pair.replace("_vs_", " vs ")
        sharpness.append(table)
    if sharpness == [None]:
        sharpness = [
            Text("Not measured: prompts from a file have no held-out blocks to score teacher-forced.")
        ]
    sections = [
        Section("Decoding strategies (same prompts)", [text_decoding_table(summary)]),
        Section(
            "Differences between models (paired over prompts)",
            strategy_differences_tables(summary, figures=DIFFERENCE_ROWS),
        ),
        Section(
            "By generated length (first L tokens of each continuation)",
            [length_table(summary), ttr_by_position_plot(summary)],
        ),
        Section("Sharpness and reference-token ranks", [*sharpness, *sharpness_plots(summary)]),
        Section(
            "Continuations of the same prompts",
            [continuation_samples(run_dir, summary, count=summary.get("samples_shown", 3))],
        ),
    ]
    return Report(f"hyperfit eval — {run_dir}", drop_empty(sections), subtitle=facts)
