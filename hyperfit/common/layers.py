"""Which parameters hyperfitting trains: ``--train_layers`` freezes all but a chosen subset, ``--lora_r`` puts LoRA
adapters (peft) on the chosen linear layers instead. The trainer optimises exactly the ``requires_grad``
parameters, so every choice goes through the one training loop (Li et al. 2026 place the change in the final block).

Specs (comma list; an item that is not a keyword is a regular expression searched in parameter names; ``re:REGEX``
takes the whole rest, commas included, as one expression):

    all          every parameter (the default; nothing is frozen)
    last:K       the last K of the repeated blocks (first:K the first K); blocks are found generically as the
                 longest ``nn.ModuleList`` whose children share one class (Llama ``model.layers``, every
                 GPT-2-style ``transformer.h``)
    embeddings   every ``nn.Embedding`` outside the blocks (token and learned position embeddings)
    head         the output projection (``get_output_embeddings()``)
    norm         parameters outside the blocks that are neither embeddings nor head (the final norm)

Tied embeddings (SmolLM2, GPT-2): the head *is* the token-embedding matrix, so ``head`` and ``embeddings`` both
train that one matrix; the description says ``tied_embeddings: true``.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

from hyperfit.common.config import TrainConfig
from hyperfit.common.runs import HyperfitError

KEYWORDS = ("all", "last:K", "first:K", "embeddings", "head", "norm")


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, list) of the repeated transformer blocks: the longest ``nn.ModuleList`` of one class."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise HyperfitError(
            f"{type(model).__name__} has no list of repeated blocks, so last:K/first:K cannot be resolved; "
            "use --train_layers all or a regular expression of parameter names."
        )
    return best


def parameter_groups(model: nn.Module) -> dict[str, dict]:
    """``{full parameter name: {"param", "block" (index or None), "group"}}`` for every parameter *name*, tied
    duplicates included (a tied head appears as both ``lm_head.weight`` and the embedding's name).

    ``group`` is ``block``, ``embeddings``, ``head`` or ``norm`` (everything else outside the blocks).
    """
    blocks_name, _ = find_blocks(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out: dict[str, dict] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param_name, param in module.named_parameters(recurse=False, remove_duplicate=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            if name in out:
                continue
            block = None
            if blocks_name and name.startswith(blocks_name + "."):
                block = int(name[len(blocks_name) + 1 :].split(".", 1)[0])
            if block is not None:
                group = "block"
            elif head is not None and module is head:
                group = "head"
            elif isinstance(module, nn.Embedding):
                group = "embeddings"
            else:
                group = "norm"
            out[name] = {"param": param, "block": block, "group": group}
    return out


def compress_names(names: list[str], blocks_name: str) -> list[str]:
    """Parameter names with the block index folded into ranges: ``model.layers.{28-29}.mlp.up_proj.weight``."""
    folded: dict[str, list[int]] = defaultdict(list)
    plain: list[str] = []
    prefix = blocks_name + "."
    for name in names:
        if blocks_name and name.startswith(prefix):
            index, rest = name[len(prefix) :].split(".", 1)
            folded[rest].append(int(index))
        else:
            plain.append(name)
    out = list(plain)
    for rest, indices in folded.items():
        out.append(f"{prefix}{{{_ranges(sorted(set(indices)))}}}.{rest}")
    return out


def _ranges(values: list[int]) -> str:
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ",".join(parts)


def _items(spec: str) -> list[str]:
    spec = spec.strip()
    if spec.startswith("re:"):
        return [spec]
    return [item.strip() for item in spec.split(",") if item.strip()]


def select_parameters(model: nn.Module, spec: str) -> list[str]:
    """Names (tied duplicates included) of the parameters ``spec`` selects; see the module docstring."""
    groups = parameter_groups(model)
    blocks_name, blocks = find_blocks(model)
    n_blocks = len(blocks)
    items = _items(spec)
    if not items:
        raise HyperfitError("--train_layers is empty; pass all, last:K, embeddings, head, norm or a regex.")
    chosen: list[str] = []
    for item in items:
        match = re.fullmatch(r"(last|first):(\d+)", item)
        if item == "all":
            hits = list(groups)
        elif match:
            k = int(match.group(2))
            if not 1 <= k <= n_blocks:
                raise HyperfitError(
                    f"--train_layers {item}: the model has {n_blocks} blocks ({blocks_name}); choose K from 1 "
                    f"to {n_blocks}."
                )
            wanted = range(n_blocks - k, n_blocks) if match.group(1) == "last" else range(k)
            hits = [n for n, g in groups.items() if g["block"] in wanted]
        elif item in ("embeddings", "head", "norm"):
            hits = [n for n, g in groups.items() if g["group"] == item]
        else:
            pattern = item[3:] if item.startswith("re:") else item
            try:
                regex = re.compile(pattern)
            except re.error as err:
                raise HyperfitError(
                    f"--train_layers item {item!r} is neither a keyword ({', '.join(KEYWORDS)}) nor a valid "
                    f"regular expression ({err}); fix the pattern."
                ) from err
            hits = [n for n in groups if regex.search(n)]
        if not hits:
            names = ", ".join(compress_names(list(groups), blocks_name))
            raise HyperfitError(
                f"--train_layers item {item!r} matches no parameter of {type(model).__name__}; it could match "
                f"{names} (or the keywords {', '.join(KEYWORDS)})."
            )
        chosen += [n for n in hits if n not in chosen]
    return chosen


def _lora_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Modules peft can wrap with LoRA here: ``nn.Linear`` and transformers' GPT-2-style ``Conv1D``."""
    from transformers.pytorch_utils import Conv1D

    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)}


def prepare_trainable(model: nn.Module, cfg: TrainConfig) -> tuple[nn.Module, dict]:
    """Freeze or wrap ``model`` as ``cfg.train_layers`` / ``cfg.lora_*`` ask; return (model to train, description).

    Without LoRA the selected parameters keep ``requires_grad`` and the rest are frozen (``all``: nothing
    changes). With ``lora_r > 0`` every base parameter is frozen and LoRA adapters of rank r (scale alpha / r,
    no dropout, ``bias="none"``) go on the linear modules that are named in ``lora_targets`` (their last name
    part; empty = every linear module inside the blocks) *and* whose weight ``train_layers`` selects. The
    returned model is then a ``peft.PeftModel``; :func:`finish_trainable` merges it back after training.
    The description (JSON-able) records the spec, counts and compressed names of what is trained.
    """
    total = sum(p.numel() for p in model.parameters())
    tied = _tied(model)
    lora = None
    if cfg.lora_r <= 0 and cfg.lora_targets:
        raise HyperfitError("--lora_targets needs --lora_r > 0; pass a LoRA rank such as --lora_r 8.")
    if cfg.lora_r <= 0 and cfg.train_layers.strip() == "all":
        # Nothing is frozen, so a model without a list of repeated blocks is fine too.
        blocks_name = _blocks_name_or_empty(model)
    elif cfg.lora_r <= 0:
        blocks_name, _ = find_blocks(model)
        names = set(select_parameters(model, cfg.train_layers))
        keep = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in names}
        for param in model.parameters():
            param.requires_grad_(id(param) in keep)
    else:
        blocks_name, _ = find_blocks(model)
        names = select_parameters(model, cfg.train_layers)
        targets = _lora_targets(model, cfg.lora_targets, set(names), blocks_name)
        model = _wrap_lora(model, targets, r=cfg.lora_r, alpha=cfg.lora_alpha)
        lora = {
            "r": cfg.lora_r,
            "alpha": cfg.lora_alpha,
            "modules": compress_names(targets, blocks_name),
            "saved": "merged into the base weights (model/ is a plain checkpoint)",
        }
    if cfg.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        # Re-entrant checkpointing drops gradients when the embedding output needs none (frozen embeddings).
        model.enable_input_require_grads()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    count = sum(p.numel() for _, p in trainable)
    description = {
        "train_layers": cfg.train_layers,
        "lora": lora,
        "trainable_params": count,
        "total_params": total,
        "trainable_share": count / max(total, 1),
        "trainable": compress_names([n for n, _ in trainable], _peft_blocks_name(model, blocks_name)),
        "tied_embeddings": tied,
    }
    if tied:
        description["note"] = "input embeddings and head share one matrix: training either trains both"
    return model, description


def finish_trainable(model: nn.Module) -> nn.Module:
    """The plain model after training: LoRA adapters merged into the base weights (peft ``merge_and_unload``),
    every parameter trainable again; other models are returned as they are."""
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def _blocks_name_or_empty(model: nn.Module) -> str:
    try:
        return find_blocks(model)[0]
    except HyperfitError:
        return ""


def _tied(model: nn.Module) -> bool:
    if not (hasattr(model, "get_input_embeddings") and hasattr(model, "get_output_embeddings")):
        return False
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def _lora_targets(model: nn.Module, spec: str, selected: set[str], blocks_name: str) -> list[str]:
    candidates = _lora_candidates(model)
    leaf = {name: name.rsplit(".", 1)[-1] for name in candidates}
    wanted = [t.strip() for t in spec.split(",") if t.strip()]
    in_blocks = sorted({leaf[n] for n in candidates if n.startswith(blocks_name + ".")})
    if wanted:
        missing = [t for t in wanted if t not in set(leaf.values())]
        if missing:
            raise HyperfitError(
                f"LoRA target module(s) {', '.join(missing)} do not exist in {type(model).__name__}; its linear "
                f"modules are {', '.join(sorted(set(leaf.values())))}; fix --lora_targets."
            )
        names = [n for n in candidates if leaf[n] in wanted]
    else:
        names = [n for n in candidates if n.startswith(blocks_name + ".")]
    names = [n for n in names if f"{n}.weight" in selected]
    if not names:
        raise HyperfitError(
            f"no LoRA target lies in the parameters --train_layers selects; the linear modules inside the blocks "
            f"are {', '.join(in_blocks)}; widen --train_layers or change --lora_targets."
        )
    return names


def _wrap_lora(model: nn.Module, targets: list[str], *, r: int, alpha: float) -> nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise HyperfitError(
            "--lora_r needs the peft package; run `pip install 'hyperfit[lora]'` (or `make install`)."
        ) from err
    from transformers.pytorch_utils import Conv1D

    conv1d = any(isinstance(model.get_submodule(n), Conv1D) for n in targets)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=targets,
        fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores its weight transposed
    )
    return get_peft_model(model, config)


def _peft_blocks_name(model: nn.Module, blocks_name: str) -> str:
    """The blocks' name as seen from a PeftModel (``base_model.model.`` in front)."""
    if hasattr(model, "peft_config"):
        return f"base_model.model.{blocks_name}"
    return blocks_name


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters (for tests and checks: which parameters moved)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
