"""Sharded training through accelerate: FSDP2 and DeepSpeed ZeRO-3 beside plain DDP, with one set of calls.

What changes when the model is sharded (the parameters of a 7B-70B model do not fit on one GPU with their Adam
state): the optimizer must meet the model where the sharding wants it; every process must take part in every
forward pass (evaluation included), since each holds only a shard; checkpoints are written by every process; and
the final model has to be gathered before it can be saved as one safetensors model. The strategy is chosen by
the ``accelerate launch --config_file`` file (``configs/accelerate/``), never by hyperfit's own flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from hyperfit.common.runs import HyperfitError


def restore_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Turn FSDP back on where accelerate silently replaced it by DDP: processes on CPUs (gloo).

    ``accelerate launch --config_file fsdp.yaml`` with ``ACCELERATE_USE_CPU=1`` starts plain ``MULTI_CPU``
    processes, although torch's ``fully_shard`` shards over gloo as well. Restoring the plugin makes the CPU run
    take exactly the path a GPU run takes, which is how the sharded path is tested without GPUs.
    """
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables accelerate launch exported
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def sharding(accelerator: Accelerator) -> str:
    """``"fsdp"``, ``"zero3"`` or ``"none"`` (one process, or DDP: every process holds the whole model)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return "fsdp"
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage")
        return "zero3" if stage == 3 else "none"
    return "none"


def check_wrappable(model: torch.nn.Module, accelerator: Accelerator) -> None:
    """Refuse, in one sentence, an FSDP configuration that cannot shard this model block by block."""
    if sharding(accelerator) == "fsdp":
        plugin = accelerator.state.fsdp_plugin
        check_fsdp_wrap(model, plugin.transformer_cls_names_to_wrap, version=plugin.fsdp_version)


def check_fsdp_wrap(model: torch.nn.Module, class_names: list[str] | None, *, version: int = 2) -> None:
    """The FSDP config's block classes (``fsdp_transformer_layer_cls_to_wrap``, or the model's own
    ``_no_split_modules`` when unset) must exist in ``model``, and the FSDP version must be 2."""
    if version != 2:
        raise HyperfitError(
            f"the accelerate config asks for FSDP version {version}; hyperfit runs FSDP2 only: use "
            "configs/accelerate/fsdp.yaml (fsdp_version: 2)."
        )
    classes = {type(m).__name__ for m in model.modules()}
    wanted = class_names or list(getattr(model, "_no_split_modules", None) or [])
    missing = [name for name in wanted if name not in classes]
    if missing or not wanted:
        stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
        blocks = sorted({type(block).__name__ for stack in stacks for block in stack})
        raise HyperfitError(
            f"FSDP cannot wrap {type(model).__name__} block by block: "
            + (f"it has no {', '.join(missing)} layers" if missing else "it names no transformer block class")
            + "; set fsdp_transformer_layer_cls_to_wrap in the accelerate config to its block class "
            f"({', '.join(blocks) or 'none found'})."
        )


def prepare_model_and_optimizer(
    model: torch.nn.Module,
    make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    accelerator: Accelerator,
    *,
    micro_batch_size: int,
    accumulation: int,
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Place/shard ``model`` and build its optimizer where the strategy needs it; return both prepared.

    FSDP2: accelerate takes model and optimizer together and re-points the optimizer at the sharded parameters
    before its first step, so Adam's state is only ever created for the local shard. ZeRO-3: DeepSpeed partitions
    both together. DDP and one process: the model is moved to the device, then the optimizer is built on it.
    """
    mode = sharding(accelerator)
    check_wrappable(model, accelerator)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        if accumulation > 1:
            raise HyperfitError(
                f"under DeepSpeed the optimizer steps inside every backward, so accumulation ({accumulation} "
                "micro-batches per step) is not possible; pass --micro_batch_size = batch_size / processes."
            )
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            micro_batch_size
        )
    if mode == "none" and accelerator.distributed_type != DistributedType.DEEPSPEED:
        model.to(accelerator.device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    return accelerator.prepare(model, optimizer)


def prepare_for_inference(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """Place a second model (the reloaded original) like the trained one, for decoding only.

    FSDP2: sharded with the same plugin (every process must then run each forward). Otherwise: moved whole to
    the device (under ZeRO-3 this needs the model to fit on one GPU for inference; not run by the tests).
    """
    if sharding(accelerator) == "fsdp":
        from accelerate.utils import fsdp2_prepare_model

        check_wrappable(model, accelerator)
        return fsdp2_prepare_model(accelerator, model)
    return model.to(accelerator.device)


def every_rank_evaluates(accelerator: Accelerator) -> bool:
    """True when a forward pass needs every process (a sharded model): evaluation then runs on all of them,
    each decoding the same prompts with the same weights, and only the main process writes."""
    return sharding(accelerator) != "none"


def evaluation_model(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """The module to evaluate: the sharded model itself, or the plain model inside a DDP wrapper."""
    return model if every_rank_evaluates(accelerator) else accelerator.unwrap_model(model)


def save_full_model(model: torch.nn.Module, directory: str | Path, accelerator: Accelerator) -> None:
    """Gather the full state dict (every process takes part) and save it on the main process as safetensors
    that ``from_pretrained`` loads, whatever the strategy. Call on every process."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        inner = accelerator.unwrap_model(model)
        # fully_shard renames the class (FSDPLlamaForCausalLM); the saved config must name the model's own.
        architecture = type(inner).__name__.removeprefix("FSDP")
        inner.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        config_file = Path(directory) / "config.json"
        if architecture != type(inner).__name__ and config_file.exists():
            import json

            config = json.loads(config_file.read_text())
            config["architectures"] = [architecture]
            config_file.write_text(json.dumps(config, indent=2) + "\n")
    accelerator.wait_for_everyone()
