"""Pixels and codes -> PIL images and PNG grids (context | completion | original), the image output edge.

Follows taming-transformers' ImageLogger / LlamaGen's sample grids (torchvision `make_grid`'s layout, written out
here: importing torchvision costs each image command seconds of start-up), with nearest-neighbour upscaling so
16x16 patches stay readable and atomic writes (tmp file, then os.replace).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

if TYPE_CHECKING:
    from PIL import Image

    from hyperfit.image.tokenizers import ImageTokenizer


def _as_rgb(pixels: Tensor) -> Tensor:
    """pixels[c, h, w] with c in {1, 3} -> float pixels[3, h, w] clamped to [0, 1]."""
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise ValueError(f"expected pixels of shape [1 or 3, h, w] but got {tuple(pixels.shape)}.")
    return pixels.detach().float().cpu().clamp(0, 1).expand(3, -1, -1)


def _upscale(pixels: Tensor, scale: int) -> Tensor:
    """pixels[c, h, w] -> pixels[c, h*scale, w*scale], each pixel repeated (nearest neighbour)."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer but got {scale}.")
    return repeat(pixels, "c h w -> c (h sh) (w sw)", sh=scale, sw=scale)


def tile_grid(tiles: Tensor, n_cols: int, *, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """tiles[r * n_cols, c, h, w] -> pixels[c, r*(h+padding) + padding, n_cols*(w+padding) + padding]: rows of
    ``n_cols`` tiles with ``padding`` pixels of ``pad_value`` around and between them (``make_grid``'s layout)."""
    padded = F.pad(tiles, (0, padding, 0, padding), value=pad_value)  # right and bottom of every tile
    grid = rearrange(padded, "(r k) c h w -> c (r h) (k w)", k=n_cols)
    return F.pad(grid, (padding, 0, padding, 0), value=pad_value)  # then left and top of the whole grid


def pixels_to_pil(pixels: Tensor, *, scale: int = 1) -> Image.Image:
    """pixels[c, h, w] float in [0, 1] (c = 1 or 3) -> an RGB PIL image of (w*scale) x (h*scale) pixels."""
    from PIL import Image

    rgb = _upscale(_as_rgb(pixels), scale)
    array = rearrange((rgb * 255).round().to(torch.uint8), "c h w -> h w c").numpy()
    return Image.fromarray(array)


def codes_to_pil(
    codes: Tensor, tokenizer: ImageTokenizer, *, grid: tuple[int, int] | None = None, scale: int = 1
) -> list[Image.Image]:
    """codes[b, t] (or [t]) -> b RGB PIL images, decoded by `tokenizer.decode_codes` (image ids only, no SOS)."""
    pixels = tokenizer.decode_codes(codes if codes.ndim == 2 else codes[None], grid=grid)
    return [pixels_to_pil(p, scale=scale) for p in pixels]


def mask_context(
    pixels: Tensor, n_context_tokens: int, grid: tuple[int, int], *, fill: float = 0.5
) -> Tensor:
    """pixels[b, c, h, w] (or [c, h, w]) -> a copy where every token after the first `n_context_tokens` is grey.

    Tokens are in raster order on the token `grid` (g_h, g_w); each token covers (h/g_h) x (w/g_w) pixels, so
    this works for one-token-per-pixel palettes and for downsampling VQ-VAEs alike.
    """
    single = pixels.ndim == 3
    x = pixels[None] if single else pixels
    gh, gw = grid
    h, w = x.shape[-2:]
    if h % gh or w % gw:
        raise ValueError(
            f"pixels of {h}x{w} cannot be split into a {gh}x{gw} token grid; pass the tokenizer's grid."
        )
    if not 0 <= n_context_tokens <= gh * gw:
        raise ValueError(f"n_context_tokens={n_context_tokens} is outside 0..{gh * gw} for a {gh}x{gw} grid.")
    keep = torch.arange(gh * gw, device=x.device) < n_context_tokens
    keep = repeat(keep, "(gh gw) -> (gh sh) (gw sw)", gh=gh, gw=gw, sh=h // gh, sw=w // gw)
    out = torch.where(keep, x, torch.full_like(x, fill))
    return out[0] if single else out


def save_grid(
    rows: list[list[Tensor]],
    path: str | os.PathLike[str],
    *,
    column_titles: list[str] | None = None,
    scale: int = 4,
    padding: int = 2,
    title_height: int = 14,
) -> Path:
    """Write a PNG grid: rows of pixels[c, h, w] in [0, 1], each tile upscaled `scale` times (nearest).

    Every row must have the same number of tiles and every tile the same h x w. The PNG is
    `cols * (w*scale + padding) + padding` pixels wide and `rows * (h*scale + padding) + padding` high, plus a
    `title_height` strip on top when `column_titles` are given (titles longer than a column are cut). The file
    is written to a temporary name next to `path` and moved into place, so a reader never sees half a PNG.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not rows or not rows[0]:
        raise ValueError("save_grid needs at least one row with at least one image.")
    n_cols = len(rows[0])
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f"every row of the grid must hold {n_cols} images but got {[len(r) for r in rows]}.")
    if column_titles is not None and len(column_titles) != n_cols:
        raise ValueError(
            f"got {len(column_titles)} column titles for {n_cols} columns; pass one title per column."
        )
    tiles = [_upscale(_as_rgb(t), scale) for r in rows for t in r]
    if len({tuple(t.shape) for t in tiles}) > 1:
        raise ValueError("all images in a grid must have the same height and width; resize them first.")
    grid = tile_grid(torch.stack(tiles), n_cols, padding=padding)
    image = pixels_to_pil(grid)

    if column_titles is not None:
        titled = Image.new("RGB", (image.width, image.height + title_height), "white")
        titled.paste(image, (0, title_height))
        draw = ImageDraw.Draw(titled)
        font = ImageFont.load_default()
        cell = tiles[0].shape[2] + padding
        for i, title in enumerate(column_titles):
            text = title
            while text and draw.textlength(text, font=font) > cell - padding:
                text = text[:-1]
            draw.text((padding + i * cell, 1), text, fill="black", font=font)
        image = titled

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# Short column titles: a 16-pixel image at scale 6 leaves about 15 characters per column.
GRID_TITLES = {
    "original greedy": "orig greedy",
    "original top-p": "orig top-p",
    "hyperfitted greedy": "hyper greedy",
    "hyperfitted + blocker": "hyper+blocker",
}


@torch.no_grad()
def save_codes_grid(
    path: Path, columns: dict, tokenizer: ImageTokenizer, *, n_context: int, scale: int
) -> None:
    """One row per held-out image, one column per entry of ``columns`` (codes[b, t]); the "context" column
    shows only the first ``n_context`` tokens of its codes, the rest grey."""
    pixels = {name: tokenizer.decode_codes(codes) for name, codes in columns.items()}
    if "context" in pixels:
        pixels["context"] = mask_context(pixels["context"], n_context, tokenizer.grid)
    rows = [[pixels[name][i] for name in pixels] for i in range(len(pixels["truth"]))]
    save_grid(rows, path, column_titles=[GRID_TITLES.get(name, name) for name in pixels], scale=scale)
