"""which-layers, a reviewers' question (Li et al. 2026 place the change in the final block and report that LoRA on
the last 5 layers suffices): hyperfit only some parameters, at the same number of updates, and compare."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hyperfit.common import stats
from hyperfit.common.analysis import ttr
from hyperfit.common.evaluate import collect_token_stats
from hyperfit.common.report import Cell, Section, Table
from hyperfit.common.report.render import format_value
from hyperfit.common.runs import read_jsonl
from hyperfit.recipes.experiments.shared import Context, Outcome
from hyperfit.text.model import ModelConfig

# (variant, --train_layers, LoRA?) in report order; LoRA uses --lora_layers / --lora_rank / --lora_lr.
VARIANTS = (
    ("full", "all", False),
    ("last_block", "last:1", False),
    ("embeddings_head", "embeddings,head", False),
    ("lora", None, True),
)


TO_LOSS = "_to_loss"  # suffix of the --to_loss rows' variant names (and run directories)


def which_layers(ctx: Context) -> Outcome:
    """Full hyperfitting, the last block only, embeddings + head only, and LoRA; each for the same updates, and
    with ``--to_loss X`` every variant but full once more, trained until its train loss is below X.

    Every variant is an ordinary fit-text run (``runs/<variant>``) with ``--train_layers`` / ``--lora_r`` set.
    Rows carry greedy TTR (interval over prompts, paired difference to the original and to full hyperfitting),
    held-out entropy, top-1 probability and perplexity (intervals over held-out blocks), and the perplexity
    ratio on every other bundled corpus (retention).
    """
    exp = ctx.exp
    summaries, trains = {}, {}
    # Only the before/after evaluations are read, so none in between (they would cost a third of the time).
    base = replace(ctx.train, eval_every_epochs=max(ctx.train.epochs, 1))
    for variant, layers, lora in VARIANTS:
        trains[variant] = _variant_train(base, exp, layers, lora)
    if exp.to_loss is not None:
        for variant, layers, lora in VARIANTS[1:]:
            trains[variant + TO_LOSS] = replace(
                _variant_train(base, exp, layers, lora),
                lr=exp.to_loss_lr,
                epochs=exp.to_loss_epochs,
                eval_every_epochs=exp.to_loss_epochs,  # the run evaluates when its loss is reached
                stop_loss=exp.to_loss,
            )
    for variant, train in trains.items():
        summaries[variant] = ctx.fit(variant, train=train, save_model=True)
    first = VARIANTS[0][0]
    blocks = ctx.held_out(first)
    per_block = {"original": ctx.derived(ctx.out / "original_blocks.json", ctx.model, _block_stats(blocks))}
    # The full variant keeps its model/ so that `hyperfit analyze --hyperfitted DIR/runs/full` can follow.
    per_block[first] = ctx.derived(
        ctx.run_dir(first) / "blocks.json",
        ModelConfig(model=str(ctx.run_dir(first) / "model")),
        _block_stats(blocks),
    )
    for variant in list(trains)[1:]:
        per_block[variant] = ctx.variant_derived(variant, "blocks.json", _block_stats(blocks))
    per_prompt = {"original": _prompt_ttrs(ctx, first, last=False, window=ctx.eval.ttr_window)}
    for variant in trains:
        per_prompt[variant] = _prompt_ttrs(ctx, variant, last=True, window=ctx.eval.ttr_window)

    rows = []
    for name in ["original", *trains]:
        summary = summaries.get(name)
        ttrs, b = per_prompt[name], per_block[name]
        row = {
            "variant": name,
            "to_loss": name.endswith(TO_LOSS),
            "train_layers": "–" if summary is None else trains[name].train_layers,
            "lora_r": None if summary is None else trains[name].lora_r or None,
            "lr": None if summary is None else trains[name].lr,
            "updates": None if summary is None else summary["train"]["steps"],
            "trainable_params": None if summary is None else summary["trainable"]["trainable_params"],
            "final_train_loss": None if summary is None else summary["train"]["final_train_loss"],
            "ttr": float(np.mean(ttrs)),
            "ttr_ci": list(stats.mean_ci(ttrs)),
            "ttr_minus_original": None
            if name == "original"
            else stats.paired_difference(ttrs, per_prompt["original"]),
            "ttr_minus_full": None
            if name in ("original", first)
            else stats.paired_difference(ttrs, per_prompt[first]),
            "entropy": float(np.mean(b["entropy"])),
            "entropy_ci": list(stats.mean_ci(b["entropy"])),
            "top1_prob": float(np.mean(b["top1_prob"])),
            "top1_prob_ci": list(stats.mean_ci(b["top1_prob"])),
            "perplexity": math.exp(float(np.mean(b["nll"]))),
            "perplexity_ci": list(stats.ratio_ci(b["nll"], [1.0] * len(b["nll"]), transform=math.exp)),
            "per_prompt_ttr": ttrs,
        }
        if summary is not None:
            row["retention"] = {
                domain: {
                    k: r[k] for k in ("perplexity_after", "perplexity_after_ci", "ratio", "ratio_ci", "p")
                }
                for domain, r in summary["retention"].items()
                if not r["trained_on"]
            }
        rows.append(row)

    full_ttr = rows[1]["ttr"]
    notes = [
        f"Every variant runs {ctx.train.epochs} epochs of the same blocks in the same order (the same updates); "
        f"full, last-block and embeddings+head use lr {ctx.train.lr:g}, LoRA (rank {exp.lora_rank}, alpha "
        f"{2 * exp.lora_rank}, on {exp.lora_layers}) lr {exp.lora_lr:g}: adapters start at zero and need a "
        "larger step.",
        "Intervals: 95 % bootstrap over held-out prompts (TTR) or blocks (entropy, top-1, perplexity); "
        "differences are paired over the same prompts with a sign-flip permutation p.",
    ]
    if summaries[first]["trainable"].get("tied_embeddings"):
        notes.append(
            "This model ties its input embeddings and output head (one matrix), so embeddings_head trains that "
            "one matrix."
        )
    for r in rows[2:]:
        d = r["ttr_minus_full"]
        verdict = "interval includes 0" if d["ci_includes_zero"] else ("below" if d["diff"] < 0 else "above")
        loss = format_value(r["final_train_loss"])
        if r["to_loss"]:
            reached = r["final_train_loss"] is not None and r["final_train_loss"] < exp.to_loss
            loss += f" after {r['updates']} updates" + ("" if reached else f", not below {exp.to_loss:g}")
        notes.append(
            f"{r['variant']}: TTR {r['ttr']:.3f} vs full {full_ttr:.3f} ({verdict}); final train loss {loss}."
        )
    if exp.to_loss is not None:
        notes.append(
            f"The rows named *{TO_LOSS} train until an epoch's train loss is below {exp.to_loss:g} (lr "
            f"{exp.to_loss_lr:g}, at most {exp.to_loss_epochs} epochs) and are then evaluated; full hyperfitting "
            f"ended at train loss {format_value(rows[1]['final_train_loss'])} after {rows[1]['updates']} updates."
        )
    facts = {"variants": list(trains), "to_loss": exp.to_loss}
    return Outcome(rows, facts, notes)


def _variant_train(base, exp, layers: str | None, lora: bool):
    """A variant's training settings: ``--train_layers layers``, or LoRA on ``--lora_layers`` at ``--lora_lr``."""
    if lora:
        return replace(
            base,
            train_layers=exp.lora_layers,
            lora_r=exp.lora_rank,
            lora_alpha=2.0 * exp.lora_rank,
            lr=exp.lora_lr,
        )
    return replace(base, train_layers=layers)


def _interval(row: dict, key: str, fmt: str = "{:.3f}") -> Cell:
    return Cell(row[key], ci=tuple(row[f"{key}_ci"]), fmt=fmt)


def _difference(d: dict | None) -> Cell | None:
    """A paired difference with its interval and permutation p."""
    return None if d is None else Cell(d["diff"], ci=tuple(d["ci"]), fmt="{:+.3f}", note=f"p {d['p']:.3f}")


def which_layers_report(summary: dict, out: Path, recorded: dict) -> list[Section]:
    """One row per variant with intervals and paired differences; the retention ratios on the other corpora."""
    rows = summary["rows"]
    equal = [r for r in rows if not r.get("to_loss")]
    sections = [Section("Which parameters are hyperfitted (equal updates)", [_variant_table(equal)])]
    if summary.get("to_loss") is not None:
        to_loss = [r for r in rows if r.get("to_loss")]
        title = f"Trained to the same loss: each variant until its train loss is below {summary['to_loss']:g}"
        sections.append(Section(title, [_variant_table([*equal[:2], *to_loss])]))
    domains = sorted({d for r in rows for d in r.get("retention", {})})
    if domains:
        retention = Table(
            ["variant", *(f"{d} perplexity" for d in domains), *(f"{d} × original" for d in domains)],
            [
                [
                    r["variant"],
                    *(Cell(r["retention"][d]["perplexity_after"], fmt="{:.1f}") for d in domains),
                    *(
                        Cell(
                            r["retention"][d]["ratio"], ci=tuple(r["retention"][d]["ratio_ci"]), fmt="{:.2f}"
                        )
                        for d in domains
                    ),
                ]
                for r in rows
                if "retention" in r
            ],
        )
        title = "Retention: perplexity on the other bundled corpora after hyperfitting (× original)"
        sections.append(Section(title, [retention]))
    return sections


def _variant_table(rows: list[dict]) -> Table:
    """One row per variant: what it trains, its updates and final loss, TTR and sharpness with intervals."""
    return Table(
        [
            "variant",
            "trained",
            "params",
            "lr",
            "updates",
            "final train loss",
            "TTR [95 % CI]",
            "TTR − original",
            "TTR − full",
            "entropy (nats)",
            "top-1 prob",
            "held-out perplexity",
        ],
        [
            [
                r["variant"],
                r["train_layers"] + (f" (LoRA r {r['lora_r']})" if r["lora_r"] else ""),
                Cell(r["trainable_params"], fmt="{:,}"),
                Cell(r["lr"], fmt="{:g}"),
                Cell(r.get("updates"), fmt="{:d}"),
                Cell(r["final_train_loss"]),
                _interval(r, "ttr"),
                _difference(r["ttr_minus_original"]),
                _difference(r["ttr_minus_full"]),
                _interval(r, "entropy"),
                _interval(r, "top1_prob"),
                _interval(r, "perplexity", "{:.1f}"),
            ]
            for r in rows
        ],
    )


def _block_stats(blocks: torch.Tensor):
    """``compute(model, eos_id=...)`` for ``Context.derived``: per held-out block mean entropy, top-1, NLL."""

    def compute(model, *, eos_id=None) -> dict:
        s = collect_token_stats(model, blocks, batch_size=16)
        n = blocks.size(0)
        return {k: s[k].double().view(n, -1).mean(-1).tolist() for k in ("entropy", "top1_prob", "nll")}

    return compute


def _prompt_ttrs(ctx: Context, variant: str, *, last: bool, window: int) -> list[float]:
    """Per-prompt greedy TTR of a variant's first (the original) or last evaluation."""
    evals = [r for r in read_jsonl(ctx.run_dir(variant) / "metrics.jsonl") if r.get("kind") == "eval"]
    epoch = evals[-1 if last else 0]["epoch"]
    records = read_jsonl(ctx.run_dir(variant) / "generations" / f"epoch_{epoch:03d}.jsonl")
    return [ttr(r["ids"], window=window) for r in records]
