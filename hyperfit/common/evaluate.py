"""One evaluation pass on ids: greedy continuations of held-out prompts and teacher-forced sharpness.

Paper §2 (Carlsson et al. 2025): 32-token contexts, greedy continuations, TTR over the last 96 generated ids;
perplexity, next-token entropy (nats) and top-1 probability on held-out blocks. Modality-agnostic: every recipe
passes ids and gets numbers back, each headline figure with a 95 % bootstrap interval over prompts (or blocks)
and the per-prompt parts it is computed from, so that two evaluations can be compared prompt by prompt.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from hyperfit.common import stats
from hyperfit.common.analysis import loop_share, ngram_repeats, rep_n, repetition_loop, token_stats, ttr
from hyperfit.common.decode import LogitsProcessor, decode


@dataclass(frozen=True)
class Ratio:
    """A figure as ``Σ numerator / Σ denominator`` over units (prompts, held-out blocks), ``exp`` of it
    when ``exp``; without a denominator, the mean over units. Names are keys of each unit's parts."""

    numerator: str
    denominator: str | None = None
    exp: bool = False


# Every headline figure from its per-unit parts, so that intervals and paired differences resample exactly the
# figure as it is reported: a mean over prompts (TTR), or a corpus-level ratio (rep-4, loss, perplexity).
FIGURES: dict[str, Ratio] = {
    "ttr": Ratio("ttr"),
    "gen_entropy": Ratio("gen_entropy_sum", "gen_steps"),
    "gen_top1_prob": Ratio("gen_top1_sum", "gen_steps"),
    "gen_length": Ratio("length"),
    "length": Ratio("length"),
    "rep_4": Ratio("rep_4_repeats", "rep_4_ngrams"),
    "loop_share": Ratio("loop"),
    "short_share": Ratio("short"),
    "short_length": Ratio("short_tokens", "short"),
    "loss": Ratio("nll_sum", "tokens"),
    "perplexity": Ratio("nll_sum", "tokens", exp=True),
    "seq_perplexity": Ratio("block_perplexity"),
    "entropy": Ratio("entropy_sum", "tokens"),
    "top1_prob": Ratio("top1_sum", "tokens"),
    "target_top1": Ratio("target_top1_hits", "tokens"),
}


def _parts(units: Sequence[dict], figure: Ratio) -> tuple[list[float], list[float] | None] | None:
    """(numerators, denominators or None) of ``figure`` over ``units``, or None when some unit lacks a part."""
    keys = [figure.numerator] + ([figure.denominator] if figure.denominator else [])
    if not units or any(key not in unit for unit in units for key in keys):
        return None
    numerators = [float(unit[figure.numerator]) for unit in units]
    return numerators, [float(unit[figure.denominator]) for unit in units] if figure.denominator else None


def figure_intervals(
    units: Sequence[dict],
    *,
    strata: Sequence[Hashable] | None = None,
    figures: dict[str, Ratio] = FIGURES,
    names: Sequence[str] | None = None,
) -> dict[str, list[float]]:
    """``{"<figure>_ci": [low, high]}``: the 95 % bootstrap interval over units of every figure in ``figures``
    (those named in ``names``, if given) whose parts all units hold and whose interval is defined. With ``strata`` (e.g. one held-out domain
    per prompt) units are resampled within their stratum and the figure is the mean over strata, as reported."""
    out = {}
    for name in names or figures:
        parts = _parts(units, figures[name]) if name in figures else None
        if parts is None:
            continue
        numerators, denominators = parts
        low, high = stats.ratio_ci(
            numerators,
            denominators or [1.0] * len(numerators),
            transform=np.exp if figures[name].exp else None,
            strata=strata,
        )
        if math.isfinite(low) and math.isfinite(high):  # undefined, e.g., with no short rows or one unit
            out[f"{name}_ci"] = [low, high]
    return out


def figure_differences(
    units_a: Sequence[dict],
    units_b: Sequence[dict],
    *,
    strata: Sequence[Hashable] | None = None,
    figures: dict[str, Ratio] = FIGURES,
    names: Sequence[str] | None = None,
) -> dict[str, dict]:
    """``{figure: {"diff", "ci", "p", "n", "ci_includes_zero"}}``: a minus b on the same units (the same prompts
    in the same order), paired over units (:func:`stats.paired_ratio_difference`), for every figure both hold."""
    if len(units_a) != len(units_b):
        raise ValueError(f"paired units need equal counts, got {len(units_a)} and {len(units_b)}.")
    out = {}
    for name in names or figures:
        figure = figures.get(name)
        a = _parts(units_a, figure) if figure else None
        b = _parts(units_b, figure) if figure else None
        if a is None or b is None:
            continue
        difference = stats.paired_ratio_difference(
            a[0], a[1], b[0], b[1], transform=np.exp if figure.exp else None, strata=strata
        )
        if all(math.isfinite(x) for x in (difference["diff"], *difference["ci"])):
            out[name] = difference  # left out where undefined, e.g., with no short rows or one unit
    return out


def sequence_units(
    sequences: Sequence[Sequence[int]], *, ttr_window: int = 96, max_new_tokens: int | None = None
) -> list[dict[str, float]]:
    """Per continuation, the parts of the generation figures (:data:`FIGURES`): its TTR, length, rep-4 parts,
    whether it ends in a loop, and (with ``max_new_tokens``) whether it ended early and how long it is then."""
    units = []
    for seq in sequences:
        repeats, ngrams = ngram_repeats(seq, n=4)
        unit = {
            "ttr": ttr(seq, window=ttr_window),
            "length": float(len(seq)),
            "rep_4_repeats": float(repeats),
            "rep_4_ngrams": float(ngrams),
            "loop": float(repetition_loop(seq)),
        }
        if max_new_tokens is not None:
            short = len(seq) < max_new_tokens
            unit.update(short=float(short), short_tokens=float(len(seq)) if short else 0.0)
        units.append(unit)
    return units


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
    ``target_top1``: share of positions whose argmax is the reference token. Each figure also has ``<name>_ci``,
    its 95 % bootstrap interval over blocks, and ``units`` holds every block's parts of the figures (pop it
    before logging: one dict per block).
    """
    return summarise_token_stats(collect_token_stats(model, blocks, batch_size=batch_size), blocks)


def summarise_token_stats(token: dict[str, torch.Tensor], blocks: torch.Tensor) -> dict:
    """:func:`teacher_forced_stats` from per-position statistics already collected on ``blocks[n, t]`` (by
    :func:`collect_token_stats`), so a caller that keeps them needs no second forward pass."""
    nll = token["nll"].double()
    loss = float(nll.mean())
    hits = (token["argmax"] == blocks[:, 1:].reshape(-1)).double()
    metrics = {
        "loss": loss,
        "perplexity": math.exp(loss),
        "seq_perplexity": float(nll.view(blocks.size(0), -1).mean(-1).exp().mean()),
        "entropy": float(token["entropy"].double().mean()),
        "top1_prob": float(token["top1_prob"].double().mean()),
        "target_top1": float(hits.mean()),
        "eval_tokens": nll.numel(),
    }
    per_block = {
        "nll_sum": nll,
        "entropy_sum": token["entropy"].double(),
        "top1_sum": token["top1_prob"].double(),
        "target_top1_hits": hits,
    }
    sums = {key: value.view(blocks.size(0), -1).sum(-1).tolist() for key, value in per_block.items()}
    units = [
        {
            **{key: sums[key][i] for key in sums},
            "tokens": float(blocks.size(1) - 1),
            "block_perplexity": math.exp(sums["nll_sum"][i] / (blocks.size(1) - 1)),
        }
        for i in range(blocks.size(0))
    ]
    return {**metrics, **figure_intervals(units, names=list(metrics)), "units": units}


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
    Each figure also has ``<name>_ci``, its 95 % bootstrap interval over prompts, and ``units`` holds every
    prompt's parts of the figures (pop it before logging: one dict per prompt, see :data:`FIGURES`).
    """
    device = next(model.parameters()).device
    sequences: list[list[int]] = []
    row_entropy: list[float] = []  # per prompt: sums over its live steps (float64), and how many
    row_top1: list[float] = []
    row_steps: list[float] = []
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
        row_entropy += torch.where(live, out.entropy, 0.0).double().sum(1).tolist()
        row_top1 += torch.where(live, out.top1_prob, 0.0).double().sum(1).tolist()
        row_steps += live.sum(1).double().tolist()
    ttrs = [ttr(seq, window=ttr_window) for seq in sequences]
    metrics = {
        "ttr": sum(ttrs) / len(ttrs),
        "gen_entropy": sum(row_entropy) / max(sum(row_steps), 1),
        "gen_top1_prob": sum(row_top1) / max(sum(row_steps), 1),
        "gen_length": sum(len(s) for s in sequences) / len(sequences),
        "rep_4": rep_n(sequences, n=4),
        "loop_share": loop_share(sequences),
        **short_rows(sequences, max_new_tokens=max_new_tokens),
    }
    units = [
        {**unit, "gen_entropy_sum": e, "gen_top1_sum": t, "gen_steps": n}
        for unit, e, t, n in zip(
            sequence_units(sequences, ttr_window=ttr_window, max_new_tokens=max_new_tokens),
            row_entropy,
            row_top1,
            row_steps,
            strict=True,
        )
    ]
    return {**metrics, **figure_intervals(units, names=list(metrics)), "units": units}, sequences


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
    Wikipedia and fiction figures), with the per-domain figures kept under ``domains``. Intervals (lists) are
    not averaged: take them over all units with the domains as strata (:func:`figure_intervals`)."""
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
