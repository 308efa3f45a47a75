"""Typed, flat configuration shared by every recipe: training, evaluation and the run directory.

Defaults are the paper's recipe (Carlsson et al. 2025, §3: Adam, lr 1e-6, no weight decay, batch 8, 20 epochs).
Layering, lowest to highest priority: dataclass defaults < ``--preset`` < ``--config file.yaml`` < CLI flags.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hyperfit.common.runs import HyperfitError


@dataclass
class TrainConfig:
    """How to hyperfit: optimiser, batch, precision, stopping, evaluation and checkpoint schedule."""

    lr: float = field(default=1e-6, metadata={"help": "Learning rate (constant after the optional warm-up)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay; the paper uses none."})
    optimizer: str = field(default="adam", metadata={"help": "adam or adamw (decoupled weight decay)."})
    warmup_steps: int = field(
        default=0, metadata={"help": "Linear warm-up steps; 0 = constant lr throughout."}
    )
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the gradient norm; unset = no clipping."}
    )
    batch_size: int = field(
        default=8,
        metadata={"help": "Global sequences per optimizer step, over all processes and accumulation."},
    )
    micro_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per forward pass per process; accumulation = batch_size / (micro × processes)."
        },
    )
    epochs: int = field(default=20, metadata={"help": "Maximum number of passes over the training blocks."})
    stop_loss: float | None = field(
        default=None,
        metadata={"help": "Stop early once an epoch's mean training loss (nats/token) is below this."},
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "bf16 (autocast, float32 master weights), fp32, or auto: bf16 where the device multiplies bf16 "
            "natively (GPUs, AVX-512 CPUs), else fp32. Pure bf16 would lose lr-1e-6 updates."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for initialisation, data order and sampling."})
    dropout_off: bool = field(
        default=True, metadata={"help": "Set every dropout probability to 0 while hyperfitting."}
    )
    eval_every_epochs: int = field(
        default=5, metadata={"help": "Evaluate every N epochs (also before and after)."}
    )
    eval_every_steps: int | None = field(
        default=None, metadata={"help": "Also evaluate every N optimizer steps."}
    )
    log_every_steps: int = field(
        default=1, metadata={"help": "Append a training record to metrics.jsonl every N steps."}
    )
    checkpoint_every_epochs: int | None = field(
        default=None,
        metadata={"help": "Save a resumable checkpoint every N epochs; unset = at every evaluation."},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Trade compute for activation memory."}
    )

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise HyperfitError(f"optimizer {self.optimizer!r} is unknown; use adam or adamw.")
        if self.precision not in ("auto", "bf16", "fp32", "fp16"):
            raise HyperfitError(f"precision {self.precision!r} is unknown; use auto, bf16 or fp32.")
        if self.lr <= 0:
            raise HyperfitError(f"lr must be positive, got {self.lr}; pass e.g. --lr 1e-6.")
        if self.batch_size < 1 or self.epochs < 0:
            raise HyperfitError("batch_size must be ≥ 1 and epochs ≥ 0; fix --batch_size / --epochs.")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise HyperfitError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}; "
                "choose a micro batch that divides the batch."
            )
        if self.eval_every_epochs < 1:
            raise HyperfitError("eval_every_epochs must be ≥ 1; pass a larger value to evaluate less often.")


@dataclass
class EvalConfig:
    """What every evaluation measures: greedy continuations of held-out prompts and teacher-forced sharpness."""

    prompt_tokens: int = field(
        default=32, metadata={"help": "Context length given to the model (paper: 32)."}
    )
    max_new_tokens: int = field(
        default=96, metadata={"help": "Greedy tokens generated per prompt (96/128/256)."}
    )
    ttr_window: int = field(
        default=96, metadata={"help": "TTR over the last N generated ids (prompt excluded)."}
    )
    eval_batch_size: int = field(
        default=16, metadata={"help": "Prompts / blocks per forward pass in evaluation."}
    )
    samples_shown: int = field(
        default=3, metadata={"help": "Decoded continuations kept in the report per evaluation."}
    )
    strategies: str = field(
        default="greedy,top_p,greedy_blocked,entropy_matched",
        metadata={
            "help": "After training, decode original and hyperfitted models with these (comma list; '' = skip): "
            "greedy, top_p, greedy_rep_penalty, min_p, typical, greedy_blocked, entropy_matched."
        },
    )
    blocker_n: int = field(default=5, metadata={"help": "Citation blocker n-gram order (paper: 5)."})
    word_finish: bool = field(
        default=False,
        metadata={"help": "Citation blocker lets the current word finish before blocking (text only)."},
    )

    def strategy_names(self) -> list[str]:
        return [name.strip() for name in self.strategies.split(",") if name.strip()]

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_new_tokens > 4096:
            raise HyperfitError(f"max_new_tokens {self.max_new_tokens} is out of range; use 96, 128 or 256.")
        if self.prompt_tokens < 1:
            raise HyperfitError("prompt_tokens must be ≥ 1; the paper uses 32.")


@dataclass
class RunConfig:
    """Where the run directory goes and what to do if it already exists."""

    out: str = field(default="runs/fit", metadata={"help": "Run directory to create."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing run directory."})
    resume: bool = field(
        default=False, metadata={"help": "Continue an unfinished run from its last checkpoint."}
    )
    save_model: bool = field(
        default=True, metadata={"help": "Save the hyperfitted model (safetensors) at the end."}
    )


def _fields(dataclass_types: tuple[type, ...]) -> dict[str, tuple[type, dataclasses.Field]]:
    return {f.name: (cls, f) for cls in dataclass_types for f in dataclasses.fields(cls)}


def parse_config(
    dataclass_types: tuple[type, ...],
    argv: list[str] | None = None,
    *,
    presets: dict[str, dict[str, Any]] | None = None,
    prog: str | None = None,
) -> tuple:
    """Parse ``--preset``, ``--config`` and flags into one instance of each dataclass, in the given order."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    presets = presets or {}
    parser = HfArgumentParser(dataclass_types, prog=prog)
    parser.add_argument(
        "--preset", default=None, choices=sorted(presets) or None, help="A named set of defaults."
    )
    parser.add_argument(
        "--config", default=None, help="YAML file of overrides (only what differs from defaults)."
    )
    pre, _ = parser.parse_known_args(argv)
    known = _fields(dataclass_types)
    layered: dict[str, Any] = {}
    if pre.preset:
        layered.update(presets[pre.preset])
    if pre.config:
        path = Path(pre.config)
        if not path.is_file():
            raise HyperfitError(
                f"config file {path} does not exist; pass the path of a YAML file to --config."
            )
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise HyperfitError(
                f"config file {path} must hold a mapping of field: value; found {type(loaded).__name__}."
            )
        if "preset" in loaded:
            layered = {**presets.get(loaded.pop("preset"), {}), **layered}
        layered.update(loaded)
    unknown = sorted(set(layered) - set(known))
    if unknown:
        raise HyperfitError(
            f"unknown config field(s) {', '.join(unknown)}; see --help for the accepted names."
        )
    parser.set_defaults(**layered)
    namespace, extra = parser.parse_known_args(argv)
    if extra:
        raise HyperfitError(f"unknown argument(s) {' '.join(extra)}; see --help for the accepted flags.")
    values = vars(namespace)
    return tuple(
        cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.init}) for cls in dataclass_types
    )


def config_dict(*configs: Any) -> dict[str, Any]:
    """Flatten config dataclasses into one dict, as written to ``config.json`` in the run directory."""
    merged: dict[str, Any] = {}
    for cfg in configs:
        merged.update(dataclasses.asdict(cfg))
    return merged


def run_recipe(
    main: Any,
    dataclass_types: tuple[type, ...],
    argv: list[str] | None = None,
    *,
    prog: str,
    presets: dict[str, dict[str, Any]] | None = None,
    default_preset: str | None = None,
) -> int:
    """A recipe's command line: parse, run ``main(configs)``, and turn a HyperfitError into one ``error:`` line.

    ``default_preset`` is applied when the arguments name no ``--preset`` (a later one still wins). Returns the
    process exit status: 0, or 2 for bad input.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if default_preset and not any(a == "--preset" or a.startswith("--preset=") for a in argv):
        argv = ["--preset", default_preset, *argv]
    try:
        main(parse_config(dataclass_types, argv, presets=presets, prog=prog))
    except HyperfitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
