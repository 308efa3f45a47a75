"""A small convolutional VQ-VAE image tokenizer (van den Oord et al. 2017) and its training loop.

EMA codebook updates and dead-code restarts as in lucidrains/vector-quantize-pytorch; several pixels per token
(the downsample factor), unlike the palette. The interface it implements is in tokenizers.py.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hyperfit.image.codebook import (
    FORMAT_VERSION,
    atomic_torch_save,
    check_codes,
    load_state,
    match_channels,
    nearest,
    resolve_grid,
)


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
        pixels = match_channels(pixels, self.config["channels"], what="this VQ-VAE")
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
        codes = nearest(flat.detach(), self.codebook, exact=False)
        quantized = rearrange(self.codebook[codes], "(b h w) d -> b d h w", b=b, h=gh, w=gw)
        return quantized, rearrange(codes, "(b t) -> b t", b=b)

    def lookup(self, codes: Tensor, *, grid: tuple[int, int] | None = None) -> Tensor:
        """codes[b, g_h*g_w] -> quantised latents[b, d, g_h, g_w] (codebook rows); grid defaults to `self.grid`."""
        codes = check_codes(codes, self.vocab_size, what="this codebook")
        gh, gw = resolve_grid(codes, grid, self.grid)
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
        return atomic_torch_save(
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
        state = load_state(path, expect=cls.__name__)
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


def _code_usage(codes: Tensor, vocab_size: int) -> tuple[float, float]:
    """codes[...] -> (fraction of the vocabulary used, perplexity exp(H) of the code histogram in nats)."""
    counts = torch.bincount(codes.flatten().cpu(), minlength=vocab_size).double()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).double().mean()), float(entropy.exp())
