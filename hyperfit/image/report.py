"""The image side of the reports: a fit-image run's ``Report`` (stripes, nearest-training distance, PSNR, every
decoding of the held-out images, the completion grid) and the image rows of the cross-run comparison.

Built from the run directory alone; the shared blocks come from ``hyperfit.common.report.sections``.
"""

from __future__ import annotations

from pathlib import Path

from hyperfit.common.hardware import describe_machine
from hyperfit.common.report import Cell, Figure, Report, Section, Table, Text
from hyperfit.common.report.render import format_value
from hyperfit.common.report.sections import (
    HEADLINE_ROWS,
    MetricRow,
    before_after_note,
    before_after_table,
    drop_empty,
    per_evaluation_table,
    recorded_interval,
    strategy_differences_tables,
    training_curves,
)
from hyperfit.common.runs import read_json, read_jsonl

IMAGE_ROWS: tuple[MetricRow, ...] = (
    ("stripe_score", "completed rows equal to the row above", "{:.3f}"),
    ("longest_run", "longest single-token run in a completion", "{:.1f}"),
    ("nn_distance", "MSE to the nearest training image", "{:.4f}"),
    ("pixel_diversity", "RMS distance between completions", "{:.3f}"),
    ("mse", "MSE against the held-out truth", "{:.4f}"),
    ("psnr", "PSNR against the held-out truth (dB)", "{:.2f}"),
)
FID_ROWS: tuple[MetricRow, ...] = (
    ("fid", "FID against the held-out truth", "{:.2f}"),
    ("kid", "KID against the held-out truth", "{:.4f}"),
)
# The completion figures whose paired differences between decodings are shown.
IMAGE_DIFFERENCE_ROWS: tuple[MetricRow, ...] = (
    ("ttr", "token TTR", "{:.3f}"),
    ("stripe_score", "stripes", "{:.3f}"),
    ("rep_4", "rep-4", "{:.3f}"),
    ("nn_distance", "nearest-training MSE", "{:.4f}"),
)
# The image row of ``hyperfit compare``.
CROSS_RUN_IMAGE_ROWS: tuple[MetricRow, ...] = (
    ("stripe_score", "image rows equal to the row above", "{:.3f}"),
)


def decodings_table(summary: dict) -> Table | None:
    """One column per decoding of the held-out images (``summary["columns"]``), one row per metric any holds, each
    value with its 95 % interval over the images when recorded."""
    columns = summary.get("columns") or {}
    if not columns:
        return None
    names = list(columns)
    rows = [
        # Not every column is greedy, so the label loses that word here.
        [
            label.replace("greedy ", ""),
            *(
                Cell(columns[name].get(key), ci=recorded_interval(columns[name], key), fmt=fmt)
                for name in names
            ),
        ]
        for key, label, fmt in (*HEADLINE_ROWS, *IMAGE_ROWS, *FID_ROWS)
        if any(key in columns[name] for name in names)
    ]
    return Table(["metric", *names], rows)


def fid_note(summary: dict) -> Text | None:
    """Which network gave the FID/KID features, and whether the numbers compare with published FID."""
    fid = summary.get("fid")
    return Text(f"FID/KID features: {fid['extractor']}. {fid['note']}") if fid else None


def fit_report(run_dir: str | Path, summary: dict | None = None) -> Report:
    """The report of a finished fit-image run (or of a pretrain-image prior, which has no decodings or grid)."""
    run_dir = Path(run_dir)
    summary = summary or read_json(run_dir / "summary.json")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    train = summary.get("train", {})
    facts = (
        f"image · model {summary.get('model')} · tokenizer {summary.get('tokenizer')} · data "
        f"{summary.get('data')} · {summary.get('n_train')} training images × {summary.get('block_len')} tokens · "
        f"{summary.get('n_eval')} held-out images · {train.get('epochs_done')} epochs, final train loss "
        f"{format_value(train.get('final_train_loss'))} · wall {summary.get('wall_seconds', 0):.0f} s"
    )
    if summary.get("machine"):
        facts += f" · {describe_machine(summary['machine'])}"
    before, after = summary.get("before", {}), summary.get("after", {})
    headline = before_after_table(
        summary,
        (*HEADLINE_ROWS, *IMAGE_ROWS),
        caption=f"greedy completions; before = epoch {before.get('epoch')} (the original prior), after = epoch "
        f"{after.get('epoch')}",
    )
    grid = summary.get("grid")
    rows = (*HEADLINE_ROWS, *IMAGE_ROWS)
    sections = [
        Section(
            "Before and after hyperfitting", [headline, before_after_note(summary, rows, units="images")]
        ),
        Section(
            "Every decoding of the held-out images",
            [
                decodings_table(summary),
                fid_note(summary),
                *strategy_differences_tables(summary, figures=IMAGE_DIFFERENCE_ROWS, units="images"),
            ],
        ),
        Section("Completions", [Figure(grid, summary.get("grid_caption", "")) if grid else None]),
        Section("Training curves (paper Fig. 2)", [*training_curves(metrics), per_evaluation_table(metrics)]),
    ]
    return Report(f"hyperfit report — {run_dir}", drop_empty(sections), subtitle=facts)
