"""domain, paper §6.2 / Table 4: hyperfit on each training domain, evaluate on every domain's held-out prompts.
The paper (human preference at 256 tokens): news > Wikipedia > fiction as training data, and no in-domain
advantage."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from hyperfit.common.config import EvalConfig
from hyperfit.common.report import Cell, Plot, Section, Series, Table
from hyperfit.common.report.sections import recorded_interval
from hyperfit.common.runs import HyperfitError
from hyperfit.recipes.experiments.shared import (
    METRIC_COLUMNS,
    Context,
    Outcome,
    _metrics,
    evaluate_blocks,
    metric_table,
)
from hyperfit.text.data import BUNDLED

COLUMNS = [
    ("train_domain", "trained on", "{}"),
    ("eval_domain", "evaluated on", "{}"),
    ("final_train_loss", "final train loss", "{:.3f}"),
    *METRIC_COLUMNS,
]


def domain_sources(text: str) -> dict[str, str]:
    """{label: --data value}: bundled names as they are, files by stem, hub datasets by their last name part."""
    sources = {}
    for source in [s.strip() for s in text.split(",") if s.strip()]:
        if source in BUNDLED:
            label = source
        elif source.startswith("hf:"):
            label = source[3:].split(":")[0].split("/")[-1]
        else:
            label = Path(source).stem
        label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        if label in sources:
            raise HyperfitError(
                f"two domains are both named {label!r}; rename one of the files in --domains."
            )
        sources[label] = source
    return sources


def domain(ctx: Context) -> Outcome:
    """Hyperfit on each domain in ``--domains``; evaluate every model on every domain's held-out blocks."""
    sources = domain_sources(ctx.exp.domains)
    summaries = {
        label: ctx.fit(f"train_{label}", data=replace(ctx.data, data=source), save_model=True)
        for label, source in sources.items()
    }
    held = {label: ctx.held_out(f"train_{label}") for label in sources}
    # The original model on each domain is that domain's run before training.
    cells = {"original": {label: _metrics(summaries[label]["before"]) for label in sources}}
    for label in sources:
        compute = partial(_evaluate_each, blocks=held, eval_cfg=ctx.eval)
        cells[label] = ctx.variant_derived(f"train_{label}", "cross_domain.json", compute)
    rows = [
        {
            "train_domain": train,
            "eval_domain": evaluated,
            "final_train_loss": summaries[train]["train"]["final_train_loss"] if train in summaries else None,
            **_metrics(cells[train][evaluated]),
        }
        for train in cells
        for evaluated in sources
    ]
    labels = list(sources)
    gaps = [
        cells[e][e]["ttr"] - sum(cells[t][e]["ttr"] for t in labels if t != e) / (len(labels) - 1)
        for e in labels
    ]
    facts = {
        "ttr_matrix": {t: {e: cells[t][e]["ttr"] for e in labels} for t in cells},
        "mean_in_domain_ttr_advantage": sum(gaps) / len(gaps),
        "sources": sources,
    }
    notes = [
        f"Mean in-domain TTR advantage (diagonal minus the other training domains, per evaluation domain): "
        f"{facts['mean_in_domain_ttr_advantage']:+.3f} (paper: no in-domain advantage).",
        "Each domain's held-out blocks are the documents fit-text held out of that domain's run.",
    ]
    return Outcome(rows, facts, notes)


def domain_report(summary: dict, out: Path, recorded: dict) -> list[Section]:
    """TTR and perplexity as training × evaluation domain matrices, every cell, and TTR by domain as a chart."""
    labels = list(summary["sources"])
    ttr = summary["ttr_matrix"]
    cells = {(r["train_domain"], r["eval_domain"]): r for r in summary["rows"]}

    def cell(train: str, evaluated: str, key: str, fmt: str) -> Cell:
        row = cells.get((train, evaluated), {})
        value = ttr[train][evaluated] if key == "ttr" else row.get(key)
        return Cell(value, ci=recorded_interval(row, key), fmt=fmt)

    plot = Plot(
        "greedy TTR by training domain",
        [Series(t, labels, [ttr[t][e] for e in labels]) for t in ttr],
        kind="bar",
        x_label="evaluation domain",
        y_label="TTR",
    )
    return [
        Section(
            "Greedy TTR: training domain (rows) × evaluation domain (columns)",
            [
                Table(
                    ["trained on", *labels],
                    [[t, *(cell(t, e, "ttr", "{:.3f}") for e in labels)] for t in ttr],
                    caption="95 % intervals over the evaluation domain's held-out prompts",
                ),
                plot,
            ],
        ),
        Section(
            "Held-out perplexity: training domain × evaluation domain",
            [
                Table(
                    ["trained on", *labels],
                    [[t, *(cell(t, e, "perplexity", "{:.1f}") for e in labels)] for t in ttr],
                )
            ],
        ),
        Section("Every cell", [metric_table(summary["rows"], COLUMNS)]),
    ]


def _evaluate_each(model, *, blocks: dict[str, torch.Tensor], eval_cfg: EvalConfig, eos_id=None) -> dict:
    return {
        label: evaluate_blocks(model, ids, eval_cfg=eval_cfg, eos_id=eos_id) for label, ids in blocks.items()
    }
