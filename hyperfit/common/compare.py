"""Models × decoding strategies on the same prompts, and the sharpness/rank comparison between two models.

Strategies follow the paper's baselines (§2.1: greedy; Top-P with p 0.9, temperature 0.7, top-k 50), the ones
reviewers asked for (greedy + repetition penalty), min-p / typical / epsilon / eta sampling, contrastive search and
DoLa (``decoders``), greedy + citation blocker (§4) and an entropy-matched temperature control ("is hyperfitting
just sharpening?", cf. Li et al. 2026). Works on ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from hyperfit.common import analysis
from hyperfit.common.blocker import CitationBlocker
from hyperfit.common.decode import decode
from hyperfit.common.decoders import contrastive_decode, dola_decode
from hyperfit.common.evaluate import figure_differences, figure_intervals, sequence_units, short_rows

# The generation figures whose differences between models and strategies are stated, paired over prompts.
DIFFERENCE_FIGURES = ("ttr", "rep_4", "loop_share")


@dataclass(frozen=True)
class Strategy:
    """One decoding strategy, fully described by its fields (as ``generate`` means them; there epsilon and eta are
    ``epsilon_cutoff`` and ``eta_cutoff``).

    ``temperature``: 0 is greedy, > 0 samples, ``None`` means "entropy-matched, resolved later". The sampling filters
    ``top_k``, ``top_p``, ``min_p``, ``typical_p``, ``epsilon`` (ε-sampling: keep p ≥ ε) and ``eta`` (η-sampling:
    keep p ≥ min(ε, √ε·exp(-entropy)), Hewitt et al. 2022) act after the temperature. ``repetition_penalty`` and
    ``blocker`` (the citation blocker) act on the logits first. ``penalty_alpha`` with ``top_k`` is contrastive
    search; ``dola_layers`` ("low", "high" or layer indices) is DoLa, greedy; both need temperature 0.
    """

    name: str
    temperature: float | None = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    epsilon: float | None = None
    eta: float | None = None
    repetition_penalty: float | None = None
    blocker: bool = False
    penalty_alpha: float | None = None
    dola_layers: str | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.penalty_alpha is not None and self.dola_layers is not None:
            raise ValueError(
                f"strategy {self.name!r} sets both penalty_alpha and dola_layers; choose one decoder."
            )
        if (self.penalty_alpha is not None or self.dola_layers is not None) and self.temperature != 0.0:
            raise ValueError(
                f"strategy {self.name!r}: contrastive search and DoLa here are deterministic; set temperature=0."
            )
        if self.penalty_alpha is not None and not self.top_k:
            raise ValueError(
                f"strategy {self.name!r}: contrastive search needs top_k candidates (SimCTG: 4)."
            )
        for field_name in ("epsilon", "eta"):
            value = getattr(self, field_name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(
                    f"strategy {self.name!r}: {field_name} is a probability in (0, 1), got {value}."
                )

    def warpers(self, *, device: torch.device | str = "cpu") -> list:
        """Sampling filters in ``generate``'s order (after temperature): top-k, top-p, min-p, typical, epsilon, eta.
        ``device``: where the logits are (eta keeps its ε as a tensor there)."""
        out = []
        if self.top_k:
            out.append(TopKLogitsWarper(self.top_k))
        if self.top_p is not None:
            out.append(TopPLogitsWarper(self.top_p))
        if self.min_p is not None:
            out.append(MinPLogitsWarper(self.min_p))
        if self.typical_p is not None:
            out.append(TypicalLogitsWarper(self.typical_p))
        if self.epsilon is not None:
            out.append(EpsilonLogitsWarper(self.epsilon))
        if self.eta is not None:
            out.append(EtaLogitsWarper(self.eta, device=device))
        return out


# Eta and epsilon at 3e-4, the low (mildest) end of the ranges the eta paper's tuned values span as transformers
# quotes them (eta 3e-4 to 4e-3, epsilon 3e-4 to 9e-4, larger for smaller models). Contrastive: SimCTG's α 0.6,
# k 4. DoLa: the upper layers with repetition penalty 1.2, as the DoLa authors recommend for open-ended text.
STRATEGIES: dict[str, Strategy] = {
    "greedy": Strategy("greedy"),
    "top_p": Strategy("top_p", temperature=0.7, top_k=50, top_p=0.9),
    "greedy_rep_penalty": Strategy("greedy_rep_penalty", repetition_penalty=1.2),
    "min_p": Strategy("min_p", temperature=1.0, min_p=0.1),
    "typical": Strategy("typical", temperature=1.0, typical_p=0.95),
    "eta": Strategy("eta", temperature=1.0, eta=3e-4),
    "epsilon": Strategy("epsilon", temperature=1.0, epsilon=3e-4),
    "contrastive": Strategy("contrastive", penalty_alpha=0.6, top_k=4),
    "dola": Strategy("dola", dola_layers="high", repetition_penalty=1.2),
    "greedy_blocked": Strategy("greedy_blocked", blocker=True),
    "entropy_matched": Strategy("entropy_matched", temperature=None),
}


@torch.no_grad()
def entropy_at_temperatures(
    model: torch.nn.Module, blocks: torch.Tensor, temperatures: Sequence[float], *, batch_size: int = 8
) -> list[float]:
    """Mean next-token entropy (nats) of softmax(logits / T) over every position of ``blocks[n, t]``, per T."""
    device = next(model.parameters()).device
    temps = torch.tensor(list(temperatures), dtype=torch.float32, device=device)
    sums = torch.zeros_like(temps)
    count = 0
    for start in range(0, blocks.size(0), batch_size):
        logits = model(input_ids=blocks[start : start + batch_size].to(device)).logits[:, :-1].float()
        flat = logits.reshape(-1, logits.size(-1))
        for i, t in enumerate(temps):
            logprobs = torch.log_softmax(flat / t, dim=-1)
            sums[i] += -(logprobs.exp() * logprobs).sum()
        count += flat.size(0)
    return (sums / count).tolist()


def match_temperature(
    model: torch.nn.Module, blocks: torch.Tensor, target_entropy: float, *, batch_size: int = 8
) -> tuple[float, float]:
    """(T, entropy at T): the temperature whose mean held-out entropy for ``model`` is ``target_entropy``.

    Entropy rises monotonically with T; a log-spaced grid of 25 temperatures in [0.05, 4] (ratio 1.2 between
    neighbours) is evaluated in one pass and interpolated in log T. The answer is clamped to the grid.
    """
    grid = [0.05 * (80 ** (i / 24)) for i in range(25)]
    entropies = entropy_at_temperatures(model, blocks, grid, batch_size=batch_size)
    if target_entropy <= entropies[0]:
        return grid[0], entropies[0]
    if target_entropy >= entropies[-1]:
        return grid[-1], entropies[-1]
    for i in range(1, len(grid)):
        if entropies[i] >= target_entropy:
            lo, hi = math.log(grid[i - 1]), math.log(grid[i])
            frac = (target_entropy - entropies[i - 1]) / max(entropies[i] - entropies[i - 1], 1e-12)
            return math.exp(lo + frac * (hi - lo)), target_entropy
    return grid[-1], entropies[-1]


def generation_metrics(
    sequences: list[list[int]],
    *,
    train_seqs: Sequence[Sequence[int]] | None,
    ttr_window: int = 96,
    max_new_tokens: int | None = None,
) -> dict[str, float]:
    """Repetition, diversity and copying of a set of continuations (definitions in ``analysis``); with
    ``max_new_tokens`` also the share and mean length of the rows that ended early (``short_rows``). TTR, rep-4,
    loop share, length and the short rows carry ``<name>_ci``, a 95 % bootstrap interval over prompts."""
    metrics = {
        "ttr": analysis.mean_ttr(sequences, window=ttr_window),
        "rep_2": analysis.rep_n(sequences, n=2),
        "rep_3": analysis.rep_n(sequences, n=3),
        "rep_4": analysis.rep_n(sequences, n=4),
        "diversity": analysis.diversity(sequences),
        "distinct_2": analysis.distinct_n(sequences, n=2),
        "self_bleu": analysis.self_bleu(sequences) if len(sequences) > 1 else float("nan"),
        "loop_share": analysis.loop_share(sequences),
        "length": sum(len(s) for s in sequences) / max(len(sequences), 1),
    }
    if max_new_tokens is not None:
        metrics.update(short_rows(sequences, max_new_tokens=max_new_tokens))
    units = sequence_units(sequences, ttr_window=ttr_window, max_new_tokens=max_new_tokens)
    metrics.update(figure_intervals(units, names=list(metrics)))
    if train_seqs is not None:
        copies = analysis.copy_report(sequences, train_seqs, threshold=10)
        metrics.update(
            copy_gt10_share=copies["share_gt_threshold"],
            copy_mean_longest=copies["mean_longest_span"],
            copy_max_longest=copies["max_longest_span"],
            copied_5gram_share=copies["copied_5gram_share"],
            copy_histogram={str(k): v for k, v in copies["histogram"].items()},
        )
    return metrics


def run_strategy(
    model: torch.nn.Module,
    prompts: torch.Tensor,
    strategy: Strategy,
    *,
    max_new_tokens: int,
    train_ids: torch.Tensor | None = None,
    eos_id: int | Sequence[int] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    word_start_ids: Sequence[int] | None = None,
    blocker_n: int = 5,
    blocker_include_prompt: bool = True,
    min_new_tokens: int = 0,
) -> tuple[list[list[int]], dict]:
    """Decode ``prompts[n, p]`` with ``strategy``; return (sequences, facts such as the blocker's firing count)."""
    if strategy.temperature is None:
        raise ValueError(
            f"strategy {strategy.name!r} needs a temperature; resolve it with match_temperature first."
        )
    processors: list = []
    if strategy.repetition_penalty:
        processors.append(RepetitionPenaltyLogitsProcessor(strategy.repetition_penalty))
    blocker = None
    if strategy.blocker:
        if train_ids is None:
            raise ValueError("the citation blocker needs the hyperfitting training ids; pass train_ids.")
        blocker = CitationBlocker(
            train_ids,
            n=blocker_n,
            word_start_ids=word_start_ids,
            include_prompt=blocker_include_prompt,
            prompt_len=prompts.size(1),
        )
        processors.append(blocker)
    device = next(model.parameters()).device
    # Sampling happens where the logits are: the generator must live on the model's device, not the prompts'.
    generator = torch.Generator(device=device).manual_seed(seed)
    if strategy.penalty_alpha is not None:
        decoder, settings = (
            contrastive_decode,
            {"penalty_alpha": strategy.penalty_alpha, "top_k": strategy.top_k},
        )
    elif strategy.dola_layers is not None:
        decoder, settings = dola_decode, {"layers": strategy.dola_layers}
    else:
        decoder = decode
        settings = {
            "temperature": strategy.temperature,
            "warpers": strategy.warpers(device=device),
            "generator": generator,
        }
    sequences: list[list[int]] = []
    for start in range(0, prompts.size(0), batch_size):
        out = decoder(
            model,
            prompts[start : start + batch_size].to(device),
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            logits_processors=processors,
            min_new_tokens=min_new_tokens,
            **settings,
        )
        sequences.extend(out.sequences())
    facts = {"temperature": strategy.temperature}
    if strategy.penalty_alpha is not None:
        facts.update(penalty_alpha=strategy.penalty_alpha, top_k=strategy.top_k)
    if strategy.dola_layers is not None:
        facts.update(dola_layers=strategy.dola_layers)
    if blocker is not None:
        facts.update(
            blocker_n=blocker_n,
            blocker_include_prompt=blocker_include_prompt,
            blocker_fired=blocker.fired,
            blocker_changed=blocker.changed,
            blocker_matched_only=blocker.fired - blocker.changed,
            blocker_blocked_tokens=blocker.blocked_tokens,
        )
    return sequences, facts


def strategy_differences(
    units: dict[tuple[str, str], list[dict]],
    *,
    model: str,
    baseline: str,
    strata: Sequence | None = None,
    names: Sequence[str] = DIFFERENCE_FIGURES,
) -> dict[str, dict[str, dict]]:
    """Differences between two models' decodings of the same prompts, paired over prompts, from each
    (model, strategy)'s per-prompt parts (``evaluate.sequence_units``):

    ``"<model>_greedy_minus_<baseline>"``: {strategy: {figure: difference}}, ``model`` decoding greedily against
    ``baseline`` with each of its strategies (the paper's claim: hyperfitted greedy against sampling the
    original); ``"<model>_minus_<baseline>"``: the same strategy for both. Each difference is
    ``{"diff", "ci", "p", "n", "ci_includes_zero"}`` (``stats.paired_ratio_difference``)."""
    strategies = [s for (m, s) in units if m == baseline]
    out: dict[str, dict[str, dict]] = {}
    if (model, "greedy") in units:
        out[f"{model}_greedy_minus_{baseline}"] = {
            s: figure_differences(units[(model, "greedy")], units[(baseline, s)], strata=strata, names=names)
            for s in strategies
        }
    out[f"{model}_minus_{baseline}"] = {
        s: figure_differences(units[(model, s)], units[(baseline, s)], strata=strata, names=names)
        for s in strategies
        if (model, s) in units
    }
    return out


ENTROPY_BINS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
TOP1_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)


def binned_shares(values: torch.Tensor, edges: Sequence[float]) -> dict[str, float]:
    """Share of ``values`` in each bin [edges[i], edges[i + 1]), the last bin open-ended; keys name the bins."""
    values = values.float()
    shares = {}
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        inside = values >= low if high is None else (values >= low) & (values < high)
        shares[f"{low:g}–{high:g}" if high is not None else f"≥{low:g}"] = float(inside.float().mean())
    return shares


def compare_sharpness(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict:
    """How sharpness and the reference token's rank move from one model to another, on the same positions.

    Besides the two summaries, the rank shift and top-1 agreement: the distributions of per-position entropy
    (nats) and top-1 probability, as shares per bin (paper Fig. 4's sharpening, as histograms).
    """
    return {
        "entropy_histogram": {
            "before": binned_shares(before["entropy"], ENTROPY_BINS),
            "after": binned_shares(after["entropy"], ENTROPY_BINS),
        },
        "top1_histogram": {
            "before": binned_shares(before["top1_prob"], TOP1_BINS),
            "after": binned_shares(after["top1_prob"], TOP1_BINS),
        },
        "before": analysis.sharpness_from_stats(before),
        "after": analysis.sharpness_from_stats(after),
        "rank_shift": analysis.rank_shift(before["target_rank"], after["target_rank"]),
        "top1_agreement": analysis.top1_agreement_ids(before["argmax"], after["argmax"]),
    }


def decoding_table(
    models: dict[str, torch.nn.Module],
    prompts: torch.Tensor,
    strategy_names: Sequence[str],
    *,
    max_new_tokens: int,
    train_ids: torch.Tensor | None,
    eval_blocks: torch.Tensor | None = None,
    target_entropy: float | None = None,
    eos_id: int | Sequence[int] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    ttr_window: int = 96,
    word_start_ids: Sequence[int] | None = None,
    blocker_n: int = 5,
    blocker_include_prompt: bool = True,
    precomputed: dict[tuple[str, str], list[list[int]]] | None = None,
    min_new_tokens: int = 0,
) -> tuple[dict[str, dict[str, dict]], dict[tuple[str, str], list[list[int]]]]:
    """Every model × every strategy on the same prompts: ``table[model][strategy]`` of generation metrics.

    ``entropy_matched`` samples each model at the temperature whose mean entropy on ``eval_blocks`` equals
    ``target_entropy`` (the hyperfitted model's), so for the hyperfitted model itself it is plain sampling at
    about T = 1. Sampling strategies use ``seed`` (the same for every model).
    """
    unknown = [name for name in strategy_names if name not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown decoding strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}.")
    table: dict[str, dict[str, dict]] = {}
    generations: dict[tuple[str, str], list[list[int]]] = {}
    train_seqs = None if train_ids is None else train_ids.tolist()  # once, not per model × strategy
    # Shown on a terminal only (disable=None): decoding many models × strategies takes minutes.
    # mininterval=0: a handful of slow updates, each worth drawing (tqdm would otherwise skip fast ones).
    progress = tqdm(
        total=len(models) * len(strategy_names), desc="decoding", disable=None, leave=False, mininterval=0
    )
    for model_name, model in models.items():
        table[model_name] = {}
        for name in strategy_names:
            progress.set_postfix_str(f"{model_name} {name}")
            progress.update(1)
            strategy = STRATEGIES[name]
            extra: dict = {}
            if precomputed and (model_name, name) in precomputed:
                sequences = precomputed[(model_name, name)]
                generations[(model_name, name)] = sequences
                table[model_name][name] = generation_metrics(
                    sequences,
                    train_seqs=train_seqs,
                    ttr_window=ttr_window,
                    max_new_tokens=max_new_tokens,
                ) | {"temperature": strategy.temperature}
                continue
            if strategy.temperature is None:
                if eval_blocks is None or target_entropy is None:
                    raise ValueError("entropy_matched needs eval_blocks and target_entropy.")
                temperature, reached = match_temperature(model, eval_blocks, target_entropy)
                strategy = Strategy(name, temperature=temperature)
                extra = {"matched_entropy": reached, "target_entropy": target_entropy}
            sequences, facts = run_strategy(
                model,
                prompts,
                strategy,
                max_new_tokens=max_new_tokens,
                train_ids=train_ids,
                eos_id=eos_id,
                batch_size=batch_size,
                seed=seed,
                word_start_ids=word_start_ids,
                blocker_n=blocker_n,
                blocker_include_prompt=blocker_include_prompt,
                min_new_tokens=min_new_tokens,
            )
            generations[(model_name, name)] = sequences
            table[model_name][name] = {
                **generation_metrics(
                    sequences,
                    train_seqs=train_seqs,
                    ttr_window=ttr_window,
                    max_new_tokens=max_new_tokens,
                ),
                **facts,
                **extra,
            }
    progress.close()
    return table, generations
