"""Memory per GPU of a hyperfitting run before it starts: weights, gradients, Adam state and activations, for one
GPU, DDP, FSDP2 or ZeRO-3, so a 1B-70B model gets the right number of GPUs and accelerate config.

The counts follow what the training loop really keeps (float32 master weights; bf16 = autocast, which also holds a
bf16 copy of every weight during the step; Adam's two float32 moments; the logits upcast to float32 for the loss)
and, for activations, the tensors autograd saves per token in one decoder block, counted on Hugging Face's Llama
(gated MLP, RMSNorm, SDPA), GPT-2 and ImageGPT (eager attention, which keeps an a·s score row per token) blocks.
``measure_peak_bytes`` measures the same thing on any device (tests compare the two on CPU).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from hyperfit.common.runs import HyperfitError

GIB = 2**30
STRATEGIES = ("ddp", "fsdp", "zero3")
# Tensors of the MLP's width saved per token by each activation (its input, and what its backward needs).
MLP_SAVED = {"gelu_new": 5, "quick_gelu": 3, "gelu": 2, "gelu_pytorch_tanh": 2, "relu": 2, "silu": 2}
# Share of a GPU's memory a run may plan to use: the rest is CUDA context, NCCL buffers and allocator slack.
USABLE = 0.9


@dataclass
class ModelShape:
    """What memory depends on: sizes of a decoder-only transformer."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    gated: bool  # Llama-style SwiGLU MLP (gate, up, down) and RMSNorm; else GPT-style MLP and LayerNorm
    eager_attention: bool  # attention scores materialised (ImageGPT); else SDPA / flash keeps no a·s row
    activation: str
    tied: bool
    model_type: str
    description: str

    @property
    def layer_params(self) -> int:
        kv = self.hidden // self.heads * self.kv_heads
        mlp = (3 if self.gated else 2) * self.hidden * self.intermediate
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv + mlp

    @property
    def tail_params(self) -> int:
        """Output head (and the tied input embedding) — the unit FSDP keeps gathered through the step."""
        return self.vocab * self.hidden


def shape_from_config(config, *, description: str) -> ModelShape:
    """A ``transformers`` config (Llama, Mistral, Qwen, DeepSeek, GPT-2, ImageGPT, ...) as a ModelShape."""
    get = lambda *names, default=None: next(  # noqa: E731
        (getattr(config, n) for n in names if getattr(config, n, None) is not None), default
    )
    hidden = get("hidden_size", "n_embd")
    layers = get("num_hidden_layers", "n_layer")
    heads = get("num_attention_heads", "n_head")
    vocab = get("vocab_size")
    if None in (hidden, layers, heads, vocab):
        raise HyperfitError(
            f"the config of {description} is not a decoder-only transformer that hyperfit can size (no hidden "
            "size, layers, heads or vocabulary); pass --model as a parameter count such as 8e9 instead."
        )
    gated = hasattr(config, "intermediate_size") and getattr(config, "hidden_act", "silu") in (
        "silu",
        "swish",
    )
    intermediate = get("intermediate_size", "n_inner", default=4 * hidden)
    activation = get("hidden_act", "activation_function", default="gelu")
    shape = ModelShape(
        params=0,
        layers=layers,
        hidden=hidden,
        intermediate=intermediate,
        vocab=vocab,
        heads=heads,
        kv_heads=get("num_key_value_heads", default=heads),
        gated=gated,
        eager_attention=getattr(config, "model_type", "") == "imagegpt"
        or getattr(config, "_attn_implementation", None) == "eager",
        activation="silu" if gated else activation,
        tied=bool(getattr(config, "tie_word_embeddings", not gated)),
        model_type=getattr(config, "model_type", "unknown"),
        description=description,
    )
    positions = 0 if gated else get("n_positions", "max_position_embeddings", default=0) * hidden
    embeddings = vocab * hidden * (1 if shape.tied else 2) + positions
    shape.params = layers * shape.layer_params + embeddings
    return shape


def shape_from_count(params: float) -> ModelShape:
    """A Llama-style shape for a bare parameter count: width 128 per layer (Llama 2/3's ratio, 4096 wide at 32
    layers), intermediate 3.5× width, 128k vocabulary. The layer count solves 12-ish h² per layer = params."""
    vocab = 128_256
    for layers in range(2, 200):
        hidden = 128 * layers
        per_layer = 4 * hidden * hidden + 3 * hidden * int(3.5 * hidden)
        if layers * per_layer + 2 * vocab * hidden >= params:
            break
    return ModelShape(
        params=int(params),
        layers=layers,
        hidden=hidden,
        intermediate=int(3.5 * hidden),
        vocab=vocab,
        heads=hidden // 128,
        kv_heads=max(1, hidden // 128 // 4),
        gated=True,
        eager_attention=False,
        activation="silu",
        tied=False,
        model_type="llama (guessed from the count)",
        description=f"{params:.3g} parameters (Llama-style shape guessed: {layers} layers × {hidden})",
    )


def load_shape(model: str) -> ModelShape:
    """``model`` as a parameter count (``8e9``, ``7B``, ``350M``), a local config file or model directory, or a
    hub id (needs network or the Hugging Face cache)."""
    text = model.strip()
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}.get(text[-1:].lower())
    try:
        return shape_from_count(float(text[:-1]) * scale if scale else float(text))
    except ValueError:
        pass
    from pathlib import Path

    from transformers import AutoConfig

    try:
        path = Path(text)
        if path.is_file():
            config = AutoConfig.from_pretrained(path.parent if path.name == "config.json" else path)
        else:
            config = AutoConfig.from_pretrained(text)
    except (OSError, ValueError) as err:
        raise HyperfitError(
            f"no model config could be read from {model!r} ({type(err).__name__}); pass a local config.json or "
            "model directory, a hub id with network, or a parameter count such as 8e9."
        ) from err
    return shape_from_config(config, description=model)


@dataclass
class Estimate:
    """Bytes per GPU. The peak is not the sum: activations are freed as the gradients are made."""

    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def peak(self) -> float:
        # Steady state (after the first step, Adam's moments exist): the peak is either the start of backward
        # (every activation alive) or the optimizer step (all gradients plus Adam's float32 temporaries).
        return self.weights + self.optimizer + max(self.activations, 2 * self.gradients)


def activation_bytes(
    shape: ModelShape, *, tokens: int, seq_len: int, precision: str, gradient_checkpointing: bool
) -> float:
    """Bytes autograd keeps for one micro-batch of ``tokens`` tokens at the start of backward.

    Per token and block, the saved tensors counted on the Hugging Face blocks: gated (Llama) 8h + 2·kv + 4f
    elements, GPT-style 10h + MLP_SAVED·f, plus a·s for eager attention; bf16 autocast keeps about 2.25 bytes per
    such element (norms and residuals stay float32, matmul inputs are bf16). The loss keeps float32
    log-probabilities of every position and its gradient (8 bytes per vocabulary entry and token, 12 with the
    bf16 logits). Gradient checkpointing keeps each block's input and one block's activations.
    """
    h, f = shape.hidden, shape.intermediate
    kv = h // shape.heads * shape.kv_heads
    if shape.gated:
        elements = 8 * h + 2 * kv + 4 * f
    else:
        elements = 10 * h + MLP_SAVED.get(shape.activation, 3) * f
    if shape.eager_attention:
        elements += shape.heads * seq_len
    per_element = 4.0 if precision == "fp32" else 2.25
    block = tokens * elements * per_element
    if gradient_checkpointing:
        layers = shape.layers * tokens * h * (4 if precision == "fp32" else 2) + block
    else:
        layers = shape.layers * block
    logits = tokens * shape.vocab * (8 if precision == "fp32" else 12)
    final_norm = tokens * 3 * h * 4
    return layers + logits + final_norm


def estimate(
    shape: ModelShape,
    *,
    strategy: str,
    gpus: int,
    seq_len: int,
    micro_batch_size: int,
    precision: str,
    gradient_checkpointing: bool,
) -> Estimate:
    """Bytes per GPU for Adam (two float32 moments) with float32 master weights.

    ddp (one GPU when ``gpus == 1``): everything whole on every GPU; autocast's bf16 weight copies (2 bytes per
    parameter); DDP's gradient buckets double the gradients when there are several GPUs. fsdp (FSDP2): weights,
    gradients and moments divided by the GPUs, plus two gathered blocks and the gathered output head at the
    compute dtype. zero3: bf16 weights and gradients plus float32 master weights, moments and gradient partition,
    all divided by the GPUs, plus two gathered blocks.
    """
    if strategy not in STRATEGIES:
        raise HyperfitError(f"strategy {strategy!r} is unknown; use one of {', '.join(STRATEGIES)}.")
    p, n = shape.params, gpus
    compute = 4 if precision == "fp32" else 2
    activations = activation_bytes(
        shape,
        tokens=micro_batch_size * seq_len,
        seq_len=seq_len,
        precision=precision,
        gradient_checkpointing=gradient_checkpointing,
    )
    if strategy == "ddp":
        weights = 4 * p + (2 * p if precision != "fp32" else 0)
        gradients = 4 * p * (2 if n > 1 else 1)
        optimizer = 8 * p
    elif strategy == "fsdp":
        gathered = 2 * shape.layer_params + shape.tail_params
        weights = 4 * p / n + compute * gathered
        gradients = 4 * p / n + 4 * shape.layer_params
        optimizer = 8 * p / n
    else:
        weights = 2 * p / n + 2 * 2 * shape.layer_params
        gradients = 6 * p / n
        optimizer = 12 * p / n
    return Estimate(weights, gradients, optimizer, activations)


# ------------------------------------------------------------------------------------------------------------
# Measuring what the estimate predicts
# ------------------------------------------------------------------------------------------------------------


class measure_peak_bytes(TorchDispatchMode):
    """Peak bytes of live tensor storages while active, on any device (CPU included): every storage an operation
    returns is counted until it is freed (weak references), plus those passed to ``track`` (the weights and
    buffers that exist beforehand). Exact and repeatable, unlike a process's RSS, which the allocator's caching
    and arenas blur; it sees tensors only, not the allocator's own slack."""

    def __init__(self) -> None:
        super().__init__()
        self._live: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.current = 0
        self.peak = 0

    def track(self, tensors) -> None:
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                storage = tensor.untyped_storage()
                if storage not in self._live:
                    size = storage.nbytes()
                    self._live[storage] = size
                    self.current += size
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.track(tree_leaves(out))
        return out


def fmt_gib(value: float) -> str:
    return f"{value / GIB:,.1f} GiB" if value >= 0.1 * GIB else f"{value / 2**20:,.1f} MiB"
