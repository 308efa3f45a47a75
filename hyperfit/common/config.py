"""Typed, flat configuration shared by every recipe: training, evaluation and the run directory.

Defaults are the paper's recipe (Carlsson et al. 2025, §3: Adam, lr 1e-6, no weight decay, batch 8, 20 epochs).
Layering, lowest to highest priority: dataclass defaults < ``--preset`` < ``--config file.yaml`` < CLI flags.
"""

from __future__ import annotations

import dataclasses
import errno
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hyperfit.common.runs import HyperfitError, interrupted_message, undo_unstarted_runs, write_failure


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
    swap_blocks: str = field(
        default="",
        metadata={
            "help": "i,j: exchange the places of training blocks i and j in every epoch's order (the order then "
            "differs in exactly two positions: the paper's Shuffle-1); '' = none."
        },
    )
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
    train_layers: str = field(
        default="all",
        metadata={
            "help": "Which parameters to train, the rest frozen: all, last:K / first:K (repeated blocks), "
            "embeddings, head, norm, or a regex of parameter names (comma list; re:REGEX for one with commas)."
        },
    )
    lora_r: int = field(
        default=0,
        metadata={"help": "LoRA rank (peft) on the linear layers --train_layers selects; 0 = no LoRA."},
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator (scale = alpha / r)."})
    lora_targets: str = field(
        default="",
        metadata={
            "help": "LoRA target modules by name (comma list, e.g. q_proj,v_proj); '' = every linear layer "
            "inside the blocks."
        },
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
        if self.swap_blocks:
            pair = [x.strip() for x in self.swap_blocks.split(",")]
            if len(pair) != 2 or not all(x.isdigit() for x in pair) or pair[0] == pair[1]:
                raise HyperfitError(
                    f"swap_blocks {self.swap_blocks!r} is not two different block indices; pass e.g. --swap_blocks 0,5."
                )
            self.swap_blocks = f"{int(pair[0])},{int(pair[1])}"
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise HyperfitError(
                f"lora_r must be ≥ 0 and lora_alpha > 0, got {self.lora_r} and {self.lora_alpha}; e.g. --lora_r 8."
            )
        # Values that would train in the wrong direction or divide by zero, each with the flag to fix.
        for name, value, rule in (
            ("weight_decay", self.weight_decay, "≥ 0 (0 = none, as in the paper)"),
            ("warmup_steps", self.warmup_steps, "≥ 0 (0 = no warm-up)"),
        ):
            if value < 0:
                raise HyperfitError(f"{name} must be {rule}, got {value}; fix --{name}.")
        for name, value in (
            ("max_grad_norm", self.max_grad_norm),
            ("stop_loss", self.stop_loss),
        ):
            if value is not None and not value > 0:
                raise HyperfitError(f"{name} must be positive or unset, got {value}; fix or drop --{name}.")
        for name, value in (
            ("log_every_steps", self.log_every_steps),
            ("eval_every_steps", self.eval_every_steps),
            ("checkpoint_every_epochs", self.checkpoint_every_epochs),
            ("micro_batch_size", self.micro_batch_size),
        ):
            if value is not None and value < 1:
                raise HyperfitError(f"{name} must be ≥ 1 or unset, got {value}; fix --{name}.")


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
    min_new_tokens: int = field(
        default=0,
        metadata={
            "help": "Forbid end-of-sequence ids until this many tokens are generated (0 = allowed at once); "
            "the share and length of rows that end early are reported either way."
        },
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
            "greedy, top_p, greedy_rep_penalty, min_p, typical, eta, epsilon, contrastive, dola, greedy_blocked, "
            "entropy_matched."
        },
    )
    blocker_n: int = field(default=5, metadata={"help": "Citation blocker n-gram order (paper: 5)."})
    word_finish: bool = field(
        default=False,
        metadata={
            "help": "Citation blocker lets the current word finish before blocking (needs word-start ids)."
        },
    )
    blocker_include_prompt: bool = field(
        default=True,
        metadata={
            "help": "Citation blocker: the n-1 ids it looks up may include prompt ids (false = only generated ids "
            "count, so a copy that starts inside the prompt is not blocked)."
        },
    )

    def strategy_names(self) -> list[str]:
        return [name.strip() for name in self.strategies.split(",") if name.strip()]

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_new_tokens > 4096:
            raise HyperfitError(f"max_new_tokens {self.max_new_tokens} is out of range; use 96, 128 or 256.")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise HyperfitError(
                f"min_new_tokens {self.min_new_tokens} must lie between 0 and max_new_tokens {self.max_new_tokens}."
            )
        if self.prompt_tokens < 1:
            raise HyperfitError("prompt_tokens must be ≥ 1; the paper uses 32.")
        for name, value in (
            ("ttr_window", self.ttr_window),
            ("eval_batch_size", self.eval_batch_size),
            ("blocker_n", self.blocker_n),
        ):
            if value < 1:
                raise HyperfitError(f"{name} must be ≥ 1, got {value}; fix --{name}.")
        from hyperfit.common.compare import STRATEGIES  # here, not at import: config stays free of torch

        unknown = [name for name in self.strategy_names() if name not in STRATEGIES]
        if unknown:
            raise HyperfitError(
                f"--strategies names the unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}."
            )


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
    allow_changes: str = field(
        default="",
        metadata={
            "help": "With --resume: comma list of settings that may differ from the run's config.json (e.g. "
            "epochs,eval_every_epochs); only schedule, cadence and decoding settings qualify. Recorded in the run."
        },
    )
    report_to: str = field(
        default="none",
        metadata={
            "help": "Also send metrics to these accelerate trackers (comma list: tensorboard, wandb, mlflow, ...); "
            "metrics.jsonl stays the record. none = off."
        },
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
    # allow_abbrev=False: argparse would otherwise read `--epoch 3` as `--epochs 3` and run silently.
    parser = HfArgumentParser(dataclass_types, prog=prog, allow_abbrev=False)
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
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise HyperfitError(
                f"config file {path} is not valid YAML{where} ({getattr(err, 'problem', None) or err}); "
                "write one `field: value` per line."
            ) from err
        if not isinstance(loaded, dict):
            raise HyperfitError(
                f"config file {path} must hold a mapping of field: value; found {type(loaded).__name__}."
            )
        if "preset" in loaded:
            preset = loaded.pop("preset")
            if preset not in presets:
                raise HyperfitError(
                    f"config file {path} names the unknown preset {preset!r}; use one of "
                    f"{', '.join(sorted(presets)) or 'none (this command has no presets)'}."
                )
            layered = {**presets[preset], **layered}
        unknown = sorted(set(loaded) - set(known))
        if unknown:
            raise HyperfitError(
                f"unknown config field(s) {', '.join(unknown)} in {path}; see --help for the accepted names."
            )
        for name, value in loaded.items():
            loaded[name] = _typed(name, value, known[name], path)
        layered.update(loaded)
    unknown = sorted(set(layered) - set(known))
    if unknown:
        raise HyperfitError(
            f"unknown config field(s) {', '.join(unknown)}; see --help for the accepted names."
        )
    parser.set_defaults(**layered)
    namespace, extra = parser.parse_known_args(argv)
    if extra:
        raise HyperfitError(unknown_argument_message(extra, parser))
    values = vars(namespace)
    return tuple(
        cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.init}) for cls in dataclass_types
    )


def unknown_argument_message(extra: list[str], parser) -> str:
    """One sentence for arguments no flag takes, naming the closest flag of the first unknown one."""
    import difflib

    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    first = next((a for a in extra if a.startswith("-")), extra[0])
    close = difflib.get_close_matches(first.split("=")[0], flags, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return (
        f"unknown argument {first!r} ({hint}flags are never abbreviated); see --help for the accepted flags."
    )


def _typed(name: str, value: Any, owner: tuple[type, dataclasses.Field], path: Path) -> Any:
    """A YAML value checked against its field's type (flags are parsed by type; YAML values would not be)."""
    cls, _ = owner
    hint = typing.get_type_hints(cls)[name]
    allowed = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    if value is None and type(None) in typing.get_args(hint):
        return value
    for kind in allowed:
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. `sizes: 8` for a comma list
        if kind is str and isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            return ",".join(str(v) for v in value)  # `strategies: [greedy, top_p]` is the comma list
        if kind is int and isinstance(value, bool):
            continue
        if isinstance(value, kind):
            return value
    expected = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise HyperfitError(
        f"config file {path} sets {name}: {value!r}, but {name} must be {expected}; fix that line."
    )


def config_parts(config_cls: type) -> tuple[type, ...]:
    """The part types of a recipe's configuration, in field order: a recipe's config (e.g. ``FitTextConfig``) is a
    dataclass whose every field is itself a config dataclass (model, data, train, eval, run). A config whose
    fields are plain values is its own single part."""
    hints = typing.get_type_hints(config_cls)
    parts = tuple(hints[f.name] for f in dataclasses.fields(config_cls))
    return parts if parts and all(dataclasses.is_dataclass(p) for p in parts) else (config_cls,)


def parse_recipe_config(
    config_cls: type,
    argv: list[str] | None = None,
    *,
    presets: dict[str, dict[str, Any]] | None = None,
    prog: str | None = None,
) -> Any:
    """``parse_config`` over the parts of ``config_cls`` (flags stay flat: ``--lr``, not ``--train.lr``), then
    one ``config_cls`` holding them."""
    parts = config_parts(config_cls)
    parsed = parse_config(parts, argv, presets=presets, prog=prog)
    return parsed[0] if parts == (config_cls,) else config_cls(*parsed)


def config_dict(*configs: Any) -> dict[str, Any]:
    """Flatten config dataclasses (or a recipe's config of configs) into one dict, as written to ``config.json``."""
    merged: dict[str, Any] = {}
    for cfg in configs:
        parts = [getattr(cfg, f.name) for f in dataclasses.fields(cfg)]
        if parts and all(dataclasses.is_dataclass(part) for part in parts):
            merged.update(config_dict(*parts))
        else:
            merged.update(dataclasses.asdict(cfg))
    return merged


def close_progress_bars() -> None:
    """Close the progress bars a failed step left open, so that the error sentence is the last line printed."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def run_recipe(
    main: Any,
    config_cls: type,
    argv: list[str] | None = None,
    *,
    prog: str,
    presets: dict[str, dict[str, Any]] | None = None,
    default_preset: str | None = None,
) -> int:
    """A recipe's command line: parse into one ``config_cls``, run ``main(cfg)``, and turn a HyperfitError into
    one ``error:`` line.

    ``default_preset`` is applied when the arguments name no ``--preset`` (a later one still wins). Returns the
    process exit status: 0, or 2 for bad input.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if default_preset and not any(a == "--preset" or a.startswith("--preset=") for a in argv):
        argv = ["--preset", default_preset, *argv]
    cfg = None
    try:
        cfg = parse_recipe_config(config_cls, argv, presets=presets, prog=prog)
        main(cfg)
    except KeyboardInterrupt:
        undo_unstarted_runs()
        close_progress_bars()
        out = getattr(getattr(cfg, "run", cfg), "out", None)
        print(interrupted_message(out), file=sys.stderr)
        return 130
    except HyperfitError as err:
        undo_unstarted_runs()
        close_progress_bars()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        undo_unstarted_runs()  # even a traceback loses no earlier run
        # A write that failed outside hyperfit's own writers (a tensor file, a checkpoint, a library cache).
        if not isinstance(err, OSError) or err.errno not in (
            errno.ENOSPC,
            errno.EDQUOT,
            errno.EACCES,
            errno.EROFS,
            errno.EPERM,
        ):
            raise
        close_progress_bars()
        print(f"error: {write_failure(err.filename or 'a file', err)}", file=sys.stderr)
        return 2
    return 0
