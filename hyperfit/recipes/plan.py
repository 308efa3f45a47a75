"""`hyperfit plan`: will this hyperfitting run fit, on how many GPUs, with which accelerate config?

``hyperfit plan --model meta-llama/Llama-3.1-8B --gpus 8 --gpu_memory_gb 80 --strategy fsdp`` prints the memory per
GPU (weights, gradients, Adam state, activations, peak), whether it fits, the accelerate config and the launch
command; when it does not fit, one sentence says what would (and the command exits 2). Estimates follow
``hyperfit.common.plan``; they are checked against measured peaks on CPU (tests/test_plan.py) and on a GPU
(scripts/gpu_check.sh).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from hyperfit.common.config import parse_config
from hyperfit.common.plan import GIB, STRATEGIES, USABLE, Estimate, ModelShape, estimate, fmt_gib, load_shape
from hyperfit.common.runs import HyperfitError

CONFIG_FILES = {
    "one": "configs/accelerate/one_gpu.yaml",
    "ddp": "configs/accelerate/ddp.yaml",
    "fsdp": "configs/accelerate/fsdp.yaml",
    "zero3": "configs/accelerate/zero3.yaml",
}


@dataclass
class PlanConfig:
    """The run to size."""

    model: str = field(
        default="TinyLlama/TinyLlama_v1.1",
        metadata={
            "help": "Hub id (network or cache), local config.json / model directory, or a count: 8e9, 7B."
        },
    )
    gpus: int = field(default=1, metadata={"help": "GPUs (processes) on the machine."})
    gpu_memory_gb: float = field(
        default=80.0, metadata={"help": "Memory of one GPU in GB (GiB, as nvidia-smi)."}
    )
    strategy: str = field(default="ddp", metadata={"help": "ddp (one GPU when --gpus 1), fsdp or zero3."})
    seq_len: int = field(default=256, metadata={"help": "Tokens per training block (paper: 256)."})
    batch_size: int = field(default=8, metadata={"help": "Global batch per optimizer step (paper: 8)."})
    micro_batch_size: int | None = field(
        default=None, metadata={"help": "Per-GPU forward batch; unset = batch_size / gpus."}
    )
    precision: str = field(default="bf16", metadata={"help": "bf16 (autocast, float32 weights) or fp32."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward."}
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise HyperfitError(f"--strategy {self.strategy!r} is unknown; use ddp, fsdp or zero3.")
        if self.gpus < 1 or self.gpu_memory_gb <= 0 or self.seq_len < 1 or self.batch_size < 1:
            raise HyperfitError("--gpus, --gpu_memory_gb, --seq_len and --batch_size must be positive.")
        if self.precision not in ("bf16", "fp32"):
            raise HyperfitError(f"--precision {self.precision!r} is unknown; use bf16 or fp32.")


def micro_batch(cfg: PlanConfig, gpus: int) -> int:
    return cfg.micro_batch_size or max(1, cfg.batch_size // gpus)


def size(shape: ModelShape, cfg: PlanConfig, *, strategy: str, gpus: int, micro: int, checkpointing: bool):
    return estimate(
        shape,
        strategy=strategy,
        gpus=gpus,
        seq_len=cfg.seq_len,
        micro_batch_size=micro,
        precision=cfg.precision,
        gradient_checkpointing=checkpointing,
    )


def what_fits(shape: ModelShape, cfg: PlanConfig) -> str | None:
    """The smallest change that fits, tried in order of cost: gradient checkpointing, micro batch 1, FSDP on these
    GPUs, then FSDP on more GPUs of this size. None when nothing up to 512 GPUs does."""
    budget = USABLE * cfg.gpu_memory_gb * GIB
    micro = micro_batch(cfg, cfg.gpus)
    tries = [
        (cfg.strategy, cfg.gpus, micro, True, "with --gradient_checkpointing"),
        (cfg.strategy, cfg.gpus, 1, True, "with --gradient_checkpointing and --micro_batch_size 1"),
        ("fsdp", cfg.gpus, micro, False, f"with --strategy fsdp on {cfg.gpus} GPUs"),
        (
            "fsdp",
            cfg.gpus,
            1,
            True,
            f"with fsdp, --gradient_checkpointing and micro batch 1 on {cfg.gpus} GPUs",
        ),
    ]
    gpus = cfg.gpus
    while gpus < 512:
        gpus *= 2
        tries.append(
            (
                "fsdp",
                gpus,
                micro_batch(cfg, gpus),
                True,
                f"with fsdp and gradient checkpointing on {gpus} GPUs",
            )
        )
    for strategy, n, m, checkpointing, words in tries:
        if size(shape, cfg, strategy=strategy, gpus=n, micro=m, checkpointing=checkpointing).peak <= budget:
            return words
    return None


def launch_command(shape: ModelShape, cfg: PlanConfig, micro: int) -> tuple[str, str]:
    """(accelerate config file, launch command) for this plan."""
    config = CONFIG_FILES["one"] if cfg.strategy == "ddp" and cfg.gpus == 1 else CONFIG_FILES[cfg.strategy]
    image = shape.model_type == "imagegpt"
    script, flag = ("scripts/fit_image.py", "--prior") if image else ("scripts/fit_text.py", "--model")
    parts = [
        f"accelerate launch --config_file {config} --num_processes {cfg.gpus} {script}",
        f"{flag} {cfg.model}",
        f"--batch_size {cfg.batch_size} --micro_batch_size {micro} --precision {cfg.precision}",
    ]
    if not image:
        parts.append(f"--block_len {cfg.seq_len}")
    if cfg.gradient_checkpointing:
        parts.append("--gradient_checkpointing true")
    return config, " ".join(parts) + " --out runs/..."


def plan(cfg: PlanConfig) -> dict:
    """The plan as data: shape, bytes per GPU, whether it fits, what would, config file and command."""
    shape = load_shape(cfg.model)
    micro = micro_batch(cfg, cfg.gpus)
    if cfg.batch_size % (micro * cfg.gpus):
        raise HyperfitError(
            f"--batch_size {cfg.batch_size} cannot be split into micro batches of {micro} on {cfg.gpus} GPUs; "
            "choose a batch that is a multiple of micro batch × GPUs."
        )
    bytes_ = size(
        shape,
        cfg,
        strategy=cfg.strategy,
        gpus=cfg.gpus,
        micro=micro,
        checkpointing=cfg.gradient_checkpointing,
    )
    budget = USABLE * cfg.gpu_memory_gb * GIB
    fits = bytes_.peak <= budget
    config, command = launch_command(shape, cfg, micro)
    return {
        "model": shape.description,
        "params": shape.params,
        "layers": shape.layers,
        "hidden": shape.hidden,
        "micro_batch_size": micro,
        "accumulation": cfg.batch_size // (micro * cfg.gpus),
        "bytes_per_gpu": {**vars(bytes_), "peak": bytes_.peak},
        "budget": budget,
        "fits": fits,
        "what_fits": None if fits else what_fits(shape, cfg),
        "config_file": config,
        "command": command,
    }


def render(cfg: PlanConfig, result: dict) -> str:
    b: Estimate | dict = result["bytes_per_gpu"]
    lines = [
        f"model       {result['model']}: {result['params'] / 1e9:.2f}B parameters, {result['layers']} layers × "
        f"{result['hidden']}",
        f"run         {cfg.strategy} on {cfg.gpus} × {cfg.gpu_memory_gb:g} GB, {cfg.precision}, sequence {cfg.seq_len}, "
        f"batch {cfg.batch_size} = micro {result['micro_batch_size']} × {cfg.gpus} GPUs × "
        f"{result['accumulation']} accumulation, gradient checkpointing {'on' if cfg.gradient_checkpointing else 'off'}",
        "",
        "| per GPU | memory |",
        "|---|---|",
        *(f"| {k} | {fmt_gib(b[k])} |" for k in ("weights", "gradients", "optimizer", "activations")),
        f"| peak (weights + optimizer + max(activations, 2 × gradients)) | {fmt_gib(b['peak'])} |",
        f"| usable ({USABLE:.0%} of the GPU) | {fmt_gib(result['budget'])} |",
        "",
        f"fits: {'yes' if result['fits'] else 'no'}",
        f"accelerate config: {result['config_file']}",
        f"launch: {result['command']}",
    ]
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    try:
        (cfg,) = parse_config((PlanConfig,), argv, prog="hyperfit plan")
        result = plan(cfg)
    except HyperfitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(cfg, result))
    if not result["fits"]:
        needs = fmt_gib(result["bytes_per_gpu"]["peak"])
        fix = (
            f"it fits {result['what_fits']}" if result["what_fits"] else "nothing up to 512 such GPUs fits it"
        )
        print(
            f"error: {cfg.model} needs about {needs} per GPU with {cfg.strategy} on {cfg.gpus} × "
            f"{cfg.gpu_memory_gb:g} GB; {fix}.",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
