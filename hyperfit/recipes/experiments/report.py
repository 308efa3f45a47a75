"""An experiment's report, from its directory alone: ``summary.json`` (rows, facts, notes), ``experiment.json``
(the recorded configuration) and, for some charts, the variant runs' ``metrics.jsonl`` / ``summary.json``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hyperfit.common.report import Report, Section, Text, write_report_files
from hyperfit.common.runs import read_json

SectionsOf = Callable[[dict, Path, dict], list[Section]]  # (summary, experiment directory, recorded config)


def experiment_report(out: Path, sections_of: SectionsOf, *, summary: dict, recorded: dict) -> Report:
    """The question, the experiment's own sections, the notes and links to every variant run."""
    facts = (
        f"model {summary['model']} · data {summary['data']} · unless the experiment varies them: "
        f"{recorded['n_train']} training blocks × {recorded['block_len']} tokens, batch {recorded['batch_size']}, "
        f"lr {recorded['lr']:g}, {recorded['epochs']} epochs, seed {recorded['seed']}, {recorded['precision']} · "
        f"{recorded['n_eval']} held-out prompts, {recorded['prompt_tokens']}-token context, "
        f"{recorded['max_new_tokens']} greedy tokens, TTR over the last {recorded['ttr_window']} · "
        f"wall {summary['wall_seconds']:.0f} s"
    )
    links = "\n".join(f"- [runs/{v}](runs/{v}/report.html)" for v in summary["variants"])
    sections = [
        Section("Question", [Text(summary["question"])]),
        *sections_of(summary, out, recorded),
        Section("Notes", [Text("\n".join(f"- {note}" for note in summary["notes"]))]),
        Section("Variant runs", [Text(links)]),
    ]
    return Report(f"hyperfit experiment {summary['experiment']} — {out}", sections, subtitle=facts)


def write_experiment_report(
    out: str | Path, sections_of: SectionsOf, *, summary: dict | None = None, recorded: dict | None = None
) -> Path:
    """Write ``report.md`` / ``report.html`` (charts also as ``plots/*.svg``); return the HTML path."""
    out = Path(out)
    summary = summary or read_json(out / "summary.json")
    recorded = recorded or read_json(out / "experiment.json")
    return write_report_files(experiment_report(out, sections_of, summary=summary, recorded=recorded), out)
