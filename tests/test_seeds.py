"""`--seeds`: each seed a normal run directory OUT/seed_<s>/, then mean ± sd across seeds in OUT/summary.json and
the report; one seed keeps the single-run layout; duplicate or non-integer seeds are one sentence."""

from __future__ import annotations

import shutil

import pytest

from hyperfit.cli import main as hyperfit
from hyperfit.common.runs import HyperfitError, Run, read_json, write_json
from hyperfit.common.seeds import parse_seeds, run_seeds
from hyperfit.recipes.experiments.command import seed_headline
from tests.test_fit_text import TINY


def fit(model_dir, data, out, *extra):
    argv = ["fit-text", "--model", str(model_dir), "--data", str(data), "--out", str(out), *TINY]
    return hyperfit([*argv, "--strategies", "greedy", *extra])


def test_fit_text_over_two_seeds_writes_each_run_and_their_mean_and_sd(
    tiny_model_dir, news_file, tmp_path, capsys
):
    out = tmp_path / "seeds"
    quick = ("--epochs", "1", "--save_model", "false")
    assert fit(tiny_model_dir, news_file, out, "--seeds", "0,1", *quick) == 0
    runs = {s: read_json(out / f"seed_{s}/summary.json") for s in (0, 1)}
    for s, run in runs.items():
        assert read_json(out / f"seed_{s}/config.json")["seed"] == s
        assert (out / f"seed_{s}/report.html").exists() and run["after"]["ttr_ci"]
    summary = read_json(out / "summary.json")
    assert summary["kind"] == "seeds" and summary["seeds"] == [0, 1]
    for side in ("before", "after"):
        for name in ("ttr", "entropy", "perplexity"):
            values = [runs[s][side][name] for s in (0, 1)]
            spread = summary["mean_sd"][side][name]
            assert spread["mean"] == pytest.approx(sum(values) / 2)
            assert spread["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
            assert summary["per_seed"]["1"][side][name] == values[1]
    # The seed changes the data order only: both seeds start from the same model on the same texts.
    assert runs[0]["before"] == runs[1]["before"]
    assert runs[0]["train"]["final_train_loss"] != runs[1]["train"]["final_train_loss"]
    ttr = summary["mean_sd"]["after_minus_before"]["ttr"]["mean"]
    assert ttr == pytest.approx(
        sum(r["differences"]["after_minus_before"]["ttr"]["diff"] for r in runs.values()) / 2
    )
    page = (out / "report.md").read_text()
    assert "Mean ± sd over 2 seeds" in page and "(seed_1/report.html)" in page
    # `hyperfit report` rewrites it from disk; a plain resume of one run into it is refused in one sentence.
    (out / "report.md").unlink()
    assert hyperfit(["report", str(out)]) == 0 and (out / "report.md").read_text() == page
    assert fit(tiny_model_dir, news_file, out, "--resume", *quick) == 2
    assert "holds a run of `hyperfit fit-text --seeds`, not `hyperfit fit-text`" in capsys.readouterr().err


def test_compare_shows_a_seeds_directory_as_mean_and_sd_beside_a_single_run(
    tiny_model_dir, news_file, tmp_path, capsys
):
    seeds = tmp_path / "seeds"
    quick = ("--epochs", "1", "--save_model", "false")
    assert fit(tiny_model_dir, news_file, seeds, "--seeds", "0,1", *quick) == 0
    single = seeds / "seed_0"  # one seed's run is a finished run like any other
    runs = [read_json(seeds / f"seed_{s}/summary.json") for s in (0, 1)]
    assert hyperfit(["compare", str(seeds), str(single), "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp/comparison.md").read_text()
    header = next(line for line in page.splitlines() if line.startswith("| metric |"))
    assert "text (2 seeds) after" in header and "| text after |" in header
    ttr = [r["after"]["ttr"] for r in runs]
    mean, sd = sum(ttr) / 2, abs(ttr[0] - ttr[1]) / 2**0.5
    ttr_row = next(line for line in page.splitlines() if line.startswith("| greedy TTR"))
    cells = [cell.strip() for cell in ttr_row.strip("|").split("|")]
    low, high = runs[0]["after"]["ttr_ci"]
    assert f"{mean:.3f} ± {sd:.3f}" in cells  # the seeds: mean ± sd
    assert f"{ttr[0]:.3f} [{low:.3f}, {high:.3f}]" in cells  # the single run keeps its interval
    # Seed by seed, each value with the interval its own run recorded.
    detail = page.split("seed by seed")[1]
    low1, high1 = runs[1]["after"]["ttr_ci"]
    assert f"{ttr[1]:.3f} [{low1:.3f}, {high1:.3f}]" in detail
    shown = read_json(tmp_path / "cmp/comparison.json")["runs"]
    assert shown["text (2 seeds)"]["per_seed"]["1"]["after"]["ttr"] == ttr[1]
    assert shown["text (2 seeds)"]["mean_sd"]["after"]["ttr"]["sd"] == pytest.approx(sd)
    assert shown["text"]["after"]["ttr_ci"] == [low, high]

    # Interrupted after its first seed: that seed alone, and the report says one is unfinished.
    partial = tmp_path / "partial"
    shutil.copytree(seeds, partial)
    (partial / "summary.json").unlink()
    (partial / "seed_1/summary.json").unlink()
    assert hyperfit(["compare", str(partial), "--out", str(tmp_path / "cmp2")]) == 0
    assert "text (1 seed, 1 unfinished) after" in (tmp_path / "cmp2/comparison.md").read_text()

    # No finished seed, or a directory that is no run at all: one sentence naming it, nothing written.
    (partial / "seed_0/summary.json").unlink()
    capsys.readouterr()
    assert hyperfit(["compare", str(single), str(partial), "--out", str(tmp_path / "cmp3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{partial} is a --seeds directory in which no seed's run has finished" in err[0]
    assert "--resume" in err[0] and not (tmp_path / "cmp3").exists()
    assert hyperfit(["compare", str(tmp_path), "--out", str(tmp_path / "cmp3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path} is neither a finished run (no summary.json) nor a --seeds" in err[0]


def test_one_seed_keeps_the_single_run_layout(tiny_model_dir, news_file, tmp_path):
    out = tmp_path / "one"
    assert fit(tiny_model_dir, news_file, out, "--seeds", "3", "--epochs", "1", "--save_model", "false") == 0
    assert (out / "summary.json").exists() and not list(out.glob("seed_*"))
    assert read_json(out / "config.json")["seed"] == 3


@pytest.mark.parametrize("command", ["fit-text", "fit-image", "pretrain-image", "experiment data-size"])
@pytest.mark.parametrize(
    ("seeds", "words"),
    [("0,1,0", "names seed 0 more than once"), ("0,x", "item 'x' is not an integer")],
)
def test_duplicate_or_non_integer_seeds_are_one_sentence(command, seeds, words, tmp_path, capsys):
    assert hyperfit([*command.split(), "--seeds", seeds, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --seeds") and words in err[0]
    assert "e.g. --seeds 0,1,2" in err[0] or "such as --seeds 0,1,2" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_seeds_runner_resumes_refuses_and_overwrites_like_a_run(tmp_path):
    """The runner on its own, with a per-seed callable that writes a finished run of known figures."""
    calls = []

    def run_one(seed, out):
        calls.append(seed)
        run = Run.open(out, resume=True, command="toy")
        summary = {"after": {"ttr": 0.5 + seed / 10, "loss": float(seed)}}
        write_json(run.file("summary.json"), summary)
        return summary

    def headline(summary):
        return {"after": summary["after"]}

    options = dict(headline=headline, command="toy", config={"x": 1}, seed_controls="Seeds set nothing.")
    summary = run_seeds([0, 2, 4], run_one, out=tmp_path / "out", **options)
    assert summary["mean_sd"]["after"]["ttr"]["mean"] == pytest.approx(0.7)
    assert summary["mean_sd"]["after"]["loss"] == {"mean": 2.0, "sd": 2.0, "n": 3, "min": 0.0, "max": 4.0}
    assert read_json(tmp_path / "out/summary.json") == summary
    with pytest.raises(HyperfitError, match="already holds a finished run; pass --resume"):
        run_seeds([0, 2, 4], run_one, out=tmp_path / "out", **options)
    with pytest.raises(
        HyperfitError, match=r"finished run made with other settings \(seeds '0,2,4' → '0,2'\)"
    ):
        run_seeds([0, 2], run_one, out=tmp_path / "out", resume=True, **options)
    calls.clear()
    assert run_seeds([0, 2], run_one, out=tmp_path / "out", overwrite=True, **options)["seeds"] == [0, 2]
    assert calls == [0, 2] and not (tmp_path / "out/seed_4").exists()
    assert parse_seeds(" 2, 0 ,1") == [2, 0, 1] and parse_seeds("") == []


def test_experiment_rows_are_averaged_by_what_they_vary():
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "reports"
    order = seed_headline(read_json(fixtures / "tiny-exp-data-order/summary.json"))
    assert {"seed0", "seed1", "facts"} <= set(order)
    assert "mean_pairwise_disagreement" in order["facts"] and "seed" not in order["seed1"]
    grid = seed_headline(read_json(fixtures / "tiny-exp-lr-epochs/summary.json"))
    assert any(label.endswith("epoch 2") for label in grid) and "lr" not in next(iter(grid.values()))
    domain = seed_headline(read_json(fixtures / "tiny-exp-domain/summary.json"))
    assert any(" → " in label for label in domain)


def test_compare_says_whether_two_runs_agree_within_their_intervals(tiny_model_dir, news_file, tmp_path):
    quick = ("--epochs", "1", "--save_model", "false")
    a, b = tmp_path / "a", tmp_path / "b"
    assert fit(tiny_model_dir, news_file, a, "--seed", "0", *quick) == 0
    assert fit(tiny_model_dir, news_file, b, "--seed", "1", *quick) == 0
    runs = {name: read_json(path / "summary.json") for name, path in (("a", a), ("b", b))}
    for summary in runs.values():  # the machine is recorded beside the configuration
        assert (
            summary["machine"]["kernels"].startswith("CPU capability") and summary["machine"]["threads"] >= 1
        )
    assert "(CPU capability " in (a / "report.md").read_text().split("\n## ")[0]  # and in the report header
    assert hyperfit(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    (pair,) = read_json(tmp_path / "cmp/comparison.json")["agreement"]
    assert pair["a"] == "text" and pair["b"] == "text (b)"
    assert pair["settings_differ"] == {"seed": [0, 1]} and pair["machines_differ"] == {}
    after_ttr = next(r for r in pair["rows"] if (r["side"], r["figure"]) == ("after", "ttr"))
    (la, ha), (lb, hb) = runs["a"]["after"]["ttr_ci"], runs["b"]["after"]["ttr_ci"]
    assert after_ttr["overlap"] == (la <= hb and lb <= ha)
    assert pair["agree"] == all(r["overlap"] for r in pair["rows"])

    # A known case: b a copy of a but for its after-TTR interval, moved wholly above a's.
    shifted = read_json(a / "summary.json")
    shifted["after"]["ttr"], shifted["after"]["ttr_ci"] = ha + 0.15, [ha + 0.1, ha + 0.2]
    write_json(b / "summary.json", shifted)
    assert hyperfit(["compare", str(a), str(b), "--out", str(tmp_path / "cmp2")]) == 0
    (pair,) = read_json(tmp_path / "cmp2/comparison.json")["agreement"]
    disjoint = [(r["side"], r["figure"]) for r in pair["rows"] if not r["overlap"]]
    assert disjoint == [("after", "ttr")] and not pair["agree"]
    page = (tmp_path / "cmp2/comparison.md").read_text()
    assert "1 of" in page and "figures have disjoint intervals: after ttr." in page
