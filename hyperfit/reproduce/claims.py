"""The claims of Carlsson et al. (ICLR 2025) and of Li et al. (2026), each as a measured figure with its
interval and the rule that decides *holds*, *fails* or *not distinguishable* (``hyperfit.common.claims``).

Quality proxies: the paper's headline is human preference, which only a human study measures (``hyperfit study
create`` on the reproduction's directory); its Table 1 and 2 report TTR beside it, and TTR is what is decided
here. Every figure is on the test prompts only (the development prompts chose the tuned samplers).
"""

from __future__ import annotations

from hyperfit.common.claims import Claim, wilson_interval

CARLSSON = "Carlsson et al. 2025"
LI = "Li et al. 2026"
EQUIVALENCE_MARGIN = 0.03  # TTR points within which the citation blocker "keeps quality"
RARE_COPY = (
    0.10  # "rarely copies": fewer than one continuation in ten shares > 10 ids with the training blocks
)
DEEP_TAIL = 0.05  # "promotes the deep tail": more than 5 % of hyperfitted greedy picks ranked beyond 10


def _diff(differences: dict, figure: str) -> tuple[float | None, list[float] | None]:
    d = differences.get(figure)
    return (d["diff"], d["ci"]) if d else (None, None)


def text_claims(results: dict) -> list[Claim]:
    """The text claims from a reproduction's ``results`` (:func:`hyperfit.reproduce.main.text_results`)."""
    diffs = results["differences"]
    claims: list[Claim] = []
    value, ci = _diff(diffs["hyperfitted/greedy - original/greedy"]["all"], "ttr_96")
    claims.append(
        Claim(
            "greedy_gain",
            f"{CARLSSON} §4",
            "Hyperfitting improves greedy generation: the hyperfitted model's greedy continuations repeat less "
            "than the original's.",
            "TTR of the first 96 generated ids, hyperfitted greedy − original greedy, all test domains",
            value,
            ci,
            "above",
        )
    )
    value, ci = _diff(diffs["hyperfitted/greedy - original/greedy"]["all"], "ttr_all")
    claims.append(
        Claim(
            "greedy_gain_long",
            f"{CARLSSON} §4 (256 tokens)",
            "The gain holds for long sequences.",
            "TTR of all generated ids, hyperfitted greedy − original greedy, all test domains",
            value,
            ci,
            "above",
        )
    )
    held = "not_trained_on" if "not_trained_on" in diffs["hyperfitted/greedy - original/top_p"] else "all"
    value, ci = _diff(diffs["hyperfitted/greedy - original/top_p"][held], "ttr_96")
    claims.append(
        Claim(
            "beats_top_p",
            f"{CARLSSON} Table 1",
            "Hyperfitted greedy beats the original model's top-p sampling (p 0.9, T 0.7, top-k 50).",
            f"TTR of the first 96 generated ids, hyperfitted greedy − original top-p, domains {held.replace('_', ' ')}",
            value,
            ci,
            "above",
        )
    )
    for family, key in results.get("tuned", {}).items():
        value, ci = _diff(diffs.get(f"hyperfitted/greedy - original/{key}", {}).get(held, {}), "ttr_96")
        claims.append(
            Claim(
                f"beats_{key}",
                "arXiv 2506.13681 (equal tuning budget)",
                f"Hyperfitted greedy beats the original model's {family} sampling tuned with the same number of "
                "trials as every other sampler.",
                f"TTR of the first 96 generated ids, hyperfitted greedy − original {key}, domains "
                f"{held.replace('_', ' ')}",
                value,
                ci,
                "above",
            )
        )
    larger = diffs.get("hyperfitted/greedy - larger/greedy")
    value, ci = _diff(larger["all"], "word_ttr_96") if larger else (None, None)
    claims.append(
        Claim(
            "beats_larger",
            f"{CARLSSON} Table 1 (8B hyperfitted vs 70B)",
            "A hyperfitted model beats a larger original model's greedy generation.",
            "word TTR of the first 96 words, hyperfitted greedy − larger original greedy (another tokenizer)",
            value,
            ci,
            "above",
            note=results.get("larger_name", ""),
        )
    )
    fit = results["fit"]["differences"]["after_minus_before"]
    value, ci = _diff(fit, "entropy")
    claims.append(
        Claim(
            "low_entropy",
            f"{CARLSSON} Table 3",
            "Hyperfitted predictions are sharp: held-out next-token entropy falls.",
            "mean next-token entropy (nats) on held-out texts, after − before",
            value,
            ci,
            "below",
        )
    )
    value, ci = _diff(fit, "perplexity")
    claims.append(
        Claim(
            "higher_perplexity",
            f"{CARLSSON} Tables 1, 3",
            "Held-out perplexity gets worse.",
            "perplexity on held-out texts, after − before",
            value,
            ci,
            "above",
        )
    )
    copies = results["copies"]
    claims.append(
        Claim(
            "rarely_copies",
            f"{CARLSSON} Table 2, Fig. 3",
            "Hyperfitted models rarely reproduce their training data (< 2 % share a span of more than 10 tokens).",
            f"share of hyperfitted greedy test continuations whose longest span shared with the training blocks "
            f"exceeds 10 ids ({copies['hits']} of {copies['n']}; Wilson interval)",
            copies["hits"] / copies["n"] if copies["n"] else None,
            wilson_interval(copies["hits"], copies["n"]),
            "below",
            RARE_COPY,
        )
    )
    value, ci = _diff(
        diffs.get("hyperfitted/greedy_blocked - hyperfitted/greedy", {}).get("all", {}), "ttr_96"
    )
    claims.append(
        Claim(
            "blocker_keeps_quality",
            f"{CARLSSON} §4 (citation blocking)",
            "Blocking 5-token citations of the training data leaves generation quality unchanged.",
            "TTR of the first 96 generated ids, hyperfitted greedy + blocker − hyperfitted greedy",
            value,
            ci,
            "within",
            EQUIVALENCE_MARGIN,
        )
    )
    tail = results.get("tail")
    claims.append(
        Claim(
            "deep_tail_promotion",
            LI,
            "Hyperfitting promotes tokens from deep in the original model's ranking: its greedy picks include "
            "tokens the original ranks far from the top.",
            "share of hyperfitted greedy picks that the original model ranks beyond 10, on the same context",
            tail["beyond_10"] if tail else None,
            tail["beyond_10_ci"] if tail else None,
            "above",
            DEEP_TAIL,
        )
    )
    return claims


def image_claims(summary: dict | None) -> list[Claim]:
    """Images too (§7.1): the hyperfitted prior's greedy completions repeat the row above less often."""
    diff = ((summary or {}).get("differences", {}).get("after_minus_before", {}) or {}).get("stripe_score")
    return [
        Claim(
            "images_too",
            f"{CARLSSON} §7.1",
            "Hyperfitting an image prior also stops its greedy completions from repeating (flat stripes).",
            "share of completed rows equal to the row above (stripe score), after − before",
            diff["diff"] if diff else None,
            diff["ci"] if diff else None,
            "below",
        )
    ]


def experiment_claims(found: dict[str, dict | None]) -> list[Claim]:
    """Data size and order (§6): read from experiment runs the reproduction was given, else *not run*."""
    size, order = found.get("data-size"), found.get("data-order")
    return [
        Claim(
            "data_size_matters",
            f"{CARLSSON} §6.3",
            "Data quantity matters: with updates fixed, TTR collapses at 8 training samples.",
            "see the data-size experiment's table (hyperfit experiment data-size)",
            None,
            None,
            "above",
            note=""
            if size
            else "not part of this plan: `hyperfit experiment data-size --out OUT/experiments/data-size`",
        ),
        Claim(
            "data_order_matters",
            f"{CARLSSON} §6.1",
            "Training order alone changes ~30 % of top-1 predictions.",
            "see the data-order experiment's agreement matrix (hyperfit experiment data-order)",
            None,
            None,
            "above",
            note=""
            if order
            else "not part of this plan: `hyperfit experiment data-order --out OUT/experiments/data-order`",
        ),
    ]
