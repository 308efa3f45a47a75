"""The ImageGPT-style colour palette tokenizer: one token per pixel, the id of the nearest of a few colours.

The colours come from k-means over pixels (`fit_palette`, as ImageGPT and minGPT's image demo) or from a
pretrained ImageGPT's colour clusters (its image processor's ``clusters``, 512 RGB centres in [-1, 1]). The interface it implements is in tokenizers.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from hyperfit.image.codebook import (
    FORMAT_VERSION,
    atomic_torch_save,
    check_codes,
    load_state,
    match_channels,
    nearest,
    resolve_grid,
    squared_distances,
)


class PaletteTokenizer:
    """One token per pixel: the id of the nearest palette colour (squared Euclidean in [0, 1] pixel units).

    `palette[v, c]` holds colours in [0, 1] (c = 3 for RGB, 1 for grey). Grey input to an RGB palette is
    repeated to 3 channels; RGB input to a grey palette is refused. Codes are raster order, row by row.
    """

    def __init__(
        self, palette: Tensor, *, grid: tuple[int, int] | None = None, info: dict[str, Any] | None = None
    ) -> None:
        palette = torch.as_tensor(palette, dtype=torch.float32)
        if palette.ndim != 2 or palette.shape[1] not in (1, 3) or len(palette) == 0:
            raise ValueError(
                f"a palette must have shape [n_colors, 3] (RGB) or [n_colors, 1] (grey) but got {tuple(palette.shape)}."
            )
        self.palette = palette
        self._grid = (int(grid[0]), int(grid[1])) if grid is not None else None
        self.info = dict(info or {})

    @property
    def vocab_size(self) -> int:
        return len(self.palette)

    @property
    def grid(self) -> tuple[int, int] | None:
        return self._grid

    @property
    def channels(self) -> int:
        return self.palette.shape[1]

    def __repr__(self) -> str:
        return f"PaletteTokenizer(colours={self.vocab_size}, channels={self.channels}, grid={self.grid})"

    def encode_images(self, pixels: Tensor) -> Tensor:
        """pixels[b, c, h, w] float in [0, 1] -> codes LongTensor[b, h*w], raster order (row-major)."""
        pixels = match_channels(pixels, self.channels, what="this palette")
        b = pixels.shape[0]
        flat = rearrange(pixels.float(), "b c h w -> (b h w) c")
        codes = nearest(flat, self.palette.to(flat.device))
        return rearrange(codes, "(b t) -> b t", b=b)

    def decode_codes(self, codes: Tensor, *, grid: tuple[int, int] | None = None) -> Tensor:
        """codes[b, h*w] (or [h*w]) -> pixels[b, c, h, w] float in [0, 1]; grid defaults to `self.grid`."""
        codes = check_codes(codes, self.vocab_size, what="this palette")
        h, w = resolve_grid(codes, grid, self.grid)
        colours = self.palette.to(codes.device)[codes]
        return rearrange(colours, "b (h w) c -> b c h w", h=h, w=w)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a small .pt file (palette, grid, info, class name) that `load_image_tokenizer` reads back."""
        return atomic_torch_save(
            {
                "class": type(self).__name__,
                "format_version": FORMAT_VERSION,
                "palette": self.palette.cpu(),
                "grid": list(self.grid) if self.grid is not None else None,
                "info": self.info,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PaletteTokenizer:
        state = load_state(path, expect=cls.__name__)
        return cls(state["palette"], grid=state["grid"], info=state.get("info"))

    @classmethod
    def from_imagegpt_clusters(
        cls,
        clusters: Tensor | np.ndarray | Sequence[Sequence[float]],
        *,
        grid: tuple[int, int] | None = (32, 32),
    ) -> PaletteTokenizer:
        """ImageGPT colour clusters[n, 3] in [-1, 1] -> a palette in [0, 1] that yields the same ids.

        ImageGPTImageProcessor rescales uint8 by 1/255 and normalises with mean = std = 0.5, i.e. it compares
        2p - 1 with the clusters. Mapping each cluster to (c + 1) / 2 scales all distances by 1/4, so the nearest
        cluster, hence every id, is unchanged (up to float rounding on exact ties); decoding matches the model
        card's `127.5 * (c + 1)` to uint8. Use `ImageGPTImageProcessor.from_pretrained(...).clusters`. The
        pretrained checkpoints work on 32x32 images, hence the default grid.
        """
        c = torch.as_tensor(np.asarray(clusters), dtype=torch.float32)
        if c.ndim != 2 or c.shape[1] != 3:
            raise ValueError(f"ImageGPT clusters must have shape [n_clusters, 3] but got {tuple(c.shape)}.")
        if float(c.min()) < -1.0 - 1e-6 or float(c.max()) > 1.0 + 1e-6:
            raise ValueError(
                "ImageGPT clusters must lie in [-1, 1] (ImageGPT's normalised pixel range) but these span "
                f"[{float(c.min()):.3g}, {float(c.max()):.3g}]; pass the processor's `clusters` unchanged."
            )
        return cls((c + 1) / 2, grid=grid, info={"source": "imagegpt_clusters", "n_colors": len(c)})


def fit_palette(
    pixels: Tensor,
    *,
    n_colors: int = 64,
    seed: int = 0,
    iters: int = 20,
    max_pixels: int = 200_000,
    init: str = "k-means++",
) -> PaletteTokenizer:
    """k-means colour palette over pixels[b, c, h, w] in [0, 1] (ImageGPT, minGPT's image demo).

    Deterministic for a seed (on a given machine and thread count): a seeded subsample of at most `max_pixels`
    pixels, k-means++ (or `init="random"`: distinct random pixels) initialisation, then `iters` Lloyd steps; an
    emptied cluster is moved to the pixel farthest from its centre. `grid` is set to (h, w) of the input.
    """
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise ValueError(
            f"fit_palette expects pixels of shape [b, 1 or 3, h, w] but got {tuple(pixels.shape)}; "
            "pass a batch of grey or RGB images."
        )
    if init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++' or 'random', not {init!r}.")
    g = torch.Generator().manual_seed(seed)
    x = rearrange(pixels.detach().float().cpu(), "b c h w -> (b h w) c")
    if len(x) > max_pixels:
        x = x[torch.randperm(len(x), generator=g)[:max_pixels]]
    n_unique = len(torch.unique(x, dim=0))
    if n_unique < n_colors:
        raise ValueError(
            f"the pixels hold only {n_unique} distinct colours, fewer than n_colors={n_colors}; "
            f"pass n_colors <= {n_unique} or more varied images."
        )

    if init == "random":
        uniq = torch.unique(x, dim=0)
        centres = uniq[torch.randperm(len(uniq), generator=g)[:n_colors]].clone()
    else:
        centres = torch.empty(n_colors, x.shape[1])
        centres[0] = x[torch.randint(len(x), (1,), generator=g)]
        d2 = (x - centres[0]).pow(2).sum(1)
        for k in range(1, n_colors):
            # d2 > 0 somewhere because there are at least n_colors distinct pixels
            centres[k] = x[torch.multinomial(d2 / d2.sum(), 1, generator=g)]
            d2 = torch.minimum(d2, (x - centres[k]).pow(2).sum(1))

    for _ in range(iters):
        d = squared_distances(x, centres, exact=False)
        assign = d.argmin(1)
        counts = torch.bincount(assign, minlength=n_colors)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        dist_to_own = d.gather(1, assign[:, None]).squeeze(1)
        for k in torch.nonzero(counts == 0).flatten().tolist():
            far = int(dist_to_own.argmax())
            new[k] = x[far]
            dist_to_own[far] = -1.0
        if torch.equal(new, centres):
            break
        centres = new

    inertia = float(squared_distances(x, centres, exact=False).min(1).values.clamp(min=0).mean())
    info = {
        "source": "fit_palette",
        "n_colors": n_colors,
        "seed": seed,
        "iters": iters,
        "init": init,
        "n_pixels_fitted": len(x),
        "mean_squared_distance": inertia,
    }
    return PaletteTokenizer(centres.clamp(0, 1), grid=(pixels.shape[2], pixels.shape[3]), info=info)
