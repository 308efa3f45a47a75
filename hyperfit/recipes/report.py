"""``hyperfit report RUN_DIR...``: rewrite ``report.md`` / ``report.html`` of finished run directories.

Each kind of directory has its report builder: a fit-text or eval run (``hyperfit.text.report``), a fit-image run
or pretrained prior (``hyperfit.image.report``), an experiment (``hyperfit.recipes.experiments``), a run repeated
over ``--seeds`` (``hyperfit.common.seeds``). Every
builder reads only the directory, so a report can be rewritten at any time without the training state.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hyperfit.common.report import Report, write_report_files
from hyperfit.common.runs import FINISHED_MARKER, HyperfitError, read_json
from hyperfit.common.seeds import SEEDS_KIND, seeds_report
from hyperfit.image import report as image_report
from hyperfit.text import report as text_report

USAGE = "usage: hyperfit report RUN_DIR [RUN_DIR ...]  (fit, eval, image or experiment directories)"


def run_report(run_dir: str | Path, summary: dict | None = None) -> Report:
    """The report of one run directory, chosen by what its summary says it is."""
    summary = summary or read_json(Path(run_dir) / FINISHED_MARKER)
    if summary.get("kind") == SEEDS_KIND:
        return seeds_report(run_dir, summary)
    if summary.get("modality") == "image":
        return image_report.fit_report(run_dir, summary)
    if summary.get("kind") == "eval":
        return text_report.eval_report(run_dir, summary)
    return text_report.fit_report(run_dir, summary)


def write_run_report(run_dir: str | Path, summary: dict | None = None) -> Path:
    """Write the report of one finished run or experiment directory; return its HTML path."""
    run_dir = Path(run_dir)
    if (run_dir / "experiment.json").exists():
        # Imported only for experiment directories: the experiment recipes load torch and the text models.
        from hyperfit.recipes.experiments import rewrite_report

        return rewrite_report(run_dir)
    return write_report_files(run_report(run_dir, summary), run_dir)


def refuse_unfinished(run_dirs: list[str]) -> None:
    """One sentence for the first directory that is not a finished run (no summary.json)."""
    for arg in run_dirs:
        if not (Path(arg) / FINISHED_MARKER).exists():
            raise HyperfitError(
                f"{arg} is not a finished run directory (no summary.json); pass a run's --out."
            )


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    try:
        refuse_unfinished(argv)
        for arg in argv:
            print(write_run_report(arg))
    except HyperfitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
