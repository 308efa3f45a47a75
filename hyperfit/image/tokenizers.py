"""Image tokenizers: pixels[b, c, h, w] <-> codes[b, t], the only place pixels become ids (STYLE rule 2).

Two implementations of one small interface: an ImageGPT-style k-means colour palette (one token per pixel,
REFERENCE.md §D) and a small VQ-VAE (van den Oord et al. 2017, EMA codebook as in lucidrains/vector-quantize-pytorch).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

FORMAT_VERSION = 1


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
# shared checks


def _match_channels(pixels: Tensor, channels: int, *, what: str) -> Tensor:
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


def _check_codes(codes: Tensor, vocab_size: int, *, what: str) -> Tensor:
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


def _resolve_grid(
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


def _squared_distances(x: Tensor, centres: Tensor, *, exact: bool, chunk: int = 8192) -> Tensor:
    """x[n, d], centres[v, d] -> squared Euclidean distances [n, v].

    `exact=True` subtracts before squaring, so a point equal to a centre is at distance exactly 0; that is what
    makes `encode_images(decode_codes(codes)) == codes` hold. The matmul form is faster but rounds (used in k-means).
    """
    if not exact:
        return (x * x).sum(1, keepdim=True) - 2 * x @ centres.T + (centres * centres).sum(1)[None]
    return torch.cat(
        [(x[i : i + chunk, None, :] - centres[None]).pow(2).sum(-1) for i in range(0, len(x), chunk)]
    )


def _nearest(x: Tensor, centres: Tensor, *, exact: bool = True, chunk: int = 8192) -> Tensor:
    """x[n, d] -> LongTensor[n]: index of the nearest centre (squared Euclidean, ties to the lowest index)."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(
        [
            _squared_distances(x[i : i + chunk], centres, exact=exact).argmin(1)
            for i in range(0, len(x), chunk)
        ]
    )


def _atomic_torch_save(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def _code_usage(codes: Tensor, vocab_size: int) -> tuple[float, float]:
    """codes[...] -> (fraction of the vocabulary used, perplexity exp(H) of the code histogram in nats)."""
    counts = torch.bincount(codes.flatten().cpu(), minlength=vocab_size).double()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).double().mean()), float(entropy.exp())


# ---------------------------------------------------------------------------------------------------------------
# palette (ImageGPT-style colour clusters)


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
        pixels = _match_channels(pixels, self.channels, what="this palette")
        b = pixels.shape[0]
        flat = rearrange(pixels.float(), "b c h w -> (b h w) c")
        codes = _nearest(flat, self.palette.to(flat.device))
        return rearrange(codes, "(b t) -> b t", b=b)

    def decode_codes(self, codes: Tensor, *, grid: tuple[int, int] | None = None) -> Tensor:
        """codes[b, h*w] (or [h*w]) -> pixels[b, c, h, w] float in [0, 1]; grid defaults to `self.grid`."""
        codes = _check_codes(codes, self.vocab_size, what="this palette")
        h, w = _resolve_grid(codes, grid, self.grid)
        colours = self.palette.to(codes.device)[codes]
        return rearrange(colours, "b (h w) c -> b c h w", h=h, w=w)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a small .pt file (palette, grid, info, class name) that `load_image_tokenizer` reads back."""
        return _atomic_torch_save(
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
        state = _load_state(path, expect=cls.__name__)
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
        d = _squared_distances(x, centres, exact=False)
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

    inertia = float(_squared_distances(x, centres, exact=False).min(1).values.clamp(min=0).mean())
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


# ---------------------------------------------------------------------------------------------------------------
# VQ-VAE


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class VQVAETokenizer(nn.Module):
    """A small convolutional VQ-VAE: pixels[b, c, h, w] -> latents[b, d, h/s, w/s] -> nearest of `codebook_size` codes.

    The codebook is a buffer updated by exponential moving averages of the encoder outputs assigned to each code
    (VQ-VAE appendix A.1; lucidrains/vector-quantize-pytorch), with a commitment loss on the encoder and
    straight-through gradients; codes left unused are restarted from encoder outputs (see `train_vqvae`). EMA
    was chosen over a learned codebook loss because it converges faster on CPU-sized runs and, with restarts,
    keeps most codes in use. `quantize` and `lookup` are pure: training updates happen only in `train_vqvae`.
    """

    def __init__(
        self,
        *,
        image_size: tuple[int, int] = (16, 16),
        channels: int = 3,
        hidden: int = 32,
        latent_dim: int = 16,
        codebook_size: int = 256,
        downsample: int = 2,
    ) -> None:
        super().__init__()
        if downsample not in (1, 2, 4, 8):
            raise ValueError(f"downsample must be 1, 2, 4 or 8, not {downsample}.")
        if image_size[0] % downsample or image_size[1] % downsample:
            raise ValueError(
                f"image_size {image_size[0]}x{image_size[1]} is not divisible by downsample={downsample}; "
                "pick a downsample factor that divides both sides."
            )
        self.config = {
            "image_size": [int(image_size[0]), int(image_size[1])],
            "channels": channels,
            "hidden": hidden,
            "latent_dim": latent_dim,
            "codebook_size": codebook_size,
            "downsample": downsample,
        }
        n_down = int(math.log2(downsample))
        enc: list[nn.Module] = [nn.Conv2d(channels, hidden, 3, padding=1)]
        for _ in range(n_down):
            enc += [nn.ReLU(), nn.Conv2d(hidden, hidden, 4, stride=2, padding=1)]
        enc += [_ResBlock(hidden), nn.ReLU(), nn.Conv2d(hidden, latent_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_dim, hidden, 3, padding=1), _ResBlock(hidden)]
        for _ in range(n_down):
            dec += [nn.ReLU(), nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1)]
        dec += [nn.ReLU(), nn.Conv2d(hidden, channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("codebook", torch.randn(codebook_size, latent_dim))
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.info: dict[str, Any] = {}

    @property
    def vocab_size(self) -> int:
        return self.config["codebook_size"]

    @property
    def grid(self) -> tuple[int, int]:
        s = self.config["downsample"]
        return self.config["image_size"][0] // s, self.config["image_size"][1] // s

    def encode_latents(self, pixels: Tensor) -> Tensor:
        """pixels[b, c, h, w] in [0, 1] -> continuous latents[b, d, h/s, w/s] (before quantisation)."""
        pixels = _match_channels(pixels, self.config["channels"], what="this VQ-VAE")
        s = self.config["downsample"]
        if pixels.shape[2] % s or pixels.shape[3] % s:
            raise ValueError(
                f"images of {pixels.shape[2]}x{pixels.shape[3]} pixels are not divisible by this VQ-VAE's "
                f"downsample factor {s}; resize or crop them to a multiple of {s}."
            )
        return self.encoder(pixels.float() * 2 - 1)

    def quantize(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """latents[b, d, g_h, g_w] -> (quantised latents[b, d, g_h, g_w] = codebook rows, codes LongTensor[b, g_h*g_w])."""
        b, _, gh, gw = latents.shape
        flat = rearrange(latents, "b d h w -> (b h w) d")
        # matmul distances (fast); a near-tie rounded either way still yields a codebook row and its id
        codes = _nearest(flat.detach(), self.codebook, exact=False)
        quantized = rearrange(self.codebook[codes], "(b h w) d -> b d h w", b=b, h=gh, w=gw)
        return quantized, rearrange(codes, "(b t) -> b t", b=b)

    def lookup(self, codes: Tensor, *, grid: tuple[int, int] | None = None) -> Tensor:
        """codes[b, g_h*g_w] -> quantised latents[b, d, g_h, g_w] (codebook rows); grid defaults to `self.grid`."""
        codes = _check_codes(codes, self.vocab_size, what="this codebook")
        gh, gw = _resolve_grid(codes, grid, self.grid)
        return rearrange(self.codebook[codes], "b (h w) d -> b d h w", h=gh, w=gw)

    def decode_latents(self, quantized: Tensor) -> Tensor:
        """quantised latents[b, d, g_h, g_w] -> unclamped reconstruction[b, c, h, w] in roughly [0, 1]."""
        return (self.decoder(quantized) + 1) / 2

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """pixels[b, c, h, w] -> (reconstruction[b, c, h, w], latents, quantised latents, codes[b, t]).

        The reconstruction is decoded from straight-through latents, so the reconstruction loss reaches the
        encoder; it is not clamped (clamping would stop gradients at the range edges).
        """
        latents = self.encode_latents(pixels)
        quantized, codes = self.quantize(latents)
        straight_through = latents + (quantized - latents).detach()
        return self.decode_latents(straight_through), latents, quantized, codes

    @torch.no_grad()
    def encode_images(self, pixels: Tensor, *, batch_size: int = 1024) -> Tensor:
        """pixels[b, c, h, w] float in [0, 1] -> codes LongTensor[b, (h/s)*(w/s)], raster order."""
        out = [self.quantize(self.encode_latents(p))[1] for p in pixels.split(batch_size)]
        return torch.cat(out) if out else torch.zeros(0, math.prod(self.grid), dtype=torch.long)

    @torch.no_grad()
    def decode_codes(self, codes: Tensor, *, grid: tuple[int, int] | None = None) -> Tensor:
        """codes[b, g_h*g_w] (or [g_h*g_w]) -> pixels[b, c, g_h*s, g_w*s] float, clamped to [0, 1]."""
        return self.decode_latents(self.lookup(codes, grid=grid)).clamp(0, 1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write config + weights + codebook (.pt, with the class name) for `load_image_tokenizer`."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return _atomic_torch_save(
            {
                "class": type(self).__name__,
                "format_version": FORMAT_VERSION,
                "config": self.config,
                "state_dict": state,
                "info": self.info,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VQVAETokenizer:
        state = _load_state(path, expect=cls.__name__)
        cfg = dict(state["config"])
        cfg["image_size"] = tuple(cfg["image_size"])
        model = cls(**cfg)
        model.load_state_dict(state["state_dict"])
        model.info = dict(state.get("info") or {})
        return model.eval()


@torch.no_grad()
def _ema_update(
    model: VQVAETokenizer, latents: Tensor, codes: Tensor, *, decay: float, eps: float = 1e-5
) -> None:
    """Move each used code toward the mean of the encoder outputs assigned to it (Laplace-smoothed counts)."""
    flat = rearrange(latents, "b d h w -> (b h w) d").float()
    onehot_counts = torch.bincount(codes.flatten(), minlength=model.vocab_size).float()
    sums = torch.zeros_like(model.codebook).index_add_(0, codes.flatten(), flat)
    model.ema_count.mul_(decay).add_(onehot_counts, alpha=1 - decay)
    model.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
    n = model.ema_count.sum()
    smoothed = (model.ema_count + eps) / (n + model.vocab_size * eps) * n
    model.codebook.copy_(model.ema_sum / smoothed[:, None])


@torch.no_grad()
def _restart_dead_codes(
    model: VQVAETokenizer, latents: Tensor, *, threshold: float, generator: torch.Generator
) -> int:
    """Codes whose EMA usage fell below `threshold` vectors per step are moved onto random encoder outputs."""
    dead = torch.nonzero(model.ema_count < threshold).flatten()
    if len(dead) == 0:
        return 0
    flat = rearrange(latents, "b d h w -> (b h w) d").float()
    pick = torch.randint(len(flat), (len(dead),), generator=generator).to(flat.device)
    model.codebook[dead] = flat[pick]
    model.ema_count[dead] = threshold
    model.ema_sum[dead] = flat[pick] * threshold
    return len(dead)


def train_vqvae(
    images: Tensor,
    *,
    codebook_size: int = 256,
    latent_dim: int = 16,
    hidden: int = 32,
    downsample: int = 2,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 2e-3,
    commitment: float = 0.25,
    decay: float = 0.95,
    dead_code_threshold: float = 1.0,
    seed: int = 0,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[VQVAETokenizer, dict[str, Any]]:
    """Train a VQ-VAE tokenizer on images[n, c, h, w] in [0, 1]; returns (tokenizer in eval mode, report).

    Loss per batch: MSE(reconstruction, pixels) + commitment * MSE(latents, codebook rows). The codebook is
    initialised from encoder outputs of the first batch, follows EMAs of its assignments, and codes whose EMA
    count drops below `dead_code_threshold` are restarted on random encoder outputs of the current batch.
    The report holds `recon_mse` (mean squared pixel error of decode(encode(x)) over all images, pixels in
    [0, 1]), `codebook_usage` (fraction of codes used on the images), `perplexity` (exp of the entropy of the code
    histogram, at most codebook_size), `seconds` and `history` (one dict per epoch, the same dicts sent to `log`).
    Runs on images.device; the caller's global RNG state is left untouched.
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"train_vqvae expects a non-empty batch of images [n, c, h, w] but got shape {tuple(images.shape)}."
        )
    start = time.perf_counter()
    device = images.device
    n = len(images)
    batch_size = min(batch_size, n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQVAETokenizer(
            image_size=(images.shape[2], images.shape[3]),
            channels=images.shape[1],
            hidden=hidden,
            latent_dim=latent_dim,
            codebook_size=codebook_size,
            downsample=downsample,
        ).to(device)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)
    warmup = max(1, total_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # short linear warm-up, then cosine decay towards zero
        opt, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )

    with torch.no_grad():  # data-dependent init: codes start where the encoder outputs are
        first = images[torch.randperm(n, generator=g)[:batch_size].to(device)].float()
        flat = rearrange(model.encode_latents(first), "b d h w -> (b h w) d")
        pick = torch.randint(len(flat), (codebook_size,), generator=g).to(device)
        model.codebook.copy_(flat[pick])
        model.ema_sum.copy_(flat[pick])

    history: list[dict[str, Any]] = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g).to(device)
        sums = {"recon_mse": 0.0, "commitment_mse": 0.0, "restarts": 0}
        used = torch.zeros(codebook_size, dtype=torch.bool, device=device)
        for i in range(0, n, batch_size):
            x = images[order[i : i + batch_size]].float()
            recon, latents, quantized, codes = model(x)
            recon_loss = F.mse_loss(recon, x)
            commit_loss = F.mse_loss(latents, quantized.detach())
            loss = recon_loss + commitment * commit_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            _ema_update(model, latents.detach(), codes, decay=decay)
            sums["restarts"] += _restart_dead_codes(
                model, latents.detach(), threshold=dead_code_threshold, generator=g
            )
            used[codes.flatten()] = True
            sums["recon_mse"] += recon_loss.item() * len(x)
            sums["commitment_mse"] += commit_loss.item() * len(x)
        row = {
            "epoch": epoch + 1,
            "recon_mse": sums["recon_mse"] / n,
            "commitment_mse": sums["commitment_mse"] / n,
            "codes_used": float(used.float().mean()),
            "restarts": sums["restarts"],
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        if log is not None:
            log(row)

    model.eval()
    with torch.no_grad():
        codes = model.encode_images(images)
        se = sum(
            float((model.decode_codes(c) - x.float()).pow(2).sum())
            for c, x in zip(codes.split(1024), images.split(1024), strict=True)
        )
    usage, perplexity = _code_usage(codes, codebook_size)
    report = {
        "recon_mse": se / images.numel(),
        "codebook_usage": usage,
        "perplexity": perplexity,
        "codebook_size": codebook_size,
        "grid": list(model.grid),
        "n_images": n,
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "history": history,
    }
    model.info = {k: v for k, v in report.items() if k != "history"} | {"source": "train_vqvae"}
    return model, report


# ---------------------------------------------------------------------------------------------------------------
# loading and checks

_CLASSES: dict[str, Any] = {"PaletteTokenizer": PaletteTokenizer, "VQVAETokenizer": VQVAETokenizer}


def _load_state(path: str | os.PathLike[str], *, expect: str | None = None) -> dict[str, Any]:
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
    if name not in _CLASSES:
        raise ValueError(
            f"{path} does not name a known image tokenizer class (found {name!r}, expected one of {sorted(_CLASSES)}); "
            "re-save it with tokenizer.save()."
        )
    if expect is not None and name != expect:
        raise ValueError(f"{path} holds a {name}, not a {expect}; load it with load_image_tokenizer().")
    return state


def load_image_tokenizer(path: str | os.PathLike[str]) -> PaletteTokenizer | VQVAETokenizer:
    """Read a file written by `PaletteTokenizer.save` or `VQVAETokenizer.save`, dispatching on its class name."""
    name = _load_state(path)["class"]
    return _CLASSES[name].load(path)


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
