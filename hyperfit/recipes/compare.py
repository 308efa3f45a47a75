"""``hyperfit compare RUN_DIR... --out DIR``: finished runs side by side, e.g. the text and the image demo.

One table of sharpness and repetition before and after hyperfitting (paper Tables 1-3 and §7.1 in one place), two
charts of it, and each image run's completion grid. Writes ``DIR/comparison.md`` and ``DIR/comparison.html``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hyperfit.common.report import Figure, Report, Section, write_report_files
from hyperfit.common.report.sections import CROSS_RUN_ROWS, cross_run_plots, cross_run_table
from hyperfit.common.runs import HyperfitError, read_json
from hyperfit.image.report import CROSS_RUN_IMAGE_ROWS
from hyperfit.recipes.report import refuse_unfinished

ROWS = (*CROSS_RUN_ROWS, *CROSS_RUN_IMAGE_ROWS)
SHARE_KEYS = ("ttr", "top1_prob", "rep_4", "loop_share", "stripe_score")


def comparison_report(run_dirs: list[str | Path], out_dir: str | Path) -> Report:
    """Runs are named by their modality (or ``modality (directory)`` when two share one)."""
    out_dir = Path(out_dir)
    summaries: dict[str, dict] = {}
    grids = []
    for run_dir in map(Path, run_dirs):
        summary = read_json(run_dir / "summary.json")
        name = summary.get("modality", run_dir.name)
        name = name if name not in summaries else f"{name} ({run_dir.name})"
        summaries[name] = summary
        if summary.get("grid"):
            grids.append(Figure(os.path.relpath(run_dir / summary["grid"], out_dir), caption=name))
    sections = [
        Section(
            "Sharpness and repetition, before and after",
            [cross_run_table(summaries, ROWS), *cross_run_plots(summaries, ROWS, share_keys=SHARE_KEYS)],
        )
    ]
    if grids:
        sections.append(Section("Completions", grids))
    return Report("hyperfit: original vs hyperfitted, across modalities", sections)


def write_comparison(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write ``comparison.md`` / ``comparison.html`` into ``out_dir``; return the HTML path."""
    return write_report_files(comparison_report(run_dirs, out_dir), out_dir, stem="comparison")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hyperfit compare",
        description="Finished runs side by side (e.g. the text and the image demo): one table of sharpness and "
        "repetition before and after hyperfitting, two charts, and each image run's grid.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="Finished run directories.")
    parser.add_argument("--out", required=True, help="Directory for comparison.md and comparison.html.")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse exits 0 for --help and 2 for bad arguments
        return int(exit.code or 0)
    try:
        refuse_unfinished(args.runs)
        print(write_comparison(args.runs, args.out))
    except HyperfitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
