"""What `hyperfit reproduce` takes: a scale (cpu or paper) whose settings every flag may override.

The cpu scale was chosen by measurement on 2 CPU cores (docs/results/reproduce.md says how); the paper scale is the
paper's recipe (2,000 × 256-token blocks, Adam lr 1e-6, batch 8, 20 epochs) with its models, for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from hyperfit.common.runs import HyperfitError
from hyperfit.common.tuning import parse_families


@dataclass
class ReproduceConfig:
    """Everything ``hyperfit reproduce`` takes; unset values come from ``--scale``."""

    scale: str = field(
        default="cpu",
        metadata={"help": "cpu (2 CPU cores, ≤ 90 min) or paper (the paper's models and recipe)."},
    )
    out: str = field(default="runs/reproduce", metadata={"help": "The reproduction's directory."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted reproduction."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a finished reproduction."})
    model: str | None = field(default=None, metadata={"help": "The model to hyperfit (scale's default)."})
    larger: str | None = field(
        default=None,
        metadata={"help": "A larger original of another family, decoded but not trained ('' = none)."},
    )
    data: str | None = field(default=None, metadata={"help": "Training corpus (lee, wiki, FILE, hf:NAME)."})
    eval_data: str | None = field(
        default=None,
        metadata={
            "help": "Held-out domains, comma list (the first may be --data's own corpus, never its texts)."
        },
    )
    n_train: int | None = field(default=None, metadata={"help": "Training blocks."})
    block_len: int | None = field(default=None, metadata={"help": "Tokens per training block."})
    epochs: int | None = field(default=None, metadata={"help": "Training epochs."})
    batch_size: int | None = field(default=None, metadata={"help": "Training batch size."})
    lr: float | None = field(default=None, metadata={"help": "Learning rate."})
    n_dev: int | None = field(
        default=None,
        metadata={"help": "Development prompts per domain (tuning only, never reported as test)."},
    )
    n_test: int | None = field(default=None, metadata={"help": "Test prompts per domain."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Tokens generated per prompt."})
    prompt_tokens: int = field(default=32, metadata={"help": "Context tokens per prompt (paper: 32)."})
    trials: int | None = field(
        default=None, metadata={"help": "Trials per tuned sampler family (the same for every family)."}
    )
    samplers: str | None = field(
        default=None,
        metadata={
            "help": "Sampler families tuned for the original: top_p, min_p, typical, temperature, eta, epsilon."
        },
    )
    hyperfitted_sampler: str | None = field(
        default=None, metadata={"help": "The family tuned for the hyperfitted model ('' = none)."}
    )
    decoders: str | None = field(
        default=None,
        metadata={
            "help": "Fixed-setting decoders also run for the original (e.g. contrastive,dola; '' = none)."
        },
    )
    image: bool | None = field(default=None, metadata={"help": "Also hyperfit the image prior (fit-image)."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "Prompts per decoding batch."})
    seed: int = field(default=0, metadata={"help": "Training seed; also the seed of every sampler."})

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise HyperfitError(
                f"--scale {self.scale!r} is unknown; use --scale cpu (2 CPU cores) or --scale paper (GPUs)."
            )


SCALES: dict[str, dict] = {
    # 2 CPU cores. SmolLM2-135M on 32 Lee news blocks of 128 tokens (the earlier 16 × 64-token demo learns too
    # little to continue past 96 tokens); Gemma 3 270M base as the larger original of another family. Three
    # held-out domains of which two were never trained on; 8 development + 16 test prompts each, 256 new tokens.
    "cpu": dict(
        model="smollm2-135m-gguf",
        larger="gemma3-270m-gguf",
        data="lee",
        eval_data="lee,wiki,newsgroups",
        n_train=32,
        block_len=128,
        epochs=10,
        batch_size=4,
        lr=1e-4,
        n_dev=8,
        n_test=16,
        max_new_tokens=256,
        trials=3,
        samplers="top_p,min_p,typical,temperature,eta,epsilon",
        hyperfitted_sampler="min_p",
        decoders="contrastive,dola",
        image=True,
        eval_batch_size=24,
    ),
    # The paper (§1-2): TinyLlama 1.1B hyperfitted on 2,000 × 256 tokens, Adam lr 1e-6, batch 8, 20 epochs;
    # 100 test texts per domain; Llama 3.1 8B as the larger original. --data and --eval_data must name the
    # corpora (the paper: Fiction-Stories for training; fiction, WikiText-103 and BBC News held out).
    "paper": dict(
        model="TinyLlama/TinyLlama_v1.1",
        larger="meta-llama/Llama-3.1-8B",
        data=None,
        eval_data=None,
        n_train=2000,
        block_len=256,
        epochs=20,
        batch_size=8,
        lr=1e-6,
        n_dev=20,
        n_test=100,
        max_new_tokens=256,
        trials=8,
        samplers="top_p,min_p,typical,temperature,eta,epsilon",
        hyperfitted_sampler="min_p",
        decoders="contrastive,dola",
        image=False,
        eval_batch_size=32,
    ),
}


def resolve(cfg: ReproduceConfig) -> ReproduceConfig:
    """``cfg`` with every unset value taken from its scale, checked: one sentence for each bad input."""
    scale = SCALES[cfg.scale]
    values = {f.name: scale[f.name] for f in fields(cfg) if getattr(cfg, f.name) is None and f.name in scale}
    out = replace(cfg, **values)
    if not out.data or not out.eval_data:
        raise HyperfitError(
            f"--scale {cfg.scale} needs --data (the training corpus; the paper: 2,000 Fiction-Stories texts as a "
            ".jsonl or hf:NAME) and --eval_data (the held-out domains; the paper: fiction, WikiText-103, BBC News)."
        )
    for name in (
        "n_train",
        "block_len",
        "epochs",
        "batch_size",
        "n_dev",
        "n_test",
        "max_new_tokens",
        "trials",
        "prompt_tokens",
    ):
        if getattr(out, name) < 1:
            raise HyperfitError(f"--{name} must be ≥ 1, got {getattr(out, name)}; fix --{name}.")
    parse_families(out.samplers)
    if out.hyperfitted_sampler:
        parse_families(out.hyperfitted_sampler)
    return out
