"""``hyperfit study report``: the paper's figure (share of comparisons where a system's continuation is
preferred to the human one or judged equally good) with intervals clustered by prompt, paired tests between
systems, Bradley–Terry strengths with ties, agreement, attention checks, and automatic metrics against
preference. Writes ``report.json`` (the numbers), ``report.md`` / ``report.html`` and ``votes.csv``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from hyperfit.common import stats as common_stats
from hyperfit.common.analysis import rep_n, self_bleu, ttr
from hyperfit.common.report import Cell, Plot, Report, Section, Series, Table, Text, write_report_files
from hyperfit.common.runs import HyperfitError, write_json, write_text_atomic
from hyperfit.study import stats, store
from hyperfit.study.app import votes_csv
from hyperfit.study.items import REFERENCE

CODE = {"a": stats.A, "equal": stats.EQUAL, "b": stats.B}
# The paper's headline comparisons, listed first among the paired tests when the study has them.
HEADLINE_PAIRS = (
    ("hyperfitted/greedy", "original/top_p"),
    ("hyperfitted/greedy", "original/greedy"),
    ("hyperfitted/greedy_blocked", "hyperfitted/greedy"),
)


# ------------------------------------------------------------------------------------------------------------
# Shares against the human text
# ------------------------------------------------------------------------------------------------------------


def share_table(votes: list[dict], *, n_resamples: int, seed: int) -> dict:
    """Shares preferred / equal / preferred-or-equal of one group of system-vs-reference votes, each with a
    95 % percentile-bootstrap interval that resamples prompts (a prompt's votes move together)."""
    by_prompt: dict[int, list[str]] = defaultdict(list)
    for vote in votes:
        by_prompt[vote["prompt_id"]].append(vote["winner"])
    counts = np.array([len(w) for w in by_prompt.values()], dtype=float)
    result = {"n": len(votes), "prompts": len(by_prompt)}
    for name, winners in (("preferred", {"a"}), ("equal", {"equal"}), ("preferred_or_equal", {"a", "equal"})):
        hits = np.array([sum(w in winners for w in ws) for ws in by_prompt.values()], dtype=float)
        result[name] = float(hits.sum() / counts.sum())
        # Σ hits / Σ votes over resampled prompts is the clustered bootstrap of the vote-level share.
        low, high = common_stats.ratio_ci(hits, counts, n_resamples=n_resamples, seed=seed)
        result["ci" if name == "preferred_or_equal" else f"ci_{name}"] = [low, high]
    return result


def preference_results(votes: list[dict], *, n_resamples: int, seed: int) -> dict:
    """``{system: {length: shares + by_domain}}`` over system-vs-reference votes."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for vote in votes:
        if vote["kind"] == "reference":
            groups[(vote["system_a"], vote["length"])].append(vote)
    results: dict[str, dict] = {}
    for (system, length), group in sorted(groups.items()):
        cell = share_table(group, n_resamples=n_resamples, seed=seed)
        domains: dict[str, list[dict]] = defaultdict(list)
        for vote in group:
            domains[vote["domain"]].append(vote)
        cell["by_domain"] = {
            d: share_table(v, n_resamples=n_resamples, seed=seed) for d, v in sorted(domains.items())
        }
        results.setdefault(system, {})[str(length)] = cell
    return results


def paired_tests(votes: list[dict], *, n_resamples: int, seed: int) -> list[dict]:
    """Every pair of systems at each length, on the prompts both were judged on: the mean per-prompt
    difference in "preferred or equal" with a bootstrap interval, the sign-flip permutation p-value, the exact
    sign test over prompts, and Holm-adjusted p-values over all pairs."""
    from statsmodels.stats.multitest import multipletests

    per_prompt: dict[tuple[str, int], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for vote in votes:
        if vote["kind"] == "reference":
            per_prompt[(vote["system_a"], vote["length"])][vote["prompt_id"]].append(vote["winner"] != "b")
    lengths = sorted({length for _, length in per_prompt})
    tests = []
    for length in lengths:
        systems = sorted(s for s, n in per_prompt if n == length)
        pairs = [p for p in HEADLINE_PAIRS if p[0] in systems and p[1] in systems]
        pairs += [p for p in itertools.combinations(systems, 2) if p not in pairs and p[::-1] not in pairs]
        for a, b in pairs:
            shared = sorted(set(per_prompt[(a, length)]) & set(per_prompt[(b, length)]))
            if len(shared) < 2:
                continue
            x = [float(np.mean(per_prompt[(a, length)][p])) for p in shared]
            y = [float(np.mean(per_prompt[(b, length)][p])) for p in shared]
            diff = common_stats.paired_difference(x, y, n_resamples=n_resamples, seed=seed)
            wins = sum(u > v for u, v in zip(x, y, strict=True))
            losses = sum(u < v for u, v in zip(x, y, strict=True))
            tests.append(
                {
                    "length": length,
                    "a": a,
                    "b": b,
                    "prompts": len(shared),
                    "a_preferred_or_equal": float(np.mean(x)),
                    "b_preferred_or_equal": float(np.mean(y)),
                    "mean_difference": diff["diff"],
                    "ci": diff["ci"],
                    "permutation_p": diff["p"],
                    "prompts_a_higher": wins,
                    "prompts_b_higher": losses,
                    "sign_test_p": common_stats.sign_test(wins, losses),
                }
            )
    if tests:
        adjusted = multipletests([t["permutation_p"] for t in tests], method="holm")[1]
        for test, p in zip(tests, adjusted, strict=True):
            test["holm_p"] = float(p)
    return tests


# ------------------------------------------------------------------------------------------------------------
# Bradley–Terry with ties
# ------------------------------------------------------------------------------------------------------------


def _comparisons(votes: list[dict]) -> list[tuple[str, str, int]]:
    return [(v["system_a"], v["system_b"], CODE[v["winner"]]) for v in votes]


def bradley_terry(votes: list[dict], *, n_resamples: int, seed: int) -> dict | None:
    """Davidson strengths per length from every non-check vote (the reference is a player, anchored at 0),
    with percentile intervals from refitting on prompts resampled with replacement. None without any
    system-vs-system votes."""
    if not any(v["kind"] == "systems" for v in votes):
        return None
    result = {}
    rng = np.random.default_rng(seed)
    for length in sorted({v["length"] for v in votes if v["kind"] != "check"}):
        group = [v for v in votes if v["kind"] != "check" and v["length"] == length]
        players = sorted({s for v in group for s in (v["system_a"], v["system_b"])})
        anchor = REFERENCE if REFERENCE in players else players[0]
        fit = stats.fit_davidson(_comparisons(group), players=players, anchor=anchor)
        by_prompt: dict[int, list[dict]] = defaultdict(list)
        for vote in group:
            by_prompt[vote["prompt_id"]].append(vote)
        prompts = list(by_prompt)
        draws = []
        for _ in range(n_resamples):
            chosen = rng.integers(0, len(prompts), len(prompts))
            resampled = [v for k in chosen for v in by_prompt[prompts[k]]]
            draws.append(stats.fit_davidson(_comparisons(resampled), players=players, anchor=anchor).theta)
        draws = np.array(draws)
        strengths = {}
        for k, player in enumerate(players):
            low, high = np.percentile(draws[:, k], [2.5, 97.5]) if len(prompts) > 1 else (math.nan, math.nan)
            strengths[player] = {"theta": float(fit.theta[k]), "ci": [float(low), float(high)]}
        direct = []
        pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for a, b, code in _comparisons([v for v in group if v["kind"] == "systems"]):
            if a > b:
                a, b, code = b, a, 2 - code
            pairs[(a, b)][code] += 1
        for (a, b), (wins, ties, losses) in sorted(pairs.items()):
            direct.append(
                {
                    "a": a,
                    "b": b,
                    "a_better": wins,
                    "equal": ties,
                    "b_better": losses,
                    "sign_test_p": common_stats.sign_test(wins, losses),
                }
            )
        result[str(length)] = {
            "anchor": anchor,
            "nu": fit.nu,
            "strengths": strengths,
            "direct": direct,
            "prompts": len(prompts),
        }
    return result


# ------------------------------------------------------------------------------------------------------------
# Agreement and attention checks
# ------------------------------------------------------------------------------------------------------------


def check_results(votes: list[dict], *, min_accuracy: float) -> dict:
    """Per annotator attention-check accuracy; an annotator with at least one check answered and accuracy
    below ``min_accuracy`` fails."""
    answered: dict[str, list[bool]] = defaultdict(list)
    for vote in votes:
        if vote["kind"] == "check":
            answered[vote["annotator"]].append(vote["winner"] == vote["expected"])
    per_annotator = {
        a: {"checks": len(r), "passed": sum(r), "accuracy": sum(r) / len(r)} for a, r in answered.items()
    }
    failed = sorted(a for a, r in per_annotator.items() if r["accuracy"] < min_accuracy)
    total = [x for r in answered.values() for x in r]
    return {
        "min_accuracy": min_accuracy,
        "answers": len(total),
        "accuracy": sum(total) / len(total) if total else None,
        "per_annotator": per_annotator,
        "failed_annotators": failed,
    }


def agreement(votes: list[dict], *, raters: int) -> dict:
    """Krippendorff's α (nominal and ordinal), Fleiss' κ, and each annotator against the others' majority,
    over non-check votes (the winner, de-blinded, so a left/right swap is not a disagreement)."""
    coded = [(v["annotator"], v["item_id"], CODE[v["winner"]]) for v in votes if v["kind"] != "check"]
    kappa, kappa_items = stats.fleiss_kappa(coded, raters=raters)
    return {
        "krippendorff_alpha": stats.krippendorff_alpha(coded),
        "krippendorff_alpha_ordinal": stats.krippendorff_alpha(coded, level="ordinal"),
        "fleiss_kappa": kappa,
        "fleiss_items": kappa_items,
        "fleiss_raters": raters,
        "annotators": stats.annotator_agreement(coded),
    }


# ------------------------------------------------------------------------------------------------------------
# Automatic metrics against preference
# ------------------------------------------------------------------------------------------------------------


def metric_correlation(conn, votes: list[dict], results: dict) -> dict:
    """TTR@96 (token ids of the text as shown), rep-4 and Self-BLEU against "preferred or equal": per item
    (each system text's own metrics against its votes' share) and per system × length (the system's texts)."""
    texts = {
        (r["prompt_id"], r["system"], r["length"]): json.loads(r["ids"])
        for r in conn.execute("SELECT prompt_id, system, length, ids FROM texts")
    }
    item_votes: dict[int, list[dict]] = defaultdict(list)
    for vote in votes:
        if vote["kind"] == "reference":
            item_votes[vote["item_id"]].append(vote)
    per_item = {"ttr": ([], []), "rep_4": ([], [])}
    for group in item_votes.values():
        first = group[0]
        ids = texts[(first["prompt_id"], first["system_a"], first["length"])]
        score = float(np.mean([v["winner"] != "b" for v in group]))
        for name, value in (("ttr", ttr(ids, window=96)), ("rep_4", rep_n([ids], n=4))):
            per_item[name][0].append(value)
            per_item[name][1].append(score)
    cells = []
    for system, by_length in results.items():
        for length, shares in by_length.items():
            seqs = [ids for (p, s, n), ids in texts.items() if s == system and n == int(length)]
            cells.append(
                {
                    "system": system,
                    "length": int(length),
                    "ttr": float(np.mean([ttr(ids, window=96) for ids in seqs])),
                    "rep_4": rep_n(seqs, n=4),
                    "self_bleu": self_bleu(seqs) if len(seqs) > 1 else float("nan"),
                    "preferred_or_equal": shares["preferred_or_equal"],
                }
            )
    per_system = {
        name: stats.correlation([c[name] for c in cells], [c["preferred_or_equal"] for c in cells])
        for name in ("ttr", "rep_4", "self_bleu")
    }
    return {
        "per_item": {name: stats.correlation(x, y) for name, (x, y) in per_item.items()},
        "per_system": per_system,
        "systems": cells,
    }


# ------------------------------------------------------------------------------------------------------------
# Simulated truth
# ------------------------------------------------------------------------------------------------------------


def simulation_truth(conn, votes: list[dict], results: dict, *, passing: set[str]) -> dict | None:
    """For a simulated study: each cell's expected "preferred or equal" under the known truth (careful
    annotators from the model, spammers at 2/3, mixed in the proportions that actually voted in that cell) and
    whether the interval covers it."""
    from hyperfit.study.simulate import Truth, population_shares

    spec = store.get_setting(conn, "simulation")
    if spec is None:
        return None
    truth = Truth(**spec)
    spammers = {
        r[0]
        for r in conn.execute(
            "SELECT an.label FROM simulated s JOIN annotators an ON an.id = s.annotator_id WHERE s.kind = 'spammer'"
        )
    }
    cells = []
    for subset, keep in (("all", None), ("passing_checks", passing)):
        for system, by_length in results[subset].items():
            if system not in truth.theta:
                continue
            careful = population_shares(truth, system)["preferred_or_equal"]
            for length, shares in by_length.items():
                cell_votes = [
                    v
                    for v in votes
                    if v["kind"] == "reference"
                    and v["system_a"] == system
                    and v["length"] == int(length)
                    and (keep is None or v["annotator"] in keep)
                ]
                spam = sum(v["annotator"] in spammers for v in cell_votes) / max(len(cell_votes), 1)
                expected = (1 - spam) * careful + spam * 2 / 3
                low, high = shares["ci"]
                cells.append(
                    {
                        "subset": subset,
                        "system": system,
                        "length": int(length),
                        "truth": expected,
                        "estimate": shares["preferred_or_equal"],
                        "ci": [low, high],
                        "covered": bool(low <= expected <= high),
                    }
                )
    return {"truth": spec, "cells": cells}


# ------------------------------------------------------------------------------------------------------------
# The whole analysis, and the report
# ------------------------------------------------------------------------------------------------------------


def analyse(
    db_path: str | Path, *, min_check_accuracy: float = 0.75, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """Everything ``report.json`` holds (see the README for its fields)."""
    conn = store.connect(db_path)
    cfg = store.settings(conn)
    votes = store.vote_rows(conn)
    if not any(v["kind"] != "check" for v in votes):
        raise HyperfitError(
            f"{db_path} has no votes yet; serve it (`hyperfit study serve`), import votes, or simulate some first."
        )
    checks = check_results(votes, min_accuracy=min_check_accuracy)
    failed = set(checks["failed_annotators"])
    kept = [v for v in votes if v["annotator"] not in failed]
    passing = {v["annotator"] for v in kept}
    results = {
        "all": preference_results(votes, n_resamples=n_resamples, seed=seed),
        "passing_checks": preference_results(kept, n_resamples=n_resamples, seed=seed),
    }
    analysis = {
        "study": {
            **store.counts(conn),
            "annotations_per_item": cfg["annotations"],
            "lengths": cfg["lengths"],
            "pairs": cfg["pairs"],
            "sources": cfg["sources"],
            "seed": cfg["seed"],
            "bootstrap_resamples": n_resamples,
        },
        "systems": results["all"],
        "systems_passing_checks": results["passing_checks"],
        "checks": checks,
        "paired_tests": paired_tests(votes, n_resamples=n_resamples, seed=seed),
        "paired_tests_passing_checks": paired_tests(kept, n_resamples=n_resamples, seed=seed),
        "bradley_terry": bradley_terry(votes, n_resamples=min(n_resamples, 200), seed=seed),
        "agreement": agreement(votes, raters=cfg["annotations"]),
        "agreement_passing_checks": agreement(kept, raters=cfg["annotations"]),
        "metric_correlation": metric_correlation(conn, votes, results["all"]),
        "simulation": simulation_truth(conn, votes, results, passing=passing),
    }
    conn.close()
    return analysis


def _share_cell(shares: dict, key: str = "preferred_or_equal") -> Cell:
    ci = shares["ci"] if key == "preferred_or_equal" else shares[f"ci_{key}"]
    return Cell(100 * shares[key], ci=(100 * ci[0], 100 * ci[1]), fmt="{:.1f}")


def build_report(analysis: dict) -> Report:
    """The report as data (tables, a bar plot, short texts) for the renderer."""
    study = analysis["study"]
    systems, passing = analysis["systems"], analysis["systems_passing_checks"]
    rows = []
    for system, by_length in systems.items():
        for length, shares in by_length.items():
            kept = passing.get(system, {}).get(length)
            rows.append(
                [
                    system,
                    int(length),
                    shares["n"],
                    shares["prompts"],
                    _share_cell(shares, "preferred"),
                    _share_cell(shares, "equal"),
                    _share_cell(shares),
                    _share_cell(kept) if kept else None,
                ]
            )
    lengths = sorted({int(n) for by_length in systems.values() for n in by_length})
    plot = Plot(
        title="Preferred or judged equal to the human continuation (%), 95 % intervals",
        kind="bar",
        series=[
            Series(
                name=f"{length} tokens",
                x=list(systems),
                y=[
                    100 * systems[s][str(length)]["preferred_or_equal"]
                    if str(length) in systems[s]
                    else math.nan
                    for s in systems
                ],
                low=[
                    100 * systems[s][str(length)]["ci"][0] if str(length) in systems[s] else math.nan
                    for s in systems
                ],
                high=[
                    100 * systems[s][str(length)]["ci"][1] if str(length) in systems[s] else math.nan
                    for s in systems
                ],
            )
            for length in lengths
        ],
        y_label="%",
    )
    failed = analysis["checks"]["failed_annotators"]
    sections = [
        Section(
            "Preference against the human continuation",
            [
                Text(
                    f"{study['votes']} votes from {study['annotators']} annotators on {study['items']} comparisons "
                    f"({study['annotations_per_item']} annotations each planned) and {study['checks']} attention-check "
                    "items. Shares in %; intervals are 95 % percentile bootstraps over prompts (a prompt's votes are "
                    f'resampled together, {study["bootstrap_resamples"]} resamples). "Preferred or equal" is the '
                    "paper's figure. The last column leaves out the "
                    f"{len(failed)} annotator(s) below {100 * analysis['checks']['min_accuracy']:.0f} % "
                    "attention-check accuracy."
                ),
                Table(
                    [
                        "system",
                        "length",
                        "votes",
                        "prompts",
                        "preferred",
                        "equal",
                        "preferred or equal",
                        "preferred or equal, passing checks",
                    ],
                    rows,
                ),
                plot,
            ],
        )
    ]
    domain_rows = [
        [system, int(length), domain, d["n"], _share_cell(d)]
        for system, by_length in systems.items()
        for length, shares in by_length.items()
        for domain, d in shares["by_domain"].items()
    ]
    sections.append(
        Section(
            "By domain", [Table(["system", "length", "domain", "votes", "preferred or equal"], domain_rows)]
        )
    )
    paired = analysis["paired_tests"]
    sections.append(
        Section(
            "Paired tests between systems",
            [
                Text(
                    'Per prompt, each system\'s share of "preferred or equal" votes; the difference a − b is '
                    "averaged over the prompts both systems were judged on. p: two-sided sign-flip permutation "
                    "test (exact up to 16 prompts), Holm-adjusted over all pairs; sign test: exact binomial over "
                    "prompts where the two differ."
                ),
                Table(
                    [
                        "length",
                        "a",
                        "b",
                        "prompts",
                        "a − b (points)",
                        "permutation p",
                        "Holm p",
                        "prompts a > b / a < b",
                        "sign-test p",
                    ],
                    [
                        [
                            t["length"],
                            t["a"],
                            t["b"],
                            t["prompts"],
                            Cell(
                                100 * t["mean_difference"],
                                ci=(100 * t["ci"][0], 100 * t["ci"][1]),
                                fmt="{:.1f}",
                            ),
                            Cell(t["permutation_p"], fmt="{:.4f}"),
                            Cell(t["holm_p"], fmt="{:.4f}"),
                            f"{t['prompts_a_higher']} / {t['prompts_b_higher']}",
                            Cell(t["sign_test_p"], fmt="{:.4f}"),
                        ]
                        for t in paired
                    ],
                ),
            ],
        )
    )
    bt = analysis["bradley_terry"]
    if bt:
        blocks = [
            Text(
                "Davidson's Bradley–Terry model with ties, fitted by maximum likelihood to every non-check vote; θ "
                "is the log-strength (the human continuation, when present, is 0), ν the tie parameter. Intervals: "
                "refits on prompts resampled with replacement."
            )
        ]
        for length, fit in bt.items():
            blocks.append(
                Table(
                    ["player", "θ", "win chance vs anchor (no tie)"],
                    [
                        [
                            p,
                            Cell(s["theta"], ci=tuple(s["ci"]), fmt="{:.2f}"),
                            1 / (1 + math.exp(-s["theta"])),
                        ]
                        for p, s in sorted(fit["strengths"].items(), key=lambda kv: -kv[1]["theta"])
                    ],
                    caption=f"{length} tokens, anchor {fit['anchor']}, ν = {fit['nu']:.2f}, {fit['prompts']} prompts",
                )
            )
            blocks.append(
                Table(
                    ["a", "b", "a better", "equal", "b better", "sign-test p (votes)"],
                    [
                        [
                            d["a"],
                            d["b"],
                            d["a_better"],
                            d["equal"],
                            d["b_better"],
                            Cell(d["sign_test_p"], fmt="{:.4f}"),
                        ]
                        for d in fit["direct"]
                    ],
                    caption=f"{length} tokens, direct system-vs-system votes",
                )
            )
        sections.append(Section("Bradley–Terry strengths", blocks))
    agreement_all, agreement_kept = analysis["agreement"], analysis["agreement_passing_checks"]
    per_check = analysis["checks"]["per_annotator"]
    annotator_rows = []
    for annotator in sorted(set(agreement_all["annotators"]) | set(per_check), key=str):
        a = agreement_all["annotators"].get(annotator, {})
        c = per_check.get(annotator)
        annotator_rows.append(
            [
                annotator,
                a.get("items"),
                a.get("agreement"),
                a.get("cohen_kappa"),
                f"{c['passed']} / {c['checks']}" if c else "–",
                annotator not in failed,
            ]
        )
    sections.append(
        Section(
            "Agreement and attention checks",
            [
                Text(
                    "Over de-blinded non-check votes (a left/right swap is not a disagreement). Fleiss' κ uses "
                    f"comparisons with at least {agreement_all['fleiss_raters']} votes (their first "
                    f"{agreement_all['fleiss_raters']}). Each annotator is compared with the majority of the other "
                    "votes on the same comparison, where those have a strict majority."
                ),
                Table(
                    [
                        "annotators",
                        "Krippendorff α (nominal)",
                        "α (ordinal)",
                        "Fleiss κ",
                        "comparisons for κ",
                    ],
                    [
                        [
                            "all",
                            agreement_all["krippendorff_alpha"],
                            agreement_all["krippendorff_alpha_ordinal"],
                            agreement_all["fleiss_kappa"],
                            agreement_all["fleiss_items"],
                        ],
                        [
                            "passing checks",
                            agreement_kept["krippendorff_alpha"],
                            agreement_kept["krippendorff_alpha_ordinal"],
                            agreement_kept["fleiss_kappa"],
                            agreement_kept["fleiss_items"],
                        ],
                    ],
                ),
                Table(
                    [
                        "annotator",
                        "compared with majority",
                        "agreement",
                        "Cohen κ vs majority",
                        "checks passed",
                        "kept",
                    ],
                    annotator_rows,
                ),
            ],
        )
    )
    corr = analysis["metric_correlation"]
    sections.append(
        Section(
            "Automatic metrics and preference",
            [
                Text(
                    "Does a higher TTR (last 96 token ids of the text as shown), lower rep-4 or lower Self-BLEU go "
                    "with being preferred or judged equal? Per item: each system text's own metric against the "
                    "share of its votes; per system: one point per system × length. Spearman ρ and Kendall τ with "
                    "two-sided p-values (per-item p-values treat items as independent, though items of one prompt "
                    "share a human text)."
                ),
                Table(
                    ["level", "metric", "n", "Spearman ρ", "p", "Kendall τ", "p"],
                    [
                        [
                            level,
                            name,
                            c["n"],
                            c["spearman"],
                            Cell(c["spearman_p"], fmt="{:.4f}"),
                            c["kendall"],
                            Cell(c["kendall_p"], fmt="{:.4f}"),
                        ]
                        for level in ("per_item", "per_system")
                        for name, c in corr[level].items()
                    ],
                ),
                Table(
                    ["system", "length", "TTR@96", "rep-4", "Self-BLEU", "preferred or equal"],
                    [
                        [
                            c["system"],
                            c["length"],
                            c["ttr"],
                            c["rep_4"],
                            c["self_bleu"],
                            c["preferred_or_equal"],
                        ]
                        for c in corr["systems"]
                    ],
                ),
            ],
        )
    )
    simulation = analysis["simulation"]
    if simulation:
        cells = simulation["cells"]
        covered = {
            s: (sum(c["covered"] for c in cells if c["subset"] == s), sum(c["subset"] == s for c in cells))
            for s in ("all", "passing_checks")
        }
        truth = simulation["truth"]
        sections.append(
            Section(
                "Simulated study: estimates against the known truth",
                [
                    Text(
                        f"Synthetic annotators (Davidson model, ν = {truth['nu']}, context effect sd "
                        f"{truth['prompt_sd']}, noise {truth['noise']}, spammers {truth['spammers']}, seed "
                        f"{truth['seed']}). Intervals covering the truth: {covered['all'][0]} of {covered['all'][1]} "
                        f"(all annotators), {covered['passing_checks'][0]} of {covered['passing_checks'][1]} "
                        "(passing checks)."
                    ),
                    Table(
                        ["annotators", "system", "length", "truth", "estimate", "covered"],
                        [
                            [
                                c["subset"],
                                c["system"],
                                c["length"],
                                100 * c["truth"],
                                Cell(
                                    100 * c["estimate"], ci=(100 * c["ci"][0], 100 * c["ci"][1]), fmt="{:.1f}"
                                ),
                                c["covered"],
                            ]
                            for c in cells
                        ],
                        fmt="{:.1f}",
                    ),
                ],
            )
        )
    return Report(
        title="Human preference study",
        subtitle=f"{study['votes']} votes, {study['annotators']} annotators, lengths {', '.join(map(str, study['lengths']))} tokens",
        sections=sections,
    )


def write_study_report(
    db_path: str | Path,
    out_dir: str | Path,
    *,
    min_check_accuracy: float = 0.75,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Path:
    """Analyse the database and write report.json, report.md, report.html and votes.csv into ``out_dir``."""
    analysis = analyse(db_path, min_check_accuracy=min_check_accuracy, n_resamples=n_resamples, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conn = store.connect(db_path)
    write_text_atomic(out_dir / "votes.csv", votes_csv(conn))
    conn.close()
    write_json(out_dir / "report.json", analysis)
    return write_report_files(build_report(analysis), out_dir)
