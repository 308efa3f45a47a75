"""The figures of a reproduction, from the generated ids: per continuation its parts, then every figure per
domain, over all domains, and over the domains not trained on, each with a 95 % bootstrap interval over prompts
(stratified by domain) and paired differences between any two decodings of the same prompts.

Figures (paper §2.3, Table 2, appendix Fig. 9): TTR over the first 96 generated ids and over all of them (the
official code's last-96 window too), rep-2/3/4 (SimCTG, corpus level), loop share, the longest span copied from
the training blocks (share over 10 ids, mean), Dataset BLEU against the training blocks, and word TTR over the
first 96 words (comparable across tokenizers).
"""

from __future__ import annotations

from collections.abc import Sequence

from hyperfit.common.analysis import (
    dataset_bleu,
    longest_copied_spans,
    ngram_repeats,
    repetition_loop,
    ttr,
    ttr_by_position,
)
from hyperfit.common.evaluate import Ratio, figure_differences, figure_intervals

FIGURES: dict[str, Ratio] = {
    "ttr_96": Ratio("ttr_96"),
    "ttr_all": Ratio("ttr_all"),
    "ttr_last96": Ratio("ttr_last96"),
    "rep_2": Ratio("rep_2_repeats", "rep_2_ngrams"),
    "rep_3": Ratio("rep_3_repeats", "rep_3_ngrams"),
    "rep_4": Ratio("rep_4_repeats", "rep_4_ngrams"),
    "loop_share": Ratio("loop"),
    "copy_gt10_share": Ratio("copy_gt10"),
    "copy_longest": Ratio("copy_longest"),
    "dataset_bleu": Ratio("dataset_bleu"),
    "word_ttr_96": Ratio("word_ttr_96"),
    "length": Ratio("length"),
}
ID_FIGURES = tuple(k for k in FIGURES if k != "word_ttr_96")  # only comparable within one tokenizer
WORD_FIGURES = ("word_ttr_96",)

LABELS = {
    "ttr_96": "TTR, first 96 ids",
    "ttr_all": "TTR, all ids",
    "ttr_last96": "TTR, last 96 ids",
    "rep_2": "rep-2",
    "rep_3": "rep-3",
    "rep_4": "rep-4",
    "loop_share": "ends in a loop",
    "copy_gt10_share": "copies > 10 ids",
    "copy_longest": "longest copied span (ids)",
    "dataset_bleu": "Dataset BLEU",
    "word_ttr_96": "word TTR, first 96 words",
    "length": "length (ids)",
}


def continuation_units(
    sequences: Sequence[Sequence[int]],
    texts: Sequence[str],
    *,
    train_seqs: Sequence[Sequence[int]] | None,
    window: int = 96,
) -> list[dict[str, float]]:
    """Per continuation, the parts of every figure in :data:`FIGURES` (copy and BLEU parts only with
    ``train_seqs``: the training blocks of the model that generated it)."""
    spans = longest_copied_spans(sequences, train_seqs) if train_seqs is not None else None
    bleu = dataset_bleu(sequences, train_seqs) if train_seqs is not None else None
    units = []
    for i, (seq, text) in enumerate(zip(sequences, texts, strict=True)):
        unit = {
            "ttr_96": ttr(seq[:window], window=None),
            "ttr_all": ttr(seq, window=None),
            "ttr_last96": ttr(seq, window=window),
            "loop": float(repetition_loop(seq)),
            "word_ttr_96": ttr(text.split()[:window], window=None),
            "length": float(len(seq)),
        }
        for n in (2, 3, 4):
            repeats, ngrams = ngram_repeats(seq, n=n)
            unit[f"rep_{n}_repeats"], unit[f"rep_{n}_ngrams"] = float(repeats), float(ngrams)
        if spans is not None:
            unit.update(copy_gt10=float(spans[i] > 10), copy_longest=float(spans[i]), dataset_bleu=bleu[i])
        units.append(unit)
    return units


def figures_of(units: Sequence[dict], *, strata: Sequence[str] | None, names: Sequence[str]) -> dict:
    """Every named figure (mean over strata when given) with its interval ``<name>_ci``."""
    out: dict[str, float | list[float]] = {}
    groups = (
        {}
        if strata is None
        else {s: [u for u, g in zip(units, strata, strict=True) if g == s] for s in strata}
    )
    for name in names:
        figure = FIGURES[name]
        if any(figure.numerator not in u for u in units):
            continue
        if strata is None:
            out[name] = _value(units, figure)
        else:
            out[name] = sum(_value(g, figure) for g in groups.values()) / len(groups)
    out.update(figure_intervals(units, strata=strata, figures=FIGURES, names=list(names)))
    return out


def _value(units: Sequence[dict], figure: Ratio) -> float:
    num = sum(float(u[figure.numerator]) for u in units)
    den = sum(float(u[figure.denominator]) for u in units) if figure.denominator else len(units)
    return num / den if den else float("nan")


def domain_figures(
    units: Sequence[dict], domains: Sequence[str], *, held_out: Sequence[str], names: Sequence[str]
) -> dict:
    """``{"domains": {name: figures}, "all": figures, "not_trained_on": figures}`` (the last two the unweighted
    mean over domains, intervals stratified by domain; ``not_trained_on`` absent when every domain was)."""
    out = {"domains": {}}
    for name in dict.fromkeys(domains):
        mine = [u for u, d in zip(units, domains, strict=True) if d == name]
        out["domains"][name] = figures_of(mine, strata=None, names=names)
    out["all"] = figures_of(units, strata=list(domains), names=names)
    kept = [i for i, d in enumerate(domains) if d in held_out]
    if kept:
        out["not_trained_on"] = figures_of(
            [units[i] for i in kept], strata=[domains[i] for i in kept], names=names
        )
    return out


def paired(
    units_a: Sequence[dict],
    units_b: Sequence[dict],
    domains: Sequence[str],
    *,
    held_out: Sequence[str],
    names: Sequence[str],
) -> dict:
    """a − b on the same prompts, over all domains and over those not trained on, stratified by domain."""
    out = {"all": figure_differences(units_a, units_b, strata=list(domains), figures=FIGURES, names=names)}
    kept = [i for i, d in enumerate(domains) if d in held_out]
    if kept:
        out["not_trained_on"] = figure_differences(
            [units_a[i] for i in kept],
            [units_b[i] for i in kept],
            strata=[domains[i] for i in kept],
            figures=FIGURES,
            names=names,
        )
    return out


def sliding_ttr(sequences: Sequence[Sequence[int]], *, window: int = 96, step: int = 8) -> dict:
    """Mean TTR of the last ``window`` ids against position (appendix Fig. 9), without the per-row lists."""
    curve = ttr_by_position(sequences, window=window, step=step)
    return {k: curve[k] for k in ("position", "mean", "n")}
