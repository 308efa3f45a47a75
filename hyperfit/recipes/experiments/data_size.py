"""data-size, paper §6.3 / Fig. 5 right: greedy TTR against the number of training blocks N with the number of
optimizer updates held fixed (fewer blocks = more epochs). The paper: TTR stays high down to 16 blocks and
collapses at 8 (its exact grid is not published; it includes 8 and 16, up to 2,000)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from hyperfit.common.report import Plot, Section, Series
from hyperfit.common.runs import HyperfitError
from hyperfit.recipes.experiments.shared import (
    METRIC_COLUMNS,
    Context,
    Outcome,
    _ints,
    _metrics,
    evaluate_blocks,
    metric_table,
)

COLUMNS = [
    ("n_train", "N", "{}"),
    ("epochs", "epochs", "{}"),
    ("updates", "updates", "{}"),
    ("final_train_loss", "final train loss", "{:.3f}"),
    *METRIC_COLUMNS,
    ("own_heldout_ttr", "TTR on its own held-out", "{:.3f}"),
]


def size_epochs(n_train: int, *, batch_size: int, updates: int) -> int:
    """Epochs giving about ``updates`` optimizer steps on ``n_train`` blocks.

    ``train`` takes ``n_train // batch_size`` full batches per epoch (an incomplete last batch is left out, a
    different one each epoch), so epochs = round(updates / (n_train // batch_size)), at least 1; the updates are
    exact when that quotient divides ``updates``. N < batch_size has no full batch at all.
    """
    steps = n_train // batch_size
    if steps == 0:
        raise HyperfitError(
            f"data size {n_train} is smaller than the batch of {batch_size}: no full batch exists; drop it from "
            "--sizes or lower --batch_size."
        )
    return max(1, round(updates / steps))


def data_size(ctx: Context) -> Outcome:
    """Train on the first N blocks for each N (nested sets), updates held fixed; evaluate all on one held-out set.

    fit-text holds out the n_eval documents after the first N, so each N would see other prompts; every model is
    therefore evaluated on the held-out blocks of the largest N, which no smaller training set contains.
    """
    sizes = sorted(set(_ints(ctx.exp.sizes, "sizes")), reverse=True)
    rows, largest = [], None
    for n in sizes:
        epochs = size_epochs(n, batch_size=ctx.train.batch_size, updates=ctx.exp.updates)
        variant = f"n{n}"
        summary = ctx.fit(
            variant,
            data=replace(ctx.data, n_train=n),
            train=replace(ctx.train, epochs=epochs, eval_every_epochs=epochs),
            save_model=largest is not None,
        )
        if largest is None:
            largest, common = variant, ctx.held_out(variant)
            common_docs = set(ctx.manifest(variant)["eval_doc_ids"])
            after, original = summary["after"], summary["before"]
        else:
            if common_docs & set(ctx.manifest(variant)["train_doc_ids"]):
                raise HyperfitError(
                    f"the training blocks of {variant} overlap the held-out blocks of {largest}; keep --data_seed "
                    "and --block_len equal across sizes (rerun with --overwrite)."
                )
            after = ctx.variant_derived(
                variant, "common_heldout.json", partial(evaluate_blocks, eval_ids=common, eval_cfg=ctx.eval)
            )
        rows.append(
            {
                "variant": variant,
                "n_train": n,
                "epochs": epochs,
                "updates_target": ctx.exp.updates,
                "updates": summary["train"]["steps"],
                "final_train_loss": summary["train"]["final_train_loss"],
                **_metrics(after),
                "own_heldout_ttr": summary["after"]["ttr"],
                **(
                    {"own_heldout_ttr_ci": summary["after"]["ttr_ci"]} if "ttr_ci" in summary["after"] else {}
                ),
            }
        )
    rows.append({"variant": "original", "n_train": 0, "epochs": 0, "updates": 0, **_metrics(original)})
    rows.sort(key=lambda r: r["n_train"])
    notes = [
        f"Updates held fixed: epochs = round({ctx.exp.updates} / (N // {ctx.train.batch_size})); an incomplete last "
        "batch is left out of each epoch (a different one each epoch). N below the batch size has no full batch.",
        f"All rows are evaluated on the {common.size(0)} held-out blocks of N = {sizes[0]} (disjoint from every "
        "training set); 'TTR on its own held-out' is fit-text's evaluation on the documents after each N.",
        "Training sets are nested: the first N documents of one seeded order.",
    ]
    return Outcome(rows, facts={"heldout_of": largest}, notes=notes)


def data_size_report(summary: dict, out: Path, recorded: dict) -> list[Section]:
    """The rows as a table and greedy TTR against N (log scale), the original model as a dashed line."""
    rows = summary["rows"]
    trained = [r for r in rows if r["n_train"]]
    original = next(r for r in rows if r["variant"] == "original")
    plot = Plot(
        f"greedy TTR vs training blocks ({trained[0].get('updates_target')} updates each)",
        [Series("hyperfitted", [r["n_train"] for r in trained], [r["ttr"] for r in trained])],
        x_label="training blocks N (log scale)",
        y_label="TTR",
        log_x=True,
        references=[("original", original["ttr"])],
    )
    return [Section("TTR against training-set size", [metric_table(rows, COLUMNS), plot])]
