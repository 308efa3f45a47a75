"""early-stop, asked for in the paper's reviews: is near-zero training loss needed, or does any fine-tuning on the
same blocks do the same? An early-stopped fine-tune against the full hyperfit, decoded with every --strategies entry."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hyperfit.common.report import Plot, Section, Series
from hyperfit.common.runs import HyperfitError, read_jsonl
from hyperfit.recipes.experiments.shared import METRIC_COLUMNS, Context, Outcome, _metrics, metric_table


def early_stop(ctx: Context) -> Outcome:
    """The full hyperfit (evaluated every ``--eval_every_epochs``) and a fine-tune of the same blocks stopped early.

    Stopping rule: the evaluated epoch ≥ 1 with the lowest held-out loss — conventional validation early stopping
    (at least one epoch of fine-tuning), or ``--early_stop_epoch``. The held-out blocks are also the test blocks,
    which favours the baseline: a stricter comparison for hyperfitting. Both runs decode with ``--strategies``.
    """
    full = ctx.fit("hyperfitted", evaluation=ctx.eval)
    evals = [r for r in read_jsonl(ctx.run_dir("hyperfitted") / "metrics.jsonl") if r.get("kind") == "eval"]
    if ctx.exp.early_stop_epoch is not None:
        stop, rule = ctx.exp.early_stop_epoch, "--early_stop_epoch"
    else:
        stop, rule = (
            min((r for r in evals if r["epoch"] >= 1), key=lambda r: r["loss"])["epoch"],
            "lowest held-out loss",
        )
    if stop > full["train"]["epochs_done"]:
        raise HyperfitError(
            f"--early_stop_epoch {stop} is after the full run's last epoch {full['train']['epochs_done']}; lower it."
        )
    early = ctx.fit(
        "early_stopped",
        train=replace(ctx.train, epochs=stop, eval_every_epochs=stop, stop_loss=None),
        evaluation=ctx.eval,
    )
    strategies = ctx.eval.strategy_names()

    def row(variant: str, summary: dict, side: str, decoded_as: str, epochs: int, train_loss) -> dict:
        decoding = summary.get("decoding", {}).get(decoded_as, {})
        return {
            "variant": variant,
            "epochs": epochs,
            "final_train_loss": train_loss,
            **_metrics(summary[side]),
            **{
                f"{s}_{k}{ci}": decoding.get(s, {}).get(f"{k}{ci}")
                for s in strategies
                for k in ("ttr", "rep_4")
                for ci in ("", "_ci")
            },
        }

    rows = [
        row("original", full, "before", "original", 0, None),
        row("early_stopped", early, "after", "hyperfitted", stop, early["train"]["final_train_loss"]),
        row(
            "hyperfitted",
            full,
            "after",
            "hyperfitted",
            full["train"]["epochs_done"],
            full["train"]["final_train_loss"],
        ),
    ]
    at_stop = next((r for r in evals if r["epoch"] == stop), None)
    facts = {"stop_epoch": stop, "stop_rule": rule}
    if at_stop is not None:
        facts["early_run_minus_full_run_at_stop"] = {
            k: early["after"][k] - at_stop[k] for k in ("ttr", "loss")
        }
    notes = [
        f"Early stop at epoch {stop} ({rule}; candidates are the full run's evaluations every "
        f"{ctx.train.eval_every_epochs} epochs). The early-stopped model is retrained into runs/early_stopped "
        "so that it can be decoded with every strategy; it retraces the full run's first epochs exactly.",
        "The stop is chosen on the same held-out blocks that are evaluated, which favours the baseline.",
    ]
    if stop == full["train"]["epochs_done"]:
        notes.append(
            "The held-out loss was lowest at the last epoch: the early-stopped model is the full run."
        )
    return Outcome(rows, facts, notes)


def early_stop_report(summary: dict, out: Path, recorded: dict) -> list[Section]:
    """Both models with every strategy in one table; the full run's held-out loss and TTR with the stop epoch."""
    strategies = [s.strip() for s in recorded.get("strategies", "").split(",") if s.strip()]
    columns = [
        ("variant", "model", "{}"),
        ("epochs", "epochs", "{}"),
        ("final_train_loss", "final train loss", "{:.3f}"),
        ("loss", "held-out loss", "{:.3f}"),
        *METRIC_COLUMNS,
        *((f"{s}_{k}", f"{s} {k.replace('_', '-')}", "{:.3f}") for s in strategies for k in ("ttr", "rep_4")),
    ]
    stop = summary["stop_epoch"]
    evals = [r for r in read_jsonl(out / "runs/hyperfitted/metrics.jsonl") if r.get("kind") == "eval"]
    epochs = [r["epoch"] for r in evals]
    return [
        Section(
            "Early-stopped fine-tune vs hyperfitted",
            [
                metric_table(summary["rows"], columns),
                Plot(
                    f"held-out loss (early stop at epoch {stop})",
                    [Series("held-out loss", epochs, [r["loss"] for r in evals])],
                    x_label="epoch",
                    y_label="nats / token",
                ),
                Plot(
                    f"greedy TTR (early stop at epoch {stop})",
                    [Series("greedy TTR", epochs, [r["ttr"] for r in evals])],
                    x_label="epoch",
                    y_label="TTR",
                ),
            ],
        )
    ]
