"""lr-epochs, asked for in the paper's reviews: sensitivity to the learning rate and the number of epochs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from hyperfit.common.report import Plot, Section, Series
from hyperfit.common.runs import read_jsonl
from hyperfit.recipes.experiments.shared import (
    METRIC_COLUMNS,
    Context,
    Outcome,
    _floats,
    _ints,
    _metrics,
    metric_table,
)

COLUMNS = [
    ("lr", "lr", "{:g}"),
    ("epoch", "epoch", "{}"),
    ("train_loss", "train loss", "{:.3f}"),
    ("loss", "held-out loss", "{:.3f}"),
    *METRIC_COLUMNS,
]


def lr_epochs(ctx: Context) -> Outcome:
    """One run per learning rate to the largest epoch count, evaluated every gcd(epoch grid) epochs.

    The epochs axis is read off that run's evaluations: with a constant learning rate (any warm-up counts steps)
    and a data order that depends only on (seed, epoch), a run stopped after k epochs is exactly this run at
    epoch k, so separate runs per epoch count would repeat the same computation.
    """
    lrs = _floats(ctx.exp.lrs, "lrs")
    grid = sorted(set(_ints(ctx.exp.epoch_grid, "epoch_grid")))
    every, last = math.gcd(*grid), grid[-1]
    rows = []
    for lr in lrs:
        variant = f"lr{lr:g}"
        ctx.fit(variant, train=replace(ctx.train, lr=lr, epochs=last, eval_every_epochs=every))
        metrics = read_jsonl(ctx.run_dir(variant) / "metrics.jsonl")
        train_loss = {r["epoch"]: r["train_loss"] for r in metrics if r.get("kind") == "epoch"}
        evals = {r["epoch"]: r for r in metrics if r.get("kind") == "eval"}
        for epoch in [0, *grid]:
            if epoch in evals:
                rows.append(
                    {
                        "variant": variant,
                        "lr": lr,
                        "epoch": epoch,
                        "train_loss": train_loss.get(epoch),
                        **_metrics(evals[epoch]),
                    }
                )
    notes = [
        f"One run per learning rate for {last} epochs, evaluated every {every}; the row for k epochs is that run's "
        "evaluation after epoch k, which equals a separate k-epoch run exactly (constant learning rate, data order "
        "fixed by seed and epoch)."
    ]
    return Outcome(rows, notes=notes)


def lr_epochs_report(summary: dict, out: Path, recorded: dict) -> list[Section]:
    """The grid as a table, and greedy TTR and training loss per epoch for each learning rate."""
    ttr, loss = [], []
    for variant, lr in dict.fromkeys((r["variant"], r["lr"]) for r in summary["rows"]):
        metrics = read_jsonl(out / "runs" / variant / "metrics.jsonl")
        evals = sorted((r["epoch"], r["ttr"]) for r in metrics if r.get("kind") == "eval")
        epochs = sorted((r["epoch"], r["train_loss"]) for r in metrics if r.get("kind") == "epoch")
        ttr.append(Series(f"lr {lr:g}", [e for e, _ in evals], [v for _, v in evals]))
        loss.append(Series(f"lr {lr:g}", [e for e, _ in epochs], [v for _, v in epochs]))
    return [
        Section(
            "Learning rate × epochs",
            [
                metric_table(summary["rows"], COLUMNS),
                Plot("greedy TTR per learning rate", ttr, x_label="epoch", y_label="TTR"),
                Plot("training loss per learning rate", loss, x_label="epoch", y_label="nats / token"),
            ],
        )
    ]
