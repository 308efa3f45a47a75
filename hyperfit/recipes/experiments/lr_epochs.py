"""lr-epochs, a reviewers' request (PAPER.md §10): sensitivity to the learning rate and the number of epochs."""

from __future__ import annotations

import math
from dataclasses import replace

from hyperfit.common.runs import read_jsonl
from hyperfit.recipes.experiments.report import svg_plot
from hyperfit.recipes.experiments.shared import (
    METRIC_COLUMNS,
    Context,
    Outcome,
    _cells,
    _floats,
    _ints,
    _metrics,
)


def lr_epochs(ctx: Context) -> Outcome:
    """One run per learning rate to the largest epoch count, evaluated every gcd(epoch grid) epochs.

    The epochs axis is read off that run's evaluations: with a constant learning rate (any warm-up counts steps)
    and a data order that depends only on (seed, epoch), a run stopped after k epochs is exactly this run at
    epoch k, so separate runs per epoch count would repeat the same computation.
    """
    lrs = _floats(ctx.exp.lrs, "lrs")
    grid = sorted(set(_ints(ctx.exp.epoch_grid, "epoch_grid")))
    every, last = math.gcd(*grid), grid[-1]
    rows, ttr_series, loss_series = [], {}, {}
    for lr in lrs:
        variant = f"lr{lr:g}"
        ctx.fit(variant, train=replace(ctx.train, lr=lr, epochs=last, eval_every_epochs=every))
        metrics = read_jsonl(ctx.run_dir(variant) / "metrics.jsonl")
        train_loss = {r["epoch"]: r["train_loss"] for r in metrics if r.get("kind") == "epoch"}
        evals = {r["epoch"]: r for r in metrics if r.get("kind") == "eval"}
        ttr_series[f"lr {lr:g}"] = [(e, r["ttr"]) for e, r in sorted(evals.items())]
        loss_series[f"lr {lr:g}"] = sorted(train_loss.items())
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
    columns = [
        ("lr", "lr", "{:g}"),
        ("epoch", "epoch", "{}"),
        ("train_loss", "train loss", "{:.3f}"),
        ("loss", "held-out loss", "{:.3f}"),
        *METRIC_COLUMNS,
    ]
    plots = {
        "ttr_vs_epoch.svg": svg_plot(ttr_series, title="greedy TTR per learning rate", x_label="epoch"),
        "train_loss_vs_epoch.svg": svg_plot(
            loss_series, title="training loss per learning rate", x_label="epoch"
        ),
    }
    notes = [
        f"One run per learning rate for {last} epochs, evaluated every {every}; the row for k epochs is that run's "
        "evaluation after epoch k, which equals a separate k-epoch run exactly (constant learning rate, data order "
        "fixed by seed and epoch)."
    ]
    return Outcome(rows, [("Learning rate × epochs", *_cells(rows, columns))], plots, notes=notes)
