"""The autoregressive prior over image codes: ImageGPT's causal model with a start-of-sequence token.

Follows ImageGPT (transformers' ``ImageGPTForCausalImageModeling``): ids are the image codes 0..v-1 plus one
start-of-sequence (SOS) id v, the last id; ``lm_head`` has only v outputs, so SOS can never be predicted. A
sequence is ``[SOS, c_0, ..., c_{t-1}]``, so ``n_positions = 1 + t``. The official hyperfitting code fed pixel
tokens without SOS and generated ``max_length = 1025`` for 1,024 pixels (one pixel too many);
``encode_for_model``, ``model_block_len`` and ``complete`` are what rule both out here (tests/test_fit_image.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyperfit.common.decode import LogitsProcessor, decode
from hyperfit.common.runs import HyperfitError, read_json
from hyperfit.image.tokenizers import PaletteTokenizer, check_vocab, load_image_tokenizer

MODEL_DIR = "model"  # inside a pretrain-image run directory
TOKENIZER_FILE = "tokenizer.pt"
DEFAULT_PRIOR = "runs/cache/image-prior"


@dataclass
class ImageModelConfig:
    """Which pretrained image prior to hyperfit."""

    prior: str = field(
        default=DEFAULT_PRIOR,
        metadata={
            "help": "A pretrain-image run directory (the offline default, built by `hyperfit pretrain-image`) or "
            "an ImageGPT checkpoint name or directory such as openai/imagegpt-small (network or local cache)."
        },
    )


@dataclass
class PriorConfig:
    """Shape of a prior trained from scratch (the defaults: 4 layers, width 128, about 0.84M parameters)."""

    layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    width: int = field(default=128, metadata={"help": "Embedding width (n_embd)."})
    heads: int = field(default=4, metadata={"help": "Attention heads; must divide width."})
    dropout: float = field(
        default=0.0,
        metadata={
            "help": "Dropout while pretraining. ImageGPT's default is 0.1; 0 here because 2 epochs over 5.5k "
            "patches do not overfit and dropout costs a third more CPU time. Hyperfitting sets it to 0 anyway."
        },
    )

    def __post_init__(self) -> None:
        if self.layers < 1 or self.width < 1 or self.heads < 1 or self.width % self.heads:
            raise HyperfitError(
                f"a prior of width {self.width} cannot have {self.heads} heads; choose --heads dividing --width."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise HyperfitError(f"dropout {self.dropout} is outside [0, 1); pass e.g. --dropout 0.1.")


def build_prior(n_codes: int, n_tokens: int, cfg: PriorConfig, *, seed: int):
    """A fresh ImageGPT causal model over ``n_codes`` image ids + SOS, for images of ``n_tokens`` codes."""
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

    config = ImageGPTConfig(
        vocab_size=n_codes + 1,
        n_positions=1 + n_tokens,
        n_embd=cfg.width,
        n_layer=cfg.layers,
        n_head=cfg.heads,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        return ImageGPTForCausalImageModeling(config)


def sos_id(model: torch.nn.Module) -> int:
    """The start-of-sequence id: the last id of the vocabulary (ImageGPT's convention)."""
    return int(model.config.vocab_size) - 1


def encode_for_model(codes: torch.Tensor, *, sos: int) -> torch.Tensor:
    """codes[b, t] (image ids < sos) -> ids[b, 1 + t] with SOS prepended; train with ``ignore_first=1``."""
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape [b, t], got {tuple(codes.shape)}.")
    if codes.numel() and int(codes.max()) >= sos:
        raise ValueError(
            f"codes contain id {int(codes.max())} but image ids must be below the SOS id {sos}; "
            "the tokenizer and the prior do not match."
        )
    return torch.cat([torch.full((codes.size(0), 1), sos, dtype=torch.long), codes.long().cpu()], 1)


def model_block_len(model: torch.nn.Module, n_tokens: int) -> int:
    """Length of the training / teacher-forced blocks for images of ``n_tokens`` codes: ``1 + n_tokens``.

    A model with exactly ``n_tokens`` positions (the public ImageGPT checkpoints: 1,024 positions for 32x32) can
    still predict every code, since the last code is never an input, but a block holding it would overrun the
    positions: then the last code is left out of training and teacher-forced statistics (1 of t targets).
    """
    positions = int(model.config.n_positions)
    if n_tokens > positions:
        raise HyperfitError(
            f"the prior has {positions} positions but an image is {n_tokens} codes plus SOS; use images of at "
            f"most {positions} codes (a smaller --image_size) or a prior built for this size."
        )
    return min(1 + n_tokens, positions)


def suppress_ids(ids: Sequence[int]) -> LogitsProcessor:
    """A processor that forbids ``ids`` (for priors whose head also scores SOS; ImageGPT's does not)."""

    def processor(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        inside = [i for i in ids if i < scores.size(-1)]
        if not inside:
            return scores
        scores = scores.clone()
        scores[:, inside] = float("-inf")
        return scores

    return processor


@dataclass
class Completion:
    """Completed images: ``codes[b, t]`` (context then generated codes, no SOS) and the raw next-token
    entropy (nats) and top-1 probability averaged over the generated positions of each image ``[b]``."""

    codes: torch.Tensor
    entropy: torch.Tensor
    top1_prob: torch.Tensor


@torch.no_grad()
def complete(
    model: torch.nn.Module,
    codes: torch.Tensor,
    *,
    n_context: int,
    logits_processors: Sequence[LogitsProcessor] = (),
    temperature: float = 0.0,
    warpers: Sequence[LogitsProcessor] = (),
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> Completion:
    """Complete images from their first ``n_context`` codes (paper §7.1: the first 25 %).

    The model sees ``[SOS, codes[:, :n_context]]`` and generates exactly ``t - n_context`` codes, so the
    longest input is ``t`` ids (within ``n_positions``) and the result has exactly t codes. The context is
    copied from ``codes``, never from the model's output. Greedy unless ``temperature > 0``; then ``warpers``
    (top-k, top-p, ...) filter the tempered scores, as in ``hyperfit.common.decode.decode``.
    """
    t = codes.size(1)
    if not 1 <= n_context < t:
        raise ValueError(f"n_context={n_context} must be in 1..{t - 1} for images of {t} codes.")
    model_block_len(model, t)
    sos = sos_id(model)
    device = next(model.parameters()).device
    context = codes[:, :n_context]
    prompts = encode_for_model(context, sos=sos)
    new, entropy, top1 = [], [], []
    for start in range(0, len(prompts), batch_size):
        out = decode(
            model,
            prompts[start : start + batch_size].to(device),
            max_new_tokens=t - n_context,
            logits_processors=[suppress_ids([sos]), *logits_processors],
            temperature=temperature,
            warpers=warpers,
            generator=generator,
        )
        new.append(out.new_ids.cpu())
        entropy.append(out.entropy.mean(1).cpu())
        top1.append(out.top1_prob.mean(1).cpu())
    return Completion(torch.cat([context.cpu(), torch.cat(new)], 1), torch.cat(entropy), torch.cat(top1))


def load_prior(name_or_path: str):
    """(model, image tokenizer, description) from a ``pretrain-image`` run directory or an ImageGPT checkpoint.

    A run directory holds ``model/`` and ``tokenizer.pt``; anything else is tried as an ImageGPT hub name or
    directory (e.g. ``openai/imagegpt-small``), whose colour clusters become the palette. The tokenizer must
    match the model's vocabulary (codes + SOS), else one sentence says so.
    """
    from transformers import ImageGPTForCausalImageModeling

    path = Path(name_or_path)
    if (path / TOKENIZER_FILE).exists() or (path / MODEL_DIR).exists():
        if not (path / "summary.json").exists():
            raise HyperfitError(
                f"{path} holds an unfinished pretraining run; finish it with `hyperfit pretrain-image --out "
                f"{path} --resume` first."
            )
        try:
            tokenizer = load_image_tokenizer(path / TOKENIZER_FILE)
        except (OSError, ValueError) as err:
            raise HyperfitError(
                f"the image tokenizer {path / TOKENIZER_FILE} cannot be read ({err}); rebuild the prior with "
                "`hyperfit pretrain-image --overwrite`."
            ) from err
        model = ImageGPTForCausalImageModeling.from_pretrained(path / MODEL_DIR, dtype=torch.float32)
        description = (
            f"pretrain-image prior {path} ({read_json(path / 'summary.json').get('parameters')} parameters)"
        )
    elif path.exists() or (name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))):
        from transformers import ImageGPTImageProcessor

        try:
            model = ImageGPTForCausalImageModeling.from_pretrained(name_or_path, dtype=torch.float32)
            clusters = ImageGPTImageProcessor.from_pretrained(name_or_path).clusters
        except (OSError, ValueError) as err:
            where = (
                "the local files"
                if path.exists()
                else "a local directory or the Hugging Face hub (this machine may be offline)"
            )
            raise HyperfitError(
                f"ImageGPT checkpoint {name_or_path!r} could not be loaded from {where} ({type(err).__name__}); "
                "build the offline prior with `hyperfit pretrain-image` and leave --prior at its default."
            ) from err
        side = int(round(model.config.n_positions**0.5))
        tokenizer = PaletteTokenizer.from_imagegpt_clusters(clusters, grid=(side, side))
        description = f"ImageGPT {name_or_path}"
    else:
        raise HyperfitError(
            f"no pretrained prior at {path}; build it with `hyperfit pretrain-image --out {path}` "
            "(about 6 minutes on 2 CPU cores) or pass --prior openai/imagegpt-small with network."
        )
    try:
        check_vocab(tokenizer, int(model.config.vocab_size), extra_tokens=1)
    except ValueError as err:
        raise HyperfitError(f"{name_or_path}: {err}") from err
    return model, tokenizer, description
