"""Why hyperfitting works, as measurements on an original/hyperfitted pair (after Li et al. 2026, who report: the
gain is not reproduced by an entropy-matched temperature nor by a static per-token reweighting; the change is a
context-dependent rank reordering concentrated in the final block, whose hidden states expand in effective
dimension). Works on ids, logits and hidden states; every figure keeps per-block values for intervals.

Units. Teacher-forced figures are computed per held-out block (n blocks of t tokens) and resampled by block;
decoding figures are per prompt.
"""

from __future__ import annotations

import numpy as np
import torch

from hyperfit.common import stats


@torch.no_grad()
def hidden_states(model: torch.nn.Module, blocks: torch.Tensor, *, batch_size: int = 8) -> list[torch.Tensor]:
    """Every layer's hidden states on ``blocks[n, t]``: a list of L + 1 float32 CPU tensors ``[n, t, d]`` (the
    embedding output, then each block's output, as ``output_hidden_states`` gives them; the last one is after
    the final norm in Llama-style models)."""
    device = next(model.parameters()).device
    layers: list[list[torch.Tensor]] = []
    for start in range(0, blocks.size(0), batch_size):
        out = model(input_ids=blocks[start : start + batch_size].to(device), output_hidden_states=True)
        if not layers:
            layers = [[] for _ in out.hidden_states]
        for i, h in enumerate(out.hidden_states):
            layers[i].append(h.float().cpu())
    return [torch.cat(parts) for parts in layers]


def _pr_moments(h: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-block sufficient statistics from which the participation ratio of any block resample follows exactly."""
    x = h.double()
    x = x - x.reshape(-1, x.size(-1)).mean(0)  # a shift leaves every covariance alone; it avoids cancellation
    s = x.sum(1)  # [n, d]
    g = torch.einsum("ntd,nte->nde", x, x)  # [n, d, d]
    flat = g.reshape(g.size(0), -1)
    sg = torch.einsum("ad,bde->bae", s, g)
    return {
        "t": float(h.size(1)),
        "trace": torch.diagonal(g, dim1=1, dim2=2).sum(-1).numpy(),  # [n]
        "gram": (flat @ flat.T).numpy(),  # [n, n]: <G_a, G_b>
        "ss": (s @ s.T).numpy(),  # [n, n]
        "q": torch.einsum("bae,ce->bac", sg, s).numpy(),  # [n, n, n]: S G_b S^T
    }


def _pr_from_counts(m: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Participation ratio for each row of ``counts[r, n]`` (how often each block is drawn)."""
    w = counts.astype(float)
    big_n = m["t"] * w.sum(1)
    trace = w @ m["trace"] / big_n - np.einsum("ra,ac,rc->r", w, m["ss"], w) / big_n**2
    m2 = np.einsum("ra,ac,rc->r", w, m["ss"], w)
    a2 = np.einsum("ra,ac,rc->r", w, m["gram"], w)
    mam = np.einsum("rb,ra,bac,rc->r", w, w, m["q"], w)
    frob = a2 / big_n**2 - 2 * mam / big_n**3 + m2**2 / big_n**4
    return trace**2 / frob


def participation_ratio(h: torch.Tensor) -> float:
    """Effective dimension of hidden states ``h[n, t, d]`` pooled over every position: the participation ratio
    ``(Σ λ)² / Σ λ²`` of the eigenvalues λ of their covariance, i.e. ``tr(C)² / ‖C‖_F²`` (1 = one direction,
    d = all directions equally). No eigendecomposition is needed."""
    x = h.reshape(-1, h.size(-1)).double()
    c = torch.cov(x.T, correction=0)
    return float(torch.trace(c) ** 2 / (c * c).sum())


def participation_ratios(
    h_a: torch.Tensor, h_b: torch.Tensor, *, n_resamples: int = stats.N_RESAMPLES, seed: int = 0
) -> dict:
    """Participation ratio of two models' hidden states on the same blocks, with 95 % bootstrap intervals over
    blocks and the paired interval of the difference b - a (the same block resamples for both)."""
    n = h_a.size(0)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_resamples)])
    moments_a, moments_b = _pr_moments(h_a), _pr_moments(h_b)
    ones = np.ones((1, n))
    pr_a, pr_b = _pr_from_counts(moments_a, ones)[0], _pr_from_counts(moments_b, ones)[0]
    draws_a, draws_b = _pr_from_counts(moments_a, counts), _pr_from_counts(moments_b, counts)

    def interval(draws: np.ndarray) -> list[float]:
        return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]

    diff_ci = interval(draws_b - draws_a)
    return {
        "a": float(pr_a),
        "a_ci": interval(draws_a),
        "b": float(pr_b),
        "b_ci": interval(draws_b),
        "diff": float(pr_b - pr_a),
        "diff_ci": diff_ci,
        "ci_includes_zero": not (diff_ci[0] > 0 or diff_ci[1] < 0),
    }


def layer_change(h_a: torch.Tensor, h_b: torch.Tensor) -> dict:
    """How much one layer's output differs between two models on the same blocks: per block, the mean over
    positions of ``‖h_b - h_a‖ / ‖h_a‖`` (``relative_change``) and of the cosine similarity; means with
    bootstrap intervals over blocks, and the per-block values."""
    diff = (h_b - h_a).norm(dim=-1) / h_a.norm(dim=-1).clamp_min(1e-12)
    cosine = torch.nn.functional.cosine_similarity(h_a, h_b, dim=-1)
    rel = diff.mean(1).double().tolist()
    cos = cosine.mean(1).double().tolist()
    return {
        "relative_change": float(np.mean(rel)),
        "relative_change_ci": list(stats.mean_ci(rel)),
        "cosine": float(np.mean(cos)),
        "cosine_ci": list(stats.mean_ci(cos)),
        "block_relative_change": rel,
    }


# ------------------------------------------------------------------------------------------------------------
# Static per-token reweighting
# ------------------------------------------------------------------------------------------------------------


def mean_distribution(
    logits: torch.Tensor, *, bias: torch.Tensor | None = None, chunk: int = 256
) -> torch.Tensor:
    """Mean over positions of softmax(``logits[N, v]`` + bias), float64, computed in chunks of positions."""
    total = torch.zeros(logits.size(-1), dtype=torch.float64)
    for start in range(0, logits.size(0), chunk):
        x = logits[start : start + chunk].float()
        if bias is not None:
            x = x + bias
        total += torch.softmax(x, dim=-1).double().sum(0)
    return total / logits.size(0)


def fit_logit_bias(
    logits: torch.Tensor, target: torch.Tensor, *, iterations: int = 60, floor: float = 1e-10
) -> tuple[torch.Tensor, dict]:
    """One static bias per token, ``b[v]``, such that the mean next-token distribution of ``logits[N, v] + b``
    matches ``target[v]`` (another model's mean distribution on the same positions). Fitted by iterative
    proportional fitting, ``b += log target - log current`` (probabilities floored at ``floor``). Returns the bias
    (float32) and the total-variation distance between the marginals before and after fitting."""
    target = target.double()
    bias = torch.zeros(logits.size(-1), dtype=torch.float32)
    start = mean_distribution(logits)
    for _ in range(iterations):
        current = mean_distribution(logits, bias=bias)
        bias += (torch.log(target.clamp_min(floor)) - torch.log(current.clamp_min(floor))).float()
    final = mean_distribution(logits, bias=bias)
    return bias, {
        "tv_before": float(0.5 * (start - target).abs().sum()),
        "tv_after": float(0.5 * (final - target).abs().sum()),
        "iterations": iterations,
    }


class StaticLogitBias:
    """Logits processor adding a fixed per-token bias at every step: ``scores + bias`` (context-independent)."""

    def __init__(self, bias: torch.Tensor):
        self.bias = bias

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + self.bias.to(scores.device, scores.dtype)


# ------------------------------------------------------------------------------------------------------------
# Rank reordering
# ------------------------------------------------------------------------------------------------------------


def rank_reordering(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    *,
    n_blocks: int,
    bias: torch.Tensor | None = None,
    top_k: int = 10,
    chunk: int = 256,
) -> dict:
    """Where model b's next-token choice differs from model a's, position by position (``logits[N, v]``, the N
    positions being ``n_blocks`` equal blocks in order).

    ``argmax_changed``: share of positions whose top-1 token differs (a rank reordering at the top);
    ``sharpened_only``: share whose top-1 is the same but b puts more probability on it (only sharpness
    changed); ``top_k_kendall_tau``: mean Kendall τ between a's ranking of its own top-k tokens and b's ranking
    of the same tokens (1 = same order). With ``bias`` (a static per-token bias for a):
    ``static_reproduces``: of the positions where the argmax changed, the share where argmax(a + bias) equals
    b's argmax, and ``static_agreement`` / ``plain_agreement``: top-1 agreement with b of a + bias and of a.
    Each share carries a bootstrap interval over blocks and the per-block values.
    """
    changed, sharpened, tau, reproduced, static_agree, plain_agree = [], [], [], [], [], []
    pairs = torch.triu_indices(top_k, top_k, offset=1)
    for start in range(0, logits_a.size(0), chunk):
        a, b = logits_a[start : start + chunk].float(), logits_b[start : start + chunk].float()
        arg_a, arg_b = a.argmax(-1), b.argmax(-1)
        p_a = torch.softmax(a, -1).gather(1, arg_a[:, None]).squeeze(1)
        p_b = torch.softmax(b, -1).gather(1, arg_a[:, None]).squeeze(1)
        changed.append(arg_a != arg_b)
        sharpened.append((arg_a == arg_b) & (p_b > p_a))
        top = a.topk(top_k, dim=-1).indices
        order_a = a.gather(1, top)
        order_b = b.gather(1, top)
        sign_a = torch.sign(order_a[:, pairs[0]] - order_a[:, pairs[1]])
        sign_b = torch.sign(order_b[:, pairs[0]] - order_b[:, pairs[1]])
        tau.append((sign_a * sign_b).mean(-1))
        plain_agree.append(arg_a == arg_b)
        if bias is not None:
            arg_static = (a + bias).argmax(-1)
            static_agree.append(arg_static == arg_b)
            reproduced.append(arg_static == arg_b)

    def per_block(values: list[torch.Tensor], mask: torch.Tensor | None = None) -> list[float]:
        flat = torch.cat(values).double().view(n_blocks, -1)
        if mask is None:
            return flat.mean(-1).tolist()
        m = mask.view(n_blocks, -1).double()
        return ((flat * m).sum(-1) / m.sum(-1).clamp_min(1)).tolist()

    def summarise(values: list[float], weights: list[float] | None = None) -> dict:
        if weights is None:
            mean = float(np.mean(values))
            ci = list(stats.mean_ci(values))
        else:  # a share among selected positions: a ratio over blocks
            num = [v * w for v, w in zip(values, weights, strict=True)]
            mean = sum(num) / max(sum(weights), 1)
            ci = list(stats.ratio_ci(num, weights))
        return {"value": mean, "ci": ci, "per_block": values}

    changed_mask = torch.cat(changed)
    out = {
        "n_positions": int(changed_mask.numel()),
        "argmax_changed": summarise(per_block(changed)),
        "sharpened_only": summarise(per_block(sharpened)),
        "top_k_kendall_tau": summarise(per_block(tau)),
        "top_k": top_k,
        "plain_agreement": summarise(per_block(plain_agree)),
    }
    if bias is not None:
        counts = changed_mask.view(n_blocks, -1).double().sum(-1).tolist()
        out["static_reproduces"] = summarise(per_block(reproduced, changed_mask), counts)
        out["static_agreement"] = summarise(per_block(static_agree))
    return out
