"""Intervals and paired differences on every headline figure: the per-prompt parts reproduce each reported
figure, and a tiny fit-text run's summary.json carries ``<name>_ci`` around each value and ``differences`` whose
``diff`` is the stated difference."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from hyperfit.common.evaluate import (
    FIGURES,
    figure_differences,
    figure_intervals,
    generation_stats,
    teacher_forced_stats,
)
from hyperfit.common.runs import read_json, read_jsonl
from tests.conftest import make_tiny_llama

CHECKED = ("ttr", "entropy", "top1_prob", "perplexity", "loss", "rep_4", "loop_share", "gen_entropy")


def figure_from_units(units: list[dict], name: str) -> float:
    figure = FIGURES[name]
    numerator = sum(u[figure.numerator] for u in units)
    denominator = sum(u[figure.denominator] for u in units) if figure.denominator else len(units)
    value = numerator / denominator
    return math.exp(value) if figure.exp else value


def assert_interval_brackets(record: dict, name: str) -> None:
    low, high = record[f"{name}_ci"]
    assert low - 1e-9 <= record[name] <= high + 1e-9, (name, record[name], (low, high))


def test_the_per_prompt_parts_reproduce_every_reported_figure():
    torch.manual_seed(0)
    model = make_tiny_llama(101, seed=3).eval()
    blocks = torch.randint(3, 101, (6, 20))
    gen, _ = generation_stats(model, blocks[:, :8], max_new_tokens=10, ttr_window=8, eos_id=5)
    held = teacher_forced_stats(model, blocks)
    for metrics in (gen, held):
        units = metrics.pop("units")
        assert len(units) == 6
        for name, value in metrics.items():
            if name in FIGURES and math.isfinite(value):
                assert figure_from_units(units, name) == pytest.approx(value, rel=1e-6, abs=1e-9), name
                assert_interval_brackets(metrics, name)
        # Intervals recomputed from the parts are the ones reported (the same seeded resamples).
        reported = {k: v for k, v in metrics.items() if k.endswith("_ci")}
        assert figure_intervals(units, names=list(metrics)) == reported
    # A model compared with itself: every difference is exactly 0 and nothing is distinguishable from 0.
    again = generation_stats(model, blocks[:, :8], max_new_tokens=10, ttr_window=8, eos_id=5)[0]["units"]
    same = figure_differences(again, again)
    assert same and all(d["diff"] == 0.0 and d["p"] == 1.0 and d["ci_includes_zero"] for d in same.values())


def test_fit_text_summary_has_intervals_and_paired_differences(tiny_run):
    _, run = tiny_run
    summary = read_json(run / "summary.json")
    before, after = summary["before"], summary["after"]
    for side in (before, after):
        for name in CHECKED:
            assert_interval_brackets(side, name)
    changes = summary["differences"]["after_minus_before"]
    for name in CHECKED:
        change = changes[name]
        assert change["diff"] == pytest.approx(after[name] - before[name], rel=1e-6, abs=1e-9), name
        assert change["ci"][0] <= change["diff"] <= change["ci"][1] and 0 <= change["p"] <= 1
        assert change["n"] == summary["n_eval"]
        assert change["ci_includes_zero"] == (change["ci"][0] <= 0 <= change["ci"][1])
    # Each prompt's parts are in its generation record, so the differences can be recomputed from disk.
    records = {
        side: read_jsonl(run / f"generations/epoch_{summary[side]['epoch']:03d}.jsonl")
        for side in ("before", "after")
    }
    recomputed = figure_differences(
        [r["units"] for r in records["after"]], [r["units"] for r in records["before"]], names=["ttr"]
    )
    assert recomputed["ttr"] == changes["ttr"]
    # The hyperfitted model's greedy TTR against the original's with each strategy decoded (greedy only here).
    decoding = summary["decoding"]
    greedy = summary["differences"]["hyperfitted_greedy_minus_original"]["greedy"]["ttr"]
    assert greedy["diff"] == pytest.approx(
        decoding["hyperfitted"]["greedy"]["ttr"] - decoding["original"]["greedy"]["ttr"]
    )
    assert_interval_brackets(decoding["hyperfitted"]["greedy"], "ttr")


def test_reports_show_each_interval_and_say_which_differences_are_not_distinguishable(tiny_run, tmp_path):
    from hyperfit.common.report import write_report_files
    from hyperfit.common.report.sections import HEADLINE_ROWS, before_after_note, before_after_table
    from hyperfit.recipes.compare import write_comparison
    from hyperfit.text.report import fit_report

    summary = {
        "before": {"ttr": 0.40, "ttr_ci": [0.35, 0.45], "rep_4": 0.30, "rep_4_ci": [0.2, 0.4]},
        "after": {"ttr": 0.60, "ttr_ci": [0.55, 0.65], "rep_4": 0.28, "rep_4_ci": [0.18, 0.38]},
        "differences": {
            "after_minus_before": {
                "ttr": {"diff": 0.2, "ci": [0.1, 0.3], "p": 0.001, "n": 16, "ci_includes_zero": False},
                "rep_4": {"diff": -0.02, "ci": [-0.1, 0.06], "p": 0.6, "n": 16, "ci_includes_zero": True},
            }
        },
    }
    table = before_after_table(summary, HEADLINE_ROWS)
    assert table.columns == ["metric", "before", "after", "change", "after − before [95 % CI]", "p"]
    note = before_after_note(summary, HEADLINE_ROWS).markdown
    assert "Not distinguishable from zero on these 16 prompts" in note
    assert "rep-4 of the greedy continuations" in note and "greedy TTR" not in note

    _, run = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("model", "checkpoints"))
    write_report_files(fit_report(copy), copy)
    page = (copy / "report.md").read_text()
    saved = read_json(copy / "summary.json")
    low, high = saved["after"]["ttr_ci"]
    assert f"{saved['after']['ttr']:.3f} [{low:.3f}, {high:.3f}]" in page
    assert "| after − before [95 % CI] | p |" in page
    assert f"on these {saved['n_eval']} prompts" in page
    assert "hyperfitted decoding greedily minus original with each strategy" in page
    comparison = write_comparison([copy], tmp_path / "cmp").read_text()
    assert "text after − before" in comparison and f"[{low:.3f}, {high:.3f}]" in comparison
