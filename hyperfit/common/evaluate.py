"""One evaluation pass on ids: greedy continuations of held-out prompts and teacher-forced sharpness.

Paper §2 (Carlsson et al. 2025): 32-token contexts, greedy continuations, TTR over the last 96 generated ids;
perplexity, next-token entropy (nats) and top-1 probability on held-out blocks. Modality-agnostic: every recipe
passes ids and gets numbers back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from hyperfit.common.analysis import loop_share, rep_n, token_stats, ttr
from hyperfit.common.decode import LogitsProcessor, decode


@torch.no_grad()
def collect_token_stats(
    model: torch.nn.Module, blocks: torch.Tensor, *, batch_size: int = 8
) -> dict[str, torch.Tensor]:
    """Per-position :func:`analysis.token_stats` of ``model`` on ``blocks[n, t]`` (targets = the next tokens),
    flattened over blocks in block order: every tensor has n × (t - 1) entries, on the CPU."""
    device = next(model.parameters()).device
    parts: list[dict[str, torch.Tensor]] = []
    for start in range(0, blocks.size(0), batch_size):
        ids = blocks[start : start + batch_size].to(device)
        # Statistics of every position, the last one (which predicts nothing) dropped afterwards: slicing the
        # logits first would copy all of them.
        targets = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-1)
        stats = token_stats(model(input_ids=ids).logits, targets)
        parts.append({k: v[:, :-1].reshape(-1).cpu() for k, v in stats.items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def teacher_forced_stats(
    model: torch.nn.Module, blocks: torch.Tensor, *, batch_size: int = 16
) -> dict[str, float]:
    """Corpus-level statistics of ``model`` on held-out ``blocks[n, t]`` (every position after the first).

    ``loss``: mean next-token NLL in nats over all predicted tokens; ``perplexity = exp(loss)``;
    ``seq_perplexity``: mean over blocks of each block's exp(mean NLL) (Hugging Face ``evaluate``'s convention);
    ``entropy``: mean entropy (nats) of the predicted distribution; ``top1_prob``: mean largest probability;
    ``target_top1``: share of positions whose argmax is the reference token.
    """
    stats = collect_token_stats(model, blocks, batch_size=batch_size)
    nll = stats["nll"].double()
    loss = float(nll.mean())
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "seq_perplexity": float(nll.view(blocks.size(0), -1).mean(-1).exp().mean()),
        "entropy": float(stats["entropy"].double().mean()),
        "top1_prob": float(stats["top1_prob"].double().mean()),
        "target_top1": float((stats["argmax"] == blocks[:, 1:].reshape(-1)).double().mean()),
        "eval_tokens": nll.numel(),
    }


@torch.no_grad()
def generation_stats(
    model: torch.nn.Module,
    prompts: torch.Tensor,
    *,
    max_new_tokens: int = 96,
    ttr_window: int = 96,
    batch_size: int = 16,
    eos_id: int | Sequence[int] | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    min_new_tokens: int = 0,
) -> tuple[dict[str, float], list[list[int]]]:
    """Greedy-continue ``prompts[n, p]`` and measure the continuations.

    Returns (metrics, generated id lists). ``ttr``: mean over prompts of the type-token ratio of the last
    ``ttr_window`` generated ids (prompt excluded; a row cut short by its end-of-sequence id counts only its real
    tokens, never padding). ``gen_entropy`` / ``gen_top1_prob``: raw next-token entropy (nats) and top-1 mass at
    the generated positions. ``gen_length``: mean number of generated tokens. ``rep_4``: SimCTG's corpus rep-4
    of the continuations; ``loop_share``: share of continuations that end in a back-to-back repeated phrase;
    ``short_share`` / ``short_length``: share of rows that ended at an end-of-sequence id before
    ``max_new_tokens``, and their mean length (NaN when none; ``min_new_tokens`` forbids ending earlier).
    """
    device = next(model.parameters()).device
    sequences: list[list[int]] = []
    ent_sum = top1_sum = 0.0
    steps = 0
    batches = range(0, prompts.size(0), batch_size)
    for start in tqdm(batches, desc="greedy decoding", disable=None, leave=False):  # a terminal only
        batch = prompts[start : start + batch_size].to(device)
        out = decode(
            model,
            batch,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            logits_processors=logits_processors,
            min_new_tokens=min_new_tokens,
        )
        sequences.extend(out.sequences())
        # Only the steps that produced a real token (or the end-of-sequence id) describe the model.
        live = torch.arange(out.entropy.size(1), device=device)[None, :] <= out.lengths[:, None]
        live = live[:, : out.entropy.size(1)]
        ent_sum += out.entropy[live].sum().item()
        top1_sum += out.top1_prob[live].sum().item()
        steps += int(live.sum())
    ttrs = [ttr(seq, window=ttr_window) for seq in sequences]
    return {
        "ttr": sum(ttrs) / len(ttrs),
        "gen_entropy": ent_sum / max(steps, 1),
        "gen_top1_prob": top1_sum / max(steps, 1),
        "gen_length": sum(len(s) for s in sequences) / len(sequences),
        "rep_4": rep_n(sequences, n=4),
        "loop_share": loop_share(sequences),
        **short_rows(sequences, max_new_tokens=max_new_tokens),
    }, sequences


def short_rows(sequences: Sequence[Sequence[int]], *, max_new_tokens: int) -> dict[str, float]:
    """``short_share``: share of continuations shorter than ``max_new_tokens`` (they ended at an
    end-of-sequence id); ``short_length``: their mean length in tokens, NaN when there are none."""
    short = [len(s) for s in sequences if len(s) < max_new_tokens]
    return {
        "short_share": len(short) / max(len(sequences), 1),
        "short_length": sum(short) / len(short) if short else math.nan,
    }


def average_over_domains(by_domain: dict[str, dict]) -> dict:
    """The unweighted mean over domains of every number all domains report (the paper averages its news,
    Wikipedia and fiction figures), with the per-domain figures kept under ``domains``."""
    first = next(iter(by_domain.values()))
    shared = [
        k
        for k, v in first.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and all(isinstance(d.get(k), int | float) for d in by_domain.values())
    ]
    average = {k: sum(float(d[k]) for d in by_domain.values()) / len(by_domain) for k in shared}
    return {**average, "domains": by_domain}
