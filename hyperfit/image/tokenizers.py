"""Image tokenizers: pixels[b, c, h, w] <-> codes[b, t], the only place pixels become ids; between the edges
the trainer, decoding and analysis see ids only.

Two implementations of one small interface: an ImageGPT-style k-means colour palette (one token per pixel, as
ImageGPT's 512 colour clusters; palette.py) and a small VQ-VAE (van den Oord et al. 2017, EMA codebook as in
lucidrains/vector-quantize-pytorch; vqvae.py). This module holds the interface, reads saved tokenizer files back,
describes a tokenizer in one line and checks it against a model's vocabulary; import every tokenizer name from
here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from hyperfit.image.codebook import load_state
from hyperfit.image.palette import PaletteTokenizer, fit_palette
from hyperfit.image.vqvae import VQVAETokenizer, train_vqvae

__all__ = [
    "ImageTokenizer",
    "PaletteTokenizer",
    "VQVAETokenizer",
    "check_vocab",
    "describe_tokenizer",
    "fit_palette",
    "load_image_tokenizer",
    "train_vqvae",
]


@runtime_checkable
class ImageTokenizer(Protocol):
    """What every image tokenizer offers; everything between the edges sees only ids.

    `encode_images(pixels[b, c, h, w] float in [0, 1]) -> codes LongTensor[b, g_h * g_w]` (row-major raster),
    `decode_codes(codes[b, g_h * g_w]) -> pixels[b, c, h, w]` in [0, 1]. `vocab_size` counts image ids only
    (no start-of-sequence token); `grid` is the token grid (g_h, g_w) of the images the tokenizer was built for.
    """

    @property
    def vocab_size(self) -> int: ...

    @property
    def grid(self) -> tuple[int, int] | None: ...

    def encode_images(self, pixels: Tensor) -> Tensor: ...

    def decode_codes(self, codes: Tensor, *, grid: tuple[int, int] | None = None) -> Tensor: ...

    def save(self, path: str | os.PathLike[str]) -> Path: ...


# ---------------------------------------------------------------------------------------------------------------
# loading and checks

_CLASSES: dict[str, Any] = {"PaletteTokenizer": PaletteTokenizer, "VQVAETokenizer": VQVAETokenizer}


def load_image_tokenizer(path: str | os.PathLike[str]) -> PaletteTokenizer | VQVAETokenizer:
    """Read a file written by `PaletteTokenizer.save` or `VQVAETokenizer.save`, dispatching on its class name."""
    name = load_state(path)["class"]
    return _CLASSES[name].load(path)


def describe_tokenizer(tokenizer: ImageTokenizer) -> str:
    """One line naming an image tokenizer: class, image ids and token grid (a VQ-VAE's repr is its layers)."""
    return f"{type(tokenizer).__name__}(ids={tokenizer.vocab_size}, grid={tokenizer.grid})"


def check_vocab(tokenizer: ImageTokenizer, model_vocab_size: int, *, extra_tokens: int = 1) -> None:
    """Raise one ValueError sentence unless model_vocab_size == tokenizer.vocab_size + extra_tokens.

    `extra_tokens` counts the non-image ids the prior adds after the image ids (1: the start-of-sequence token,
    as in ImageGPT's 513 = 512 clusters + SOS).
    """
    n_image = model_vocab_size - extra_tokens
    if n_image == tokenizer.vocab_size:
        return
    if isinstance(tokenizer, PaletteTokenizer):
        what = f"palette has {tokenizer.vocab_size} colours"
        fix = "load the matching palette"
    else:
        what = f"codebook has {tokenizer.vocab_size} codes"
        fix = "load the matching VQ-VAE"
    raise ValueError(
        f"the {what} but the model predicts {n_image} image tokens ({model_vocab_size} ids minus "
        f"{extra_tokens} special); retrain the prior with this tokenizer or {fix}."
    )
