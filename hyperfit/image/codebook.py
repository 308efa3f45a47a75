"""What the palette and VQ-VAE tokenizers share: nearest-entry lookup in a codebook (colours or latents), the
checks on pixels, codes and token grids, and the writer and reader of their .pt files.

palette.py and vqvae.py import from here and nothing from tokenizers.py, which imports both: no import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT_VERSION = 1
TOKENIZER_CLASSES = ("PaletteTokenizer", "VQVAETokenizer")  # the class names a tokenizer file may hold


def match_channels(pixels: Tensor, channels: int, *, what: str) -> Tensor:
    """pixels[b, c, h, w] -> pixels[b, channels, h, w]; grey (c=1) is repeated when `channels` is 3.

    Repeating grey is exact: a grey pixel g *is* the RGB colour (g, g, g). Anything else is refused, because
    dropping an alpha channel or averaging colours to grey silently changes what the model sees.
    """
    if pixels.ndim != 4:
        raise ValueError(
            f"{what} expects pixels of shape [b, c, h, w] but got shape {tuple(pixels.shape)}; "
            "add a batch dimension with pixels.unsqueeze(0) for a single image."
        )
    c = pixels.shape[1]
    if c == channels:
        return pixels
    if c == 1 and channels == 3:
        return pixels.expand(-1, 3, -1, -1)
    fix = {
        (3, 1): "convert the images to grayscale first, or build an RGB tokenizer",
        (4, 3): "drop the alpha channel first (pixels[:, :3])",
    }.get((c, channels), f"convert the images to {channels} channel(s) first")
    raise ValueError(
        f"{what} was built for {channels}-channel images but the pixels have {c} channels; {fix}."
    )


def check_codes(codes: Tensor, vocab_size: int, *, what: str) -> Tensor:
    if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(
            f"{what} expects integer codes but got dtype {codes.dtype}; pass a LongTensor of ids."
        )
    if codes.ndim == 1:
        codes = codes.unsqueeze(0)
    if codes.ndim != 2:
        raise ValueError(f"{what} expects codes of shape [b, t] but got shape {tuple(codes.shape)}.")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= vocab_size):
        bad = int(codes.max()) if int(codes.max()) >= vocab_size else int(codes.min())
        raise ValueError(
            f"codes contain id {bad} but {what} has {vocab_size} image ids (0-{vocab_size - 1}); "
            "strip the start-of-sequence token and any padding before decoding."
        )
    return codes.long()


def resolve_grid(
    codes: Tensor, grid: tuple[int, int] | None, default: tuple[int, int] | None
) -> tuple[int, int]:
    g = tuple(grid) if grid is not None else default
    if g is None:
        raise ValueError(
            "decode_codes needs the token grid; pass grid=(h, w) or build the tokenizer with grid set."
        )
    if g[0] * g[1] != codes.shape[-1]:
        raise ValueError(
            f"codes have {codes.shape[-1]} tokens but the grid {g[0]}x{g[1]} holds {g[0] * g[1]}; "
            "pass grid=(h, w) matching the images these codes came from."
        )
    return int(g[0]), int(g[1])


def squared_distances(x: Tensor, centres: Tensor, *, exact: bool, chunk: int = 8192) -> Tensor:
    """x[n, d], centres[v, d] -> squared Euclidean distances [n, v].

    `exact=True` subtracts before squaring, so a point equal to a centre is at distance exactly 0; that is what
    makes `encode_images(decode_codes(codes)) == codes` hold. The matmul form is faster but rounds (used in k-means).
    """
    if not exact:
        return (x * x).sum(1, keepdim=True) - 2 * x @ centres.T + (centres * centres).sum(1)[None]
    return torch.cat(
        [(x[i : i + chunk, None, :] - centres[None]).pow(2).sum(-1) for i in range(0, len(x), chunk)]
    )


def nearest(x: Tensor, centres: Tensor, *, exact: bool = True, chunk: int = 8192) -> Tensor:
    """x[n, d] -> LongTensor[n]: index of the nearest centre (squared Euclidean, ties to the lowest index)."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(
        [squared_distances(x[i : i + chunk], centres, exact=exact).argmin(1) for i in range(0, len(x), chunk)]
    )


def atomic_torch_save(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | os.PathLike[str], *, expect: str | None = None) -> dict[str, Any]:
    """The state dict of a tokenizer file, after checking that it is one (and, with ``expect``, of that class)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no image tokenizer file at {path}; train one (fit_palette / train_vqvae) and save() it there first."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean "not our file"
        raise ValueError(
            f"{path} is not a readable image tokenizer file ({type(err).__name__}); re-save it with tokenizer.save()."
        ) from err
    name = state.get("class") if isinstance(state, dict) else None
    if name not in TOKENIZER_CLASSES:
        raise ValueError(
            f"{path} does not name a known image tokenizer class (found {name!r}, expected one of "
            f"{sorted(TOKENIZER_CLASSES)}); re-save it with tokenizer.save()."
        )
    if expect is not None and name != expect:
        raise ValueError(f"{path} holds a {name}, not a {expect}; load it with load_image_tokenizer().")
    return state
