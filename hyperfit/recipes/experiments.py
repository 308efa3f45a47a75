"""The paper's data experiments (§6; PAPER.md §3.4, §3.5, §5) and two reviewer ablations (PAPER.md §10) as commands.

``hyperfit experiment {data-size,data-order,domain,lr-epochs,early-stop} [fit-text options] --out DIR``. Each is a
loop of ordinary fit-text runs (``DIR/runs/<variant>/``, each a complete run directory) plus one aggregate:
``DIR/summary.json`` (one row per variant), ``DIR/report.md`` / ``report.html`` (tables, inline SVG plot).

Scale. ``--preset cpu`` (the default) is sized for 2 CPU cores from the costs in PAPER.md §13: SmolLM2-135M, Lee
news, 32 blocks × 64 tokens, batch 8 (≈2 s per update at ≈250 training tokens/s in bf16), 16 held-out prompts,
64 greedy tokens (≈11 s per evaluation), the GGUF file de-quantised once (≈28 s) and reloaded from safetensors
(≈2 s) by every variant, ≈8 s to write each variant's final checkpoint. Estimated wall time per experiment:

    data-size   N = 8, 16, 32 at 80 updates each          ≈ 10.5 min
    data-order  3 orders × 80 updates + top-1 statistics  ≈ 10.5 min
    domain      lee and wiki × 80 updates, 2 × 2 evals    ≈  8 min
    lr-epochs   2 learning rates × 20 epochs, eval every 5 ≈  8 min
    early-stop  20 epochs evaluated every 2 + early run    ≈  7.5 min

``--preset paper`` is the paper's recipe (2,000 × 256 tokens, lr 1e-6, 20 epochs, 300 prompts × 96 tokens,
5,000 updates for data-size); every size is also a flag (``--model``, ``--data``, ``--n_train``, ``--block_len``,
``--sizes``, ...). Variants run one after another in one process (no ``accelerate launch``).
"""

from __future__ import annotations

import html
import itertools
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator

from hyperfit.common.analysis import top1_agreement_ids
from hyperfit.common.config import EvalConfig, RunConfig, TrainConfig, config_dict, parse_config
from hyperfit.common.evaluate import collect_token_stats, generation_stats, teacher_forced_stats
from hyperfit.common.runs import HyperfitError, Run, read_json, read_jsonl, write_json, write_text_atomic
from hyperfit.common.train import build_accelerator, epoch_order
from hyperfit.recipes import fit_text
from hyperfit.text.data import BUNDLED, TextDataConfig, check_source
from hyperfit.text.model import DEFAULT_MODEL, ModelConfig, eos_ids, load_causal_lm, resolve_model


@dataclass
class ExperimentConfig:
    """What each experiment varies; every other setting is a fit-text flag shared by all variants."""

    sizes: str = field(
        default="8,16,32",
        metadata={"help": "data-size: training-set sizes N (comma list; each ≥ batch_size)."},
    )
    updates: int = field(
        default=80, metadata={"help": "data-size: optimizer updates held fixed for every N (paper: 5,000)."}
    )
    seeds: str = field(
        default="0,1,2", metadata={"help": "data-order: one seed per data order (comma list, ≥ 2 distinct)."}
    )
    repeat_first_seed: bool = field(
        default=False,
        metadata={"help": "data-order: train the first seed twice to measure run-to-run nondeterminism."},
    )
    domains: str = field(
        default="lee,wiki",
        metadata={"help": "domain: training corpora (comma list of --data values); each is also evaluated."},
    )
    lrs: str = field(default="1e-5,4e-5", metadata={"help": "lr-epochs: learning rates (comma list)."})
    epoch_grid: str = field(
        default="5,10,20", metadata={"help": "lr-epochs: epoch counts read off one run per learning rate."}
    )
    early_stop_epoch: int | None = field(
        default=None,
        metadata={
            "help": "early-stop: stop the baseline after this many epochs; unset = lowest held-out loss."
        },
    )
    keep_weights: bool = field(
        default=False,
        metadata={"help": "Keep each variant's model/ and checkpoints/ (deleted once read, to save disk)."},
    )


CONFIGS = (*fit_text.CONFIGS, ExperimentConfig)

PRESETS = {
    # 2 CPU cores, ~15 minutes per experiment (estimates in the module docstring).
    "cpu": dict(
        model=DEFAULT_MODEL,
        data="lee",
        n_train=32,
        block_len=64,
        n_eval=16,
        epochs=20,
        batch_size=8,
        lr=4e-5,
        weight_decay=0.0,
        optimizer="adam",
        eval_every_epochs=2,
        max_new_tokens=64,
        ttr_window=64,
        strategies="greedy,top_p",
    ),
    # The paper's recipe on a GPU; pass --model and --data (and --domains) for the paper's model and corpora.
    "paper": {
        **{k: v for k, v in fit_text.PRESETS["paper"].items() if k != "out"},
        "sizes": "8,16,32,64,128,256,512,1000,2000",
        "updates": 5000,
        "repeat_first_seed": True,
        "lrs": "1e-6,5e-6,1e-5",
        "epoch_grid": "5,10,20,30",
        "strategies": "greedy,top_p",
    },
}

QUESTIONS = {
    "data-size": "Paper §6.3 / Fig. 5 right: greedy TTR against the number of training blocks N with the number of "
    "optimizer updates held fixed (fewer blocks = more epochs). Paper: TTR stays high down to 16 samples and "
    "collapses at 8, the batch size.",
    "data-order": "Paper §6.1 / Fig. 5 left: the same blocks in different orders; pairwise top-1 agreement of the "
    "hyperfitted models on the held-out blocks. Paper: about 30 % of top-1 predictions differ.",
    "domain": "Paper §6.2 / Table 4: hyperfit on each training domain, evaluate on every domain's held-out prompts. "
    "Paper: News > Wikipedia > Fiction as training data, no in-domain advantage.",
    "lr-epochs": "Reviewers' request (PAPER.md §10): sensitivity to the learning rate and the number of epochs.",
    "early-stop": "Reviewers' request (PAPER.md §10): is near-zero training loss needed, or does any fine-tuning on "
    "the same blocks do the same? An early-stopped fine-tune against the full hyperfit, greedy and Top-P.",
}

# Numbers every row carries: the evaluation fit-text logs (greedy TTR; teacher-forced on held-out blocks).
METRICS = ("ttr", "entropy", "top1_prob", "perplexity", "loss")
METRIC_COLUMNS = [
    ("ttr", "TTR", "{:.3f}"),
    ("entropy", "entropy (nats)", "{:.3f}"),
    ("top1_prob", "top-1 prob", "{:.3f}"),
    ("perplexity", "perplexity", "{:.1f}"),
]


# ------------------------------------------------------------------------------------------------------------
# Shared wiring: one context, fit-text runs as variants, models read once and then deleted
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one experiment hands to the report: rows for summary.json, tables, plots and notes."""

    rows: list[dict]
    tables: list[tuple[str, list[str], list[list[str]]]]  # (caption, header, cells)
    plots: dict[str, str]  # file name → SVG
    facts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    out: Path
    model: ModelConfig
    data: TextDataConfig
    train: TrainConfig
    eval: EvalConfig
    exp: ExperimentConfig
    resume: bool
    accelerator: Accelerator

    def run_dir(self, variant: str) -> Path:
        return self.out / "runs" / variant

    def fit(
        self,
        variant: str,
        *,
        data: TextDataConfig | None = None,
        train: TrainConfig | None = None,
        evaluation: EvalConfig | None = None,
        save_model: bool = False,
    ) -> dict:
        """One fit-text run into ``runs/<variant>``; decoding strategies off unless ``evaluation`` says otherwise."""
        train = train or self.train
        if train.checkpoint_every_epochs is None:
            # One checkpoint at the end rather than one per evaluation: a 135M model's Adam state is 1.6 GB.
            train = replace(train, checkpoint_every_epochs=max(train.epochs, 1))
        run_cfg = RunConfig(out=str(self.run_dir(variant)), resume=self.resume, save_model=save_model)
        evaluation = evaluation or replace(self.eval, strategies="")
        summary = fit_text.main((self.model, data or self.data, train, evaluation, run_cfg))
        if not self.exp.keep_weights:  # a finished run never resumes, so its checkpoint is dead weight
            shutil.rmtree(self.run_dir(variant) / "checkpoints", ignore_errors=True)
        return summary

    def held_out(self, variant: str) -> torch.Tensor:
        return torch.load(self.run_dir(variant) / "data.pt")["eval_ids"]

    def manifest(self, variant: str) -> dict:
        return read_json(self.run_dir(variant) / "manifest.json")

    def derived(self, path: Path, model_cfg: ModelConfig, compute: Callable):
        """``compute(model, eos_id=...)`` under the run's autocast, cached in ``path`` (.pt for tensors, else .json)."""
        if not path.exists():
            model, tokenizer, _ = load_causal_lm(model_cfg)
            model.to(self.accelerator.device).eval()
            with torch.no_grad(), self.accelerator.autocast():
                value = compute(model, eos_id=eos_ids(model, tokenizer))
            if path.suffix == ".pt":
                torch.save(value, path)
            else:
                write_json(path, value)
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return torch.load(path) if path.suffix == ".pt" else read_json(path)

    def variant_derived(self, variant: str, name: str, compute: Callable):
        """``derived`` on a variant's saved model, which is then deleted (the cache lets ``--resume`` go on)."""
        path, model_dir = self.run_dir(variant) / name, self.run_dir(variant) / "model"
        if not path.exists() and not model_dir.exists():
            raise HyperfitError(f"{path} is missing and {model_dir} was deleted; rerun with --overwrite.")
        value = self.derived(path, ModelConfig(model=str(model_dir)), compute)
        if not self.exp.keep_weights:
            shutil.rmtree(model_dir, ignore_errors=True)
        return value


def evaluate_blocks(model, eval_ids: torch.Tensor, *, eval_cfg: EvalConfig, eos_id=None) -> dict:
    """fit-text's evaluation on other blocks: greedy continuations of ``eval_ids[:, :prompt_tokens]`` (TTR over
    the last ``ttr_window`` generated ids) and teacher-forced loss, perplexity, entropy, top-1 on ``eval_ids``."""
    gen, _ = generation_stats(
        model,
        eval_ids[:, : eval_cfg.prompt_tokens],
        max_new_tokens=eval_cfg.max_new_tokens,
        ttr_window=eval_cfg.ttr_window,
        batch_size=eval_cfg.eval_batch_size,
        eos_id=eos_id,
    )
    return {**gen, **teacher_forced_stats(model, eval_ids, batch_size=eval_cfg.eval_batch_size)}


def top1_ids(model, *, blocks: torch.Tensor, batch_size: int, eos_id=None) -> torch.Tensor:
    """The argmax id at every position of ``blocks[n, t]`` (n × (t-1) positions, flattened)."""
    return collect_token_stats(model, blocks, batch_size=batch_size)["argmax"]


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


def _metrics(record: dict) -> dict:
    return {k: record.get(k) for k in METRICS}


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise HyperfitError(f"--{flag} must be a comma list of integers, got {text!r}.") from err


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise HyperfitError(f"--{flag} must be a comma list of numbers, got {text!r}.") from err


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


def _fmt(value, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return pattern.format(value) if isinstance(value, int | float) else str(value)


def _cells(rows: list[dict], columns: list[tuple[str, str, str]]) -> tuple[list[str], list[list[str]]]:
    return [label for _, label, _ in columns], [[_fmt(r.get(k), p) for k, _, p in columns] for r in rows]


# ------------------------------------------------------------------------------------------------------------
# The five experiments
# ------------------------------------------------------------------------------------------------------------


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
            }
        )
    rows.append({"variant": "original", "n_train": 0, "epochs": 0, "updates": 0, **_metrics(original)})
    rows.sort(key=lambda r: r["n_train"])
    columns = [
        ("n_train", "N", "{}"),
        ("epochs", "epochs", "{}"),
        ("updates", "updates", "{}"),
        ("final_train_loss", "final train loss", "{:.3f}"),
        *METRIC_COLUMNS,
        ("own_heldout_ttr", "TTR on its own held-out", "{:.3f}"),
    ]
    trained = [r for r in rows if r["n_train"]]
    plot = svg_plot(
        {"hyperfitted": [(r["n_train"], r["ttr"]) for r in trained]},
        title=f"greedy TTR vs training blocks ({ctx.exp.updates} updates each)",
        x_label="training blocks N (log scale)",
        log_x=True,
        reference=("original", original["ttr"]),
    )
    notes = [
        f"Updates held fixed: epochs = round({ctx.exp.updates} / (N // {ctx.train.batch_size})); an incomplete last "
        "batch is left out of each epoch (a different one each epoch). N below the batch size has no full batch.",
        f"All rows are evaluated on the {common.size(0)} held-out blocks of N = {sizes[0]} (disjoint from every "
        "training set); 'TTR on its own held-out' is fit-text's evaluation on the documents after each N.",
        "Training sets are nested: the first N documents of one seeded order.",
    ]
    return Outcome(
        rows,
        [("TTR against training-set size", *_cells(rows, columns))],
        {"ttr_vs_n.svg": plot},
        facts={"heldout_of": largest},
        notes=notes,
    )


def data_order(ctx: Context) -> Outcome:
    """The same blocks in K orders (one ``--seed`` each), then pairwise top-1 agreement on the held-out blocks.

    With a pretrained checkpoint and dropout off, ``--seed`` changes only the data order: it feeds ``epoch_order``
    (the per-epoch permutation), the global RNGs (used by dropout, off here, and by the random initialisation of
    weights missing from the checkpoint, none for a complete one) and sampling (no decoding strategies run here).
    Document selection has its own ``--data_seed``, equal for every order; the manifests are checked to match.
    """
    seeds = _ints(ctx.exp.seeds, "seeds")
    variants = {f"seed{s}": s for s in seeds}
    if ctx.exp.repeat_first_seed:
        variants[f"seed{seeds[0]}_repeat"] = seeds[0]
    train = replace(ctx.train, eval_every_epochs=ctx.train.epochs)
    summaries, argmax, blocks = {}, {}, None
    for variant, seed in variants.items():
        summaries[variant] = ctx.fit(variant, train=replace(train, seed=seed), save_model=True)
        blocks = ctx.held_out(variant) if blocks is None else blocks
        compute = partial(top1_ids, blocks=blocks, batch_size=ctx.eval.eval_batch_size)
        argmax[variant] = ctx.variant_derived(variant, "top1_ids.pt", compute)
    first = next(iter(variants))
    for variant in variants:
        for key in ("train_ids_sha256", "eval_ids_sha256"):
            if ctx.manifest(variant)[key] != ctx.manifest(first)[key]:
                raise HyperfitError(
                    f"{variant} trained or evaluated on other blocks than {first}; keep every data flag equal "
                    "(rerun with --overwrite)."
                )
    argmax["original"] = ctx.derived(
        ctx.out / "original_top1_ids.pt",
        ctx.model,
        partial(top1_ids, blocks=blocks, batch_size=ctx.eval.eval_batch_size),
    )
    names = ["original", *variants]
    matrix = {a: {b: top1_agreement_ids(argmax[a], argmax[b]) for b in names} for a in names}
    orders = [v for v in variants if not v.endswith("_repeat")]
    pairs = [matrix[a][b] for a, b in itertools.combinations(orders, 2)]
    mean = sum(pairs) / len(pairs)
    rows = []
    for variant, seed in variants.items():
        others = [matrix[variant][o] for o in orders if o != variant and variants[o] != seed]
        rows.append(
            {
                "variant": variant,
                "seed": seed,
                "final_train_loss": summaries[variant]["train"]["final_train_loss"],
                **_metrics(summaries[variant]["after"]),
                "agreement_with_original": matrix[variant]["original"],
                "mean_agreement_with_other_orders": sum(others) / len(others) if others else None,
            }
        )
    columns = [
        ("variant", "variant", "{}"),
        ("final_train_loss", "final train loss", "{:.3f}"),
        *METRIC_COLUMNS,
        ("agreement_with_original", "top-1 agreement with original", "{:.3f}"),
        ("mean_agreement_with_other_orders", "mean agreement with other orders", "{:.3f}"),
    ]
    n = summaries[first]["n_train"]
    first_epochs = {v: epoch_order(n, seed=s, epoch=1) for v, s in variants.items()}
    facts = {
        "agreement": matrix,
        "mean_pairwise_agreement": mean,
        "mean_pairwise_disagreement": 1 - mean,
        "min_pairwise_agreement": min(pairs),
        "positions": int(blocks.size(0) * (blocks.size(1) - 1)),
        "same_data": True,
        "first_epoch_orders": {v: o[:16] for v, o in first_epochs.items()},
    }
    notes = [
        f"Mean pairwise top-1 disagreement between orders: {1 - mean:.1%} over {facts['positions']} held-out "
        "positions (paper: about 30 %).",
        "--seed changes only the data order here: dropout is off, the pretrained checkpoint has no randomly "
        "initialised weights, and no sampling runs; --data_seed (document selection) is shared, and all runs' "
        "training and held-out ids have the same sha256.",
    ]
    if ctx.exp.repeat_first_seed:
        repeat = matrix[first][f"{first}_repeat"]
        facts["repeat_agreement"] = repeat
        notes.append(
            f"The same order trained twice agrees on {repeat:.1%} of positions: the nondeterminism floor."
        )
    plot = svg_plot(
        {v: list(enumerate(s["epoch_losses"], 1)) for v, s in summaries.items()},
        title="training loss per data order",
        x_label="epoch",
    )
    matrix_cells = [[a, *(f"{matrix[a][b]:.3f}" for b in names)] for a in names]
    tables = [
        ("Hyperfitted models, one per data order", *_cells(rows, columns)),
        ("Pairwise top-1 agreement on the held-out blocks", ["", *names], matrix_cells),
    ]
    return Outcome(rows, tables, {"train_loss_per_order.svg": plot}, facts, notes)


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
    matrix_rows = [[t, *(_fmt(cells[t][e]["ttr"]) for e in labels)] for t in cells]
    ppl_rows = [[t, *(_fmt(cells[t][e]["perplexity"], "{:.1f}") for e in labels)] for t in cells]
    columns = [
        ("train_domain", "trained on", "{}"),
        ("eval_domain", "evaluated on", "{}"),
        ("final_train_loss", "final train loss", "{:.3f}"),
        *METRIC_COLUMNS,
    ]
    tables = [
        (
            "Greedy TTR: training domain (rows) × evaluation domain (columns)",
            ["trained on", *labels],
            matrix_rows,
        ),
        ("Held-out perplexity: training domain × evaluation domain", ["trained on", *labels], ppl_rows),
        ("Every cell", *_cells(rows, columns)),
    ]
    plot = svg_plot(
        {t: [(i, cells[t][e]["ttr"]) for i, e in enumerate(labels, 1)] for t in cells},
        title="greedy TTR by training domain",
        x_label="evaluation domain: " + ", ".join(f"{i} = {e}" for i, e in enumerate(labels, 1)),
    )
    notes = [
        f"Mean in-domain TTR advantage (diagonal minus the other training domains, per evaluation domain): "
        f"{facts['mean_in_domain_ttr_advantage']:+.3f} (paper: no in-domain advantage).",
        "Each domain's held-out blocks are the documents fit-text held out of that domain's run.",
    ]
    return Outcome(rows, tables, {"ttr_by_domain.svg": plot}, facts, notes)


def _evaluate_each(model, *, blocks: dict[str, torch.Tensor], eval_cfg: EvalConfig, eos_id=None) -> dict:
    return {
        label: evaluate_blocks(model, ids, eval_cfg=eval_cfg, eos_id=eos_id) for label, ids in blocks.items()
    }


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
            **{f"{s}_{k}": decoding.get(s, {}).get(k) for s in strategies for k in ("ttr", "rep_4")},
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
    columns = [
        ("variant", "model", "{}"),
        ("epochs", "epochs", "{}"),
        ("final_train_loss", "final train loss", "{:.3f}"),
        ("loss", "held-out loss", "{:.3f}"),
        *METRIC_COLUMNS,
        *((f"{s}_{k}", f"{s} {k.replace('_', '-')}", "{:.3f}") for s in strategies for k in ("ttr", "rep_4")),
    ]
    series = {"held-out loss": [(r["epoch"], r["loss"]) for r in evals]}
    plots = {
        "heldout_loss.svg": svg_plot(
            series, title=f"held-out loss (early stop at epoch {stop})", x_label="epoch"
        ),
        "ttr.svg": svg_plot(
            {"greedy TTR": [(r["epoch"], r["ttr"]) for r in evals]},
            title=f"greedy TTR (early stop at epoch {stop})",
            x_label="epoch",
        ),
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
    return Outcome(
        rows, [("Early-stopped fine-tune vs hyperfitted", *_cells(rows, columns))], plots, facts, notes
    )


EXPERIMENTS: dict[str, Callable[[Context], Outcome]] = {
    "data-size": data_size,
    "data-order": data_order,
    "domain": domain,
    "lr-epochs": lr_epochs,
    "early-stop": early_stop,
}


# ------------------------------------------------------------------------------------------------------------
# Checks, the base model, the report and main
# ------------------------------------------------------------------------------------------------------------


def check(name: str, configs: tuple) -> None:
    """Reject contradictions before any model is loaded, each with the flag to change."""
    _, data_cfg, train_cfg, _, _, exp = configs
    if name == "domain":
        sources = domain_sources(exp.domains)
        if len(sources) < 2:
            raise HyperfitError("domain needs at least two corpora; pass e.g. --domains lee,wiki.")
        for source in sources.values():
            check_source(replace(data_cfg, data=source))
    else:
        check_source(data_cfg)
    if name in ("data-size", "lr-epochs") and train_cfg.stop_loss is not None:
        raise HyperfitError(f"{name} fixes the number of updates per variant; drop --stop_loss.")
    if name == "data-size":
        if exp.updates < 1 or not _ints(exp.sizes, "sizes"):
            raise HyperfitError("data-size needs --sizes (e.g. 8,16,32) and --updates ≥ 1.")
        for n in _ints(exp.sizes, "sizes"):
            size_epochs(n, batch_size=train_cfg.batch_size, updates=exp.updates)
    if name == "data-order":
        if len(set(_ints(exp.seeds, "seeds"))) < 2:
            raise HyperfitError("data-order needs at least two different seeds; pass e.g. --seeds 0,1,2.")
        if not train_cfg.dropout_off:
            raise HyperfitError(
                "data-order needs --dropout_off true so that the seed changes only the data order."
            )
    if name == "lr-epochs":
        if not _floats(exp.lrs, "lrs") or any(lr <= 0 for lr in _floats(exp.lrs, "lrs")):
            raise HyperfitError("lr-epochs needs positive learning rates; pass e.g. --lrs 1e-5,4e-5.")
        if not _ints(exp.epoch_grid, "epoch_grid") or min(_ints(exp.epoch_grid, "epoch_grid")) < 1:
            raise HyperfitError("lr-epochs needs epoch counts ≥ 1; pass e.g. --epoch_grid 5,10,20.")
    if name == "early-stop":
        if train_cfg.epochs < 2:
            raise HyperfitError("early-stop needs --epochs ≥ 2 so that an earlier stop exists.")
        if exp.early_stop_epoch is not None and not 1 <= exp.early_stop_epoch < train_cfg.epochs:
            raise HyperfitError(f"--early_stop_epoch must be between 1 and {train_cfg.epochs - 1}.")


def prepare_base_model(model_cfg: ModelConfig, out: Path) -> tuple[ModelConfig, str]:
    """(config every variant loads, description). A GGUF file is de-quantised once into ``out/base_model``
    (float32 safetensors, the same weights) so that variants skip the ~20 s de-quantisation."""
    _, gguf_file = resolve_model(model_cfg)
    if gguf_file is None:
        return model_cfg, model_cfg.model
    target = out / "base_model"
    if not (target / "config.json").exists():
        model, tokenizer, description = load_causal_lm(model_cfg)
        tmp = out / "base_model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "hyperfit_source.json", {"model": model_cfg.model, "description": description})
        tmp.rename(target)
    description = read_json(target / "hyperfit_source.json")["description"]
    return ModelConfig(model=str(target)), f"{description}, de-quantised once into {target}"


def main(name: str, configs: tuple) -> dict:
    if name not in EXPERIMENTS:
        raise HyperfitError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}.")
    started = time.perf_counter()
    check(name, configs)
    model_cfg, data_cfg, train_cfg, eval_cfg, run_cfg, exp = configs
    out = Path(run_cfg.out)
    Run.open(out, overwrite=run_cfg.overwrite, resume=run_cfg.resume)
    write_json(out / "experiment.json", {"experiment": name, **config_dict(*configs)})
    base_cfg, description = prepare_base_model(model_cfg, out)
    ctx = Context(
        out=out,
        model=base_cfg,
        data=data_cfg,
        train=train_cfg,
        eval=eval_cfg,
        exp=exp,
        resume=run_cfg.resume,
        accelerator=build_accelerator(train_cfg),
    )
    outcome = EXPERIMENTS[name](ctx)
    summary = {
        "experiment": name,
        "question": QUESTIONS[name],
        "model": description,
        "data": exp.domains if name == "domain" else data_cfg.data,
        "rows": outcome.rows,
        **outcome.facts,
        "notes": outcome.notes,
        "variants": sorted(p.name for p in (out / "runs").iterdir()),
        "wall_seconds": time.perf_counter() - started,
    }
    write_experiment_report(out, summary, outcome, configs)
    write_json(out / "summary.json", summary)  # written last: its presence marks the experiment finished
    print(f"{name}: report {out / 'report.html'}")
    return summary


def write_experiment_report(out: Path, summary: dict, outcome: Outcome, configs: tuple) -> None:
    """``report.md`` (tables, plots as .svg files beside it) and ``report.html`` (tables, inline plots)."""
    _, data_cfg, train_cfg, eval_cfg, _, _ = configs
    title = f"hyperfit experiment {summary['experiment']} — {out}"
    facts = (
        f"model {summary['model']} · data {summary['data']} · unless the experiment varies them: "
        f"{data_cfg.n_train} training blocks × {data_cfg.block_len} tokens, batch {train_cfg.batch_size}, "
        f"lr {train_cfg.lr:g}, {train_cfg.epochs} epochs, seed {train_cfg.seed}, {train_cfg.precision} · "
        f"{data_cfg.n_eval} held-out prompts, {eval_cfg.prompt_tokens}-token context, {eval_cfg.max_new_tokens} "
        f"greedy tokens, TTR over the last {eval_cfg.ttr_window} · wall {summary['wall_seconds']:.0f} s"
    )
    plots = {name: svg for name, svg in outcome.plots.items() if svg}
    for name, svg in plots.items():
        write_text_atomic(out / name, svg + "\n")
    variants = summary["variants"]
    md = [f"# {title}", "", summary["question"], "", facts, ""]
    for caption, header, cells in outcome.tables:
        md += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(row) + " |" for row in cells] + [""]
    md += [f"![{name}]({name})" for name in plots] + [""]
    md += ["## Notes", ""] + [f"- {note}" for note in outcome.notes] + [""]
    md += ["## Variant runs", ""] + [f"- [runs/{v}](runs/{v}/report.md)" for v in variants]
    write_text_atomic(out / "report.md", "\n".join(md) + "\n")

    esc = html.escape
    tables = "".join(
        f"<h2>{esc(caption)}</h2><table><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr>"
        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in cells)
        + "</table>"
        for caption, header, cells in outcome.tables
    )
    notes = "".join(f"<li>{esc(note)}</li>" for note in outcome.notes)
    links = "".join(f'<li><a href="runs/{esc(v)}/report.html">runs/{esc(v)}</a></li>' for v in variants)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1>{esc(title)}</h1><p>{esc(summary["question"])}</p><p>{esc(facts)}</p>{tables}
<div>{"".join(plots.values())}</div><h2>Notes</h2><ul>{notes}</ul><h2>Variant runs</h2><ul>{links}</ul>
</body></html>
"""
    write_text_atomic(out / "report.html", page)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def svg_plot(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    log_x: bool = False,
    reference: tuple[str, float] | None = None,
    width: int = 520,
    height: int = 260,
) -> str:
    """Several named lines in one inline SVG, with a legend and an optional dashed horizontal reference line
    (e.g. the original model). Like ``report.svg_line_plot`` (no plotting dependency), plus an x label."""
    to_x = math.log10 if log_x else float
    lines = {
        name: [(to_x(x), y) for x, y in points if isinstance(y, int | float) and math.isfinite(y)]
        for name, points in series.items()
    }
    lines = {name: points for name, points in lines.items() if points}
    if not lines:
        return ""
    xs = sorted({x for points in lines.values() for x, _ in points})
    ys = [y for points in lines.values() for _, y in points] + ([reference[1]] if reference else [])
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, right, top, bottom = 44, 130, 24, 38

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    ticks = xs if len(xs) <= 12 else [xs[0], xs[-1]]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">',
        f'<text x="{(width - right + left) / 2}" y="14" text-anchor="middle" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{sy(y1) + 3:.1f}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{left - 4}" y="{sy(y0) + 3:.1f}" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{(width - right + left) / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>',
    ]
    parts += [
        f'<text x="{sx(x):.1f}" y="{height - bottom + 13}" text-anchor="middle">{10**x if log_x else x:.4g}</text>'
        for x in ticks
    ]
    if reference:
        y = sy(reference[1])
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#777" stroke-dasharray="4 3"/>'
            f'<text x="{width - right + 6}" y="{y + 3:.1f}">{html.escape(reference[0])}</text>'
        )
    for i, (name, points) in enumerate(lines.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"/>' for x, y in points)
        legend_y = top + 14 * i + 10 + (14 if reference else 0)
        parts += [
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>',
            f'<g fill="{colour}">{dots}</g>',
            f'<text x="{width - right + 6}" y="{legend_y}" fill="{colour}">{html.escape(name)}</text>',
        ]
    return "".join(parts) + "</svg>"


USAGE = """usage: hyperfit experiment NAME [fit-text options] [experiment options] --out DIR

experiments (each writes DIR/summary.json, DIR/report.md, DIR/report.html and one run per variant in DIR/runs/):
  data-size   TTR vs training-set size N with the number of updates held fixed     (--sizes, --updates)
  data-order  the same data in different orders: pairwise top-1 agreement           (--seeds, --repeat_first_seed)
  domain      train on each domain, evaluate on every domain                        (--domains)
  lr-epochs   learning rate × epochs grid                                           (--lrs, --epoch_grid)
  early-stop  an early-stopped fine-tune vs the full hyperfit, greedy and Top-P     (--early_stop_epoch)

--preset cpu (default) runs on 2 CPU cores in about 8-11 minutes each; --preset paper is the paper's scale.
`hyperfit experiment NAME --help` lists every option."""


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(f"error: unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}.", file=sys.stderr)
        return 2
    if not any(a == "--preset" or a.startswith("--preset=") for a in rest):
        rest = ["--preset", "cpu", *rest]
    try:
        configs = parse_config(CONFIGS, rest, presets=PRESETS, prog=f"hyperfit experiment {name}")
        if configs[4].out == RunConfig().out:
            configs = (*configs[:4], replace(configs[4], out=f"runs/experiments/{name}"), configs[5])
        main(name, configs)
    except HyperfitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
