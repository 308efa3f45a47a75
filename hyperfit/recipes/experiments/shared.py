"""What every experiment shares: the configuration and presets, the run context, held-out evaluation, tables.

Scale. ``--preset cpu`` (the default) is sized for 2 CPU cores: SmolLM2-135M, Lee news, 32 blocks × 64 tokens,
batch 8, 16 held-out prompts, 64 greedy tokens; the GGUF file is de-quantised once into float32 safetensors and
every variant reloads those (measured wall times per experiment are in the README). ``--preset paper`` is the
paper's recipe (2,000 × 256 tokens, lr 1e-6, 20 epochs, 300 prompts × 96 tokens, 5,000 updates for data-size);
every size is also a flag (``--model``, ``--data``, ``--n_train``, ``--block_len``, ``--sizes``, ...). Variants
run one after another in one process (no ``accelerate launch``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator

from hyperfit.common.config import EvalConfig, RunConfig, TrainConfig, config_parts
from hyperfit.common.evaluate import collect_token_stats, generation_stats, teacher_forced_stats
from hyperfit.common.report import Cell, Table
from hyperfit.common.report.sections import recorded_interval
from hyperfit.common.runs import HyperfitError, read_json, write_json
from hyperfit.common.seeds import SeedsConfig
from hyperfit.recipes import fit_text
from hyperfit.recipes.fit_text import FitTextConfig
from hyperfit.text.data import TextDataConfig
from hyperfit.text.model import ModelConfig, eos_ids, load_causal_lm


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
    orders: str = field(
        default="0,1,2",
        metadata={
            "help": "data-order: one data order per entry, each the training seed of its run (comma list, ≥ 2 "
            "distinct); with --seed s each order k trains with seed 1000 s + k."
        },
    )
    repeat_first_seed: bool = field(
        default=False,
        metadata={"help": "data-order: train the first order twice to measure run-to-run nondeterminism."},
    )
    shuffle_one: bool = field(
        default=True,
        metadata={
            "help": "data-order: also train the first order with one pair of training blocks swapped (the paper's "
            "Shuffle-1: the first blocks of its first two batches in epoch 1 trade places in every epoch)."
        },
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
    lora_layers: str = field(
        default="last:5",
        metadata={"help": "which-layers: where the LoRA variant puts adapters (a --train_layers spec)."},
    )
    lora_rank: int = field(
        default=16, metadata={"help": "which-layers: rank of the LoRA variant (alpha = 2 × rank)."}
    )
    lora_lr: float = field(
        default=4e-4,
        metadata={"help": "which-layers: learning rate of the LoRA variant (adapters start at 0)."},
    )
    to_loss: float | None = field(
        default=None,
        metadata={
            "help": "which-layers: also train every variant but full until its epoch train loss is below this "
            "(rows <variant>@loss, at --to_loss_lr, at most --to_loss_epochs epochs), so that the variants are "
            "compared at equal training loss as well as at equal updates; unset = equal updates only."
        },
    )
    to_loss_lr: float = field(
        default=1e-3, metadata={"help": "which-layers: learning rate of the --to_loss rows (LoRA included)."}
    )
    to_loss_epochs: int = field(
        default=40, metadata={"help": "which-layers: most epochs a --to_loss row trains before it gives up."}
    )
    keep_weights: bool = field(
        default=False,
        metadata={"help": "Keep each variant's model/ and checkpoints/ (deleted once read, to save disk)."},
    )


@dataclass
class ExperimentRecipeConfig:
    """Everything ``hyperfit experiment NAME`` takes: the fit-text settings every variant shares, and what varies."""

    model: ModelConfig = field(
        default_factory=ModelConfig, metadata={"help": "The base model of every variant."}
    )
    data: TextDataConfig = field(
        default_factory=TextDataConfig, metadata={"help": "Training and held-out text."}
    )
    train: TrainConfig = field(
        default_factory=TrainConfig, metadata={"help": "How each variant is hyperfitted."}
    )
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "What each evaluation measures."})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "The experiment directory."})
    exp: ExperimentConfig = field(
        default_factory=ExperimentConfig, metadata={"help": "What the variants vary."}
    )
    seeds: SeedsConfig = field(
        default_factory=SeedsConfig, metadata={"help": "Repeat the whole experiment over training seeds."}
    )


CONFIGS = config_parts(ExperimentRecipeConfig)

PRESETS = {
    # fit-text's cpu-demo (16 Lee blocks of 64 tokens, batch 2, lr 1e-4, 6 epochs = 48 updates, 32 held-out
    # prompts × 96 greedy tokens), so that 32 prompts give intervals narrow enough to read and every experiment
    # finishes in minutes where bf16 is not native (measured wall times per experiment in the README). Held-out
    # evaluations every 2 epochs give early-stop its candidates.
    "cpu": {
        **{k: v for k, v in fit_text.PRESETS["cpu-demo"].items() if k != "out"},
        "eval_every_epochs": 2,
        "sizes": "8,16,32",
        "updates": 48,
        "lrs": "2.5e-5,1e-4",
        "epoch_grid": "2,4,6",
    },
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
    """What one experiment measured: one row per variant for summary.json, derived facts and notes. Its report
    is built from the summary alone (each experiment's ``*_report``), so it can be rewritten from disk."""

    rows: list[dict]
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
        summary = fit_text.main(
            FitTextConfig(model=self.model, data=data or self.data, train=train, eval=evaluation, run=run_cfg)
        )
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
    the last ``ttr_window`` generated ids) and teacher-forced loss, perplexity, entropy, top-1 on ``eval_ids``,
    each with its 95 % interval over prompts (``<name>_ci``)."""
    gen, _ = generation_stats(
        model,
        eval_ids[:, : eval_cfg.prompt_tokens],
        max_new_tokens=eval_cfg.max_new_tokens,
        min_new_tokens=eval_cfg.min_new_tokens,
        ttr_window=eval_cfg.ttr_window,
        batch_size=eval_cfg.eval_batch_size,
        eos_id=eos_id,
    )
    held_out = teacher_forced_stats(model, eval_ids, batch_size=eval_cfg.eval_batch_size)
    gen.pop("units"), held_out.pop("units")  # per-prompt parts: not kept in the cached figures
    return {**gen, **held_out}


def top1_ids(model, *, blocks: torch.Tensor, batch_size: int, eos_id=None) -> torch.Tensor:
    """The argmax id at every position of ``blocks[n, t]`` (n × (t-1) positions, flattened)."""
    return collect_token_stats(model, blocks, batch_size=batch_size)["argmax"]


def _metrics(record: dict) -> dict:
    """The row metrics of an evaluation, each with its recorded 95 % interval (``<name>_ci``) when it has one."""
    return {
        **{k: record.get(k) for k in METRICS},
        **{f"{k}_ci": record[f"{k}_ci"] for k in METRICS if f"{k}_ci" in record},
    }


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


def metric_table(rows: list[dict], columns: list[tuple[str, str, str]], *, caption: str = "") -> Table:
    """One table row per dict: ``columns`` are (key, header, format); a missing value shows "–", a value with a
    recorded ``<key>_ci`` its 95 % interval."""
    return Table(
        [label for _, label, _ in columns],
        [[Cell(r.get(key), ci=recorded_interval(r, key), fmt=fmt) for key, _, fmt in columns] for r in rows],
        caption=caption,
    )
