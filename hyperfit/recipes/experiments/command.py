"""``hyperfit experiment NAME``: the name → experiment table, the checks run before any model is loaded, the base
model de-quantised once, ``main`` (one experiment, its summary.json and report) and ``cli``."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from hyperfit.common.config import RunConfig, close_progress_bars, config_dict, parse_recipe_config
from hyperfit.common.runs import (
    HyperfitError,
    Run,
    interrupted_message,
    read_json,
    undo_unstarted_runs,
    write_json,
)
from hyperfit.common.seeds import for_seed, numbers, parse_seeds, run_recipe_seeds
from hyperfit.common.train import build_accelerator
from hyperfit.recipes.experiments.data_order import data_order, data_order_report
from hyperfit.recipes.experiments.data_size import data_size, data_size_report, size_epochs
from hyperfit.recipes.experiments.domain import domain, domain_report, domain_sources
from hyperfit.recipes.experiments.early_stop import early_stop, early_stop_report
from hyperfit.recipes.experiments.lr_epochs import lr_epochs, lr_epochs_report
from hyperfit.recipes.experiments.report import SectionsOf, write_experiment_report
from hyperfit.recipes.experiments.shared import (
    PRESETS,
    Context,
    ExperimentRecipeConfig,
    Outcome,
    _floats,
    _ints,
)
from hyperfit.recipes.experiments.which_layers import which_layers, which_layers_report
from hyperfit.text.data import check_source
from hyperfit.text.model import ModelConfig, load_causal_lm, resolve_model


@dataclass(frozen=True)
class Experiment:
    """One experiment: the question it answers, the function that runs it and the one that reports it."""

    question: str
    run: Callable[[Context], Outcome]
    report: SectionsOf


EXPERIMENTS: dict[str, Experiment] = {
    "data-size": Experiment(
        "Paper §6.3 / Fig. 5 right: greedy TTR against the number of training blocks N with the number of "
        "optimizer updates held fixed (fewer blocks = more epochs). Paper: TTR stays high down to 16 samples and "
        "collapses at 8, the batch size.",
        data_size,
        data_size_report,
    ),
    "data-order": Experiment(
        "Paper §6.1 / Fig. 5 left: the same blocks in different orders, and Shuffle-1 (one pair of blocks "
        "swapped); pairwise top-1 agreement of the hyperfitted models on the held-out blocks. Paper: about 30 % "
        "of top-1 predictions differ, even after Shuffle-1.",
        data_order,
        data_order_report,
    ),
    "domain": Experiment(
        "Paper §6.2 / Table 4: hyperfit on each training domain, evaluate on every domain's held-out prompts. "
        "Paper: News > Wikipedia > Fiction as training data, no in-domain advantage.",
        domain,
        domain_report,
    ),
    "lr-epochs": Experiment(
        "Asked for in the paper's reviews: sensitivity to the learning rate and the number of epochs.",
        lr_epochs,
        lr_epochs_report,
    ),
    "early-stop": Experiment(
        "Asked for in the paper's reviews: is near-zero training loss needed, or does any fine-tuning on the same "
        "blocks do the same? An early-stopped fine-tune against the full hyperfit, decoded with every --strategies entry.",
        early_stop,
        early_stop_report,
    ),
    "which-layers": Experiment(
        "Where the effect lives (Li et al. 2026: the change sits in the final block; LoRA on the last 5 layers "
        "suffices): full hyperfitting vs the last block only, embeddings + head only and LoRA, at equal updates "
        "(and, with --to_loss, each trained to the same training loss).",
        which_layers,
        which_layers_report,
    ),
}
QUESTIONS = {name: experiment.question for name, experiment in EXPERIMENTS.items()}


# ------------------------------------------------------------------------------------------------------------
# Checks, the base model and main (the report is report.py)
# ------------------------------------------------------------------------------------------------------------


def check(name: str, cfg: ExperimentRecipeConfig) -> None:
    """Reject contradictions before any model is loaded, each with the flag to change."""
    data_cfg, train_cfg, exp = cfg.data, cfg.train, cfg.exp
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
        if len(set(_ints(exp.orders, "orders"))) < 2:
            raise HyperfitError("data-order needs at least two different orders; pass e.g. --orders 0,1,2.")
        if not train_cfg.dropout_off:
            raise HyperfitError(
                "data-order needs --dropout_off true so that the seed changes only the data order."
            )
    if name == "lr-epochs":
        if not _floats(exp.lrs, "lrs") or any(lr <= 0 for lr in _floats(exp.lrs, "lrs")):
            raise HyperfitError("lr-epochs needs positive learning rates; pass e.g. --lrs 1e-5,4e-5.")
        if not _ints(exp.epoch_grid, "epoch_grid") or min(_ints(exp.epoch_grid, "epoch_grid")) < 1:
            raise HyperfitError("lr-epochs needs epoch counts ≥ 1; pass e.g. --epoch_grid 5,10,20.")
    if name == "which-layers":
        if exp.lora_rank < 1 or exp.lora_lr <= 0:
            raise HyperfitError("which-layers needs --lora_rank ≥ 1 and a positive --lora_lr.")
        if train_cfg.train_layers != "all" or train_cfg.lora_r:
            raise HyperfitError("which-layers sets --train_layers and --lora_r per variant; drop them.")
        if exp.to_loss is not None and (exp.to_loss <= 0 or exp.to_loss_lr <= 0 or exp.to_loss_epochs < 1):
            raise HyperfitError(
                "which-layers --to_loss needs a positive loss, a positive --to_loss_lr and --to_loss_epochs ≥ 1; "
                "pass e.g. --to_loss 0.25."
            )
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


SEED_CONTROLS = (
    "Each seed is the --seed of every variant run: the order of the training blocks in every epoch and the "
    "sampling strategies' draws; the training and held-out texts are chosen by --data_seed, the same for every "
    "seed."
)
ORDER_SEEDS = (
    " In data-order, order k of seed s trains with seed 1000 s + k: each seed is another set of orders."
)
# Row fields that name a variant or its setting rather than measure it: not averaged over seeds.
SETTINGS = {
    "seed",
    "n_train",
    "epochs",
    "updates",
    "updates_target",
    "lr",
    "epoch",
    "lora_r",
    "trainable_params",
}


def main(name: str, cfg: ExperimentRecipeConfig) -> dict:
    if name not in EXPERIMENTS:
        raise HyperfitError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}.")
    seeds = parse_seeds(cfg.seeds.seeds)
    if len(seeds) == 1:
        cfg = for_seed(cfg, seeds[0])
    check(name, cfg)
    if len(seeds) > 1:
        return run_recipe_seeds(
            cfg,
            seeds,
            lambda seed_cfg: main(name, seed_cfg),
            command=f"experiment {name}",
            headline=seed_headline,
            seed_controls=f"{EXPERIMENTS[name].question} {SEED_CONTROLS}"
            + (ORDER_SEEDS if name == "data-order" else ""),
            config={"experiment": name, **config_dict(cfg)},
        )
    out = Path(cfg.run.out)
    run = Run.open(out, overwrite=cfg.run.overwrite, resume=cfg.run.resume, command=f"experiment {name}")
    # Resuming a finished experiment only re-reads it: the wall time of the work stays the one it took.
    earlier_wall = read_json(out / "summary.json")["wall_seconds"] if run.is_finished else 0.0
    recorded = {"experiment": name, **config_dict(cfg)}
    write_json(out / "experiment.json", recorded)
    run.commit()  # the experiment has started: an older one that --overwrite kept aside can go
    base_cfg, description = prepare_base_model(cfg.model, out)
    ctx = Context(
        out=out,
        model=base_cfg,
        data=cfg.data,
        train=cfg.train,
        eval=cfg.eval,
        exp=cfg.exp,
        resume=cfg.run.resume,
        accelerator=build_accelerator(cfg.train),
    )
    experiment = EXPERIMENTS[name]
    outcome = experiment.run(ctx)
    summary = {
        "experiment": name,
        "question": experiment.question,
        "model": description,
        "data": cfg.exp.domains if name == "domain" else cfg.data.data,
        "rows": outcome.rows,
        **outcome.facts,
        "notes": outcome.notes,
        "variants": sorted(p.name for p in (out / "runs").iterdir()),
        "wall_seconds": earlier_wall or run.wall_seconds(),
    }
    write_experiment_report(out, experiment.report, summary=summary, recorded=recorded)
    write_json(out / "summary.json", summary)  # written last: its presence marks the experiment finished
    print(f"{name}: report {out / 'report.html'}")
    return summary


def row_label(row: dict) -> str:
    """A row of any experiment's table by what it varies: its variant (and epoch), or its domains."""
    if "variant" in row:
        return f"{row['variant']} epoch {row['epoch']}" if "epoch" in row and "lr" in row else row["variant"]
    return " → ".join(str(row[k]) for k in ("train_domain", "eval_domain") if k in row)


def seed_headline(summary: dict) -> dict[str, dict[str, float]]:
    """What ``--seeds`` averages: every measured number of every row (by :func:`row_label`) and the
    experiment's numeric facts (e.g. data-order's mean pairwise disagreement)."""
    rows = {row_label(row): numbers(row, set(row) - SETTINGS) for row in summary["rows"]}
    facts = numbers(summary, set(summary) - {"wall_seconds", "positions", "to_loss"})
    return {**rows, **({"facts": facts} if facts else {})}


def rewrite_report(out: str | Path) -> Path:
    """Re-render a finished experiment's report (``hyperfit report`` on an experiment directory) from its
    summary.json, experiment.json and variant runs; nothing is loaded or retrained."""
    recorded = read_json(Path(out) / "experiment.json")
    if recorded.get("experiment") not in EXPERIMENTS:
        raise HyperfitError(f"{out}/experiment.json names no known experiment; rerun the experiment.")
    return write_experiment_report(out, EXPERIMENTS[recorded["experiment"]].report, recorded=recorded)


USAGE = """usage: hyperfit experiment NAME [fit-text options] [experiment options] --out DIR

experiments (each writes DIR/summary.json, DIR/report.md, DIR/report.html and one run per variant in DIR/runs/):
  data-size   TTR vs training-set size N with the number of updates held fixed     (--sizes, --updates)
  data-order  the same data in different orders, and Shuffle-1: top-1 agreement   (--orders, --shuffle_one)
  domain      train on each domain, evaluate on every domain                        (--domains)
  lr-epochs   learning rate × epochs grid                                           (--lrs, --epoch_grid)
  early-stop  an early-stopped fine-tune vs the full hyperfit                      (--early_stop_epoch)
  which-layers  full vs last block vs embeddings+head vs LoRA, equal updates   (--lora_layers, --lora_rank, --lora_lr)
                and, with --to_loss X, each trained to train loss < X           (--to_loss_lr, --to_loss_epochs)

--preset cpu (default) is sized for 2 CPU cores (6-12 minutes each there); --preset paper is the paper's scale.
--seeds 0,1,2 repeats the whole experiment per seed into DIR/seed_<s>/ and reports mean ± sd across seeds.
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
    cfg = None
    try:
        cfg = parse_recipe_config(
            ExperimentRecipeConfig, rest, presets=PRESETS, prog=f"hyperfit experiment {name}"
        )
        if cfg.run.out == RunConfig().out:
            cfg.run = replace(cfg.run, out=f"runs/experiments/{name}")
        main(name, cfg)
    except KeyboardInterrupt:
        undo_unstarted_runs()
        close_progress_bars()
        print(interrupted_message(cfg.run.out if cfg is not None else None), file=sys.stderr)
        return 130
    except HyperfitError as err:
        undo_unstarted_runs()
        close_progress_bars()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:
        undo_unstarted_runs()  # even a traceback loses no earlier experiment
        raise
    return 0
