"""`hyperfit eval`: models × strategies from a run directory or a prompts file, and its refusals."""

from __future__ import annotations

import json

import pytest
import torch

from hyperfit.cli import main as hyperfit
from hyperfit.common.analysis import dataset_bleu, mean_ttr, rep_n
from hyperfit.common.compare import generation_metrics
from hyperfit.common.report.render import markdown_escape
from hyperfit.common.runs import read_json, read_jsonl
from tests.test_fit_text import fit


def test_eval_compares_a_run_with_its_original(tiny_model_dir, news_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert fit(tiny_model_dir, news_file, run_dir, "--strategies", "") == 0
    out = tmp_path / "eval"
    code = hyperfit(
        [
            "eval",
            "--models",
            f"original={tiny_model_dir},hyperfitted={run_dir}",
            "--out",
            str(out),
            "--strategies",
            "greedy,top_p,greedy_rep_penalty,greedy_blocked,entropy_matched",
            "--max_new_tokens",
            "12",
            "--prompt_tokens",
            "8",
            "--ttr_window",
            "12",
            "--precision",
            "fp32",
            "--lengths",
            "5,9",
            "--samples_shown",
            "2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = read_json(out / "summary.json")
    assert set(summary["decoding"]) == {"original", "hyperfitted"}
    assert set(summary["decoding"]["original"]) == {
        "greedy",
        "top_p",
        "greedy_rep_penalty",
        "greedy_blocked",
        "entropy_matched",
    }
    fit_summary = read_json(run_dir / "summary.json")
    assert summary["decoding"]["hyperfitted"]["greedy"]["ttr"] == fit_summary["after"]["ttr"]
    assert summary["sharpness"]["after"]["entropy"] < summary["sharpness"]["before"]["entropy"] + 1.0
    assert (out / "generations/decoding/hyperfitted_greedy_blocked.jsonl").exists()
    report = (out / "report.md").read_text()
    assert "Decoding strategies" in report

    # Per-prompt samples: every model's greedy continuation of the first prompts, as the generation files hold.
    generated = read_jsonl(out / "generations/decoding/hyperfitted_greedy.jsonl")
    assert "### Prompt 2" in report and "### Prompt 3" not in report
    shown = " ".join(markdown_escape(generated[1]["continuation"]).split())  # one line, HTML-safe
    assert f"**hyperfitted:** {shown}" in report
    assert "**original:**" in report and "hyperfitted</h4>" in (out / "report.html").read_text()

    # Shorter lengths are the metrics of the first L generated ids of the same continuations.
    assert set(summary["decoding_by_length"]) == {"5", "9"}
    train_seqs = torch.load(run_dir / "data.pt")["train_ids"].tolist()
    for strategy in ("greedy", "top_p"):
        prefixes = [
            record["ids"][:5]
            for record in read_jsonl(out / f"generations/decoding/original_{strategy}.jsonl")
        ]
        expected = generation_metrics(prefixes, train_seqs=train_seqs, ttr_window=12)
        assert summary["decoding_by_length"]["5"]["original"][strategy] == expected
    assert "TTR @5 | rep-4 @5 | TTR @9 | rep-4 @9 | TTR @12" in report

    # Word-level TTR: the decoded continuation split on whitespace, last --ttr_window words.
    texts = [
        record["continuation"] for record in read_jsonl(out / "generations/decoding/original_top_p.jsonl")
    ]
    assert summary["decoding"]["original"]["top_p"]["word_ttr"] == mean_ttr(
        [t.split() for t in texts], window=12
    )
    assert summary["decoding"]["original"]["top_p"]["word_rep_2"] == rep_n([t.split() for t in texts], n=2)
    # Dataset BLEU (paper Table 2): each continuation against every training block, averaged over prompts.
    ids = [record["ids"] for record in read_jsonl(out / "generations/decoding/original_top_p.jsonl")]
    bleu = dataset_bleu(ids, train_seqs)
    assert summary["decoding"]["original"]["top_p"]["dataset_bleu"] == pytest.approx(sum(bleu) / len(bleu))
    assert summary["ttr_by_position"] == {}  # continuations no longer than the TTR window: no curve

    # Intervals per model x strategy, and every other model against the first, paired over the prompts.
    decoding = summary["decoding"]
    for strategy in ("greedy", "top_p"):
        low, high = decoding["hyperfitted"][strategy]["ttr_ci"]
        assert low <= decoding["hyperfitted"][strategy]["ttr"] <= high
        greedy = summary["differences"]["hyperfitted_greedy_minus_original"][strategy]["ttr"]
        expected = decoding["hyperfitted"]["greedy"]["ttr"] - decoding["original"][strategy]["ttr"]
        assert greedy["diff"] == pytest.approx(expected) and greedy["n"] == summary["n_prompts"]
        same = summary["differences"]["hyperfitted_minus_original"][strategy]["rep_4"]
        expected = decoding["hyperfitted"][strategy]["rep_4"] - decoding["original"][strategy]["rep_4"]
        assert same["diff"] == pytest.approx(expected)


def test_lengths_must_be_shorter_than_the_generation(tiny_model_dir, tmp_path, capsys):
    base = ["eval", "--models", f"m={tiny_model_dir}", "--max_new_tokens", "16", "--out", str(tmp_path / "e")]
    assert hyperfit([*base, "--lengths", "8,16"]) == 2
    assert "--lengths item '16' is not a whole number between 1 and --max_new_tokens - 1 (15)" in (
        capsys.readouterr().err
    )
    assert hyperfit([*base, "--lengths", "eight"]) == 2
    assert "--lengths item 'eight'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_prompt_file_problems_are_one_sentence(tiny_model_dir, tmp_path, capsys):
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "too short"}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    base = ["eval", "--models", f"m={tiny_model_dir}", "--strategies", "greedy", "--max_new_tokens", "4"]
    assert hyperfit([*base, "--prompts", str(short), "--out", str(tmp_path / "a")]) == 2
    assert "has no text longer than 32 tokens (1 skipped)" in capsys.readouterr().err
    assert hyperfit([*base, "--prompts", str(empty), "--out", str(tmp_path / "b")]) == 2
    assert "has no text longer than 32 tokens (0 skipped)" in capsys.readouterr().err
    mixed = tmp_path / "mixed.jsonl"
    long_text = " ".join(["The river rose above the old stone bridge after days of rain."] * 6)
    mixed.write_text(json.dumps({"text": long_text}) + "\n" + json.dumps({"text": "tiny"}) + "\n")
    assert hyperfit([*base, "--prompts", str(mixed), "--out", str(tmp_path / "c")]) == 0
    assert "skipped 1 texts shorter than 33 tokens" in capsys.readouterr().out


def test_checkpoint_with_another_tokenizer_is_refused(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from tests.conftest import make_tiny_llama

    other = tmp_path / "other"
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_tokens(["<extra_token>"])
    make_tiny_llama(len(tok)).save_pretrained(other)
    tok.save_pretrained(other)
    code = hyperfit(
        [
            "eval",
            "--models",
            f"a={tiny_model_dir},b={other}",
            "--prompts",
            str(tmp_path / "x.jsonl"),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "x.jsonl").write_text(json.dumps({"text": "word " * 50}) + "\n")
    code = hyperfit(
        [
            "eval",
            "--models",
            f"a={tiny_model_dir},b={other}",
            "--prompts",
            str(tmp_path / "x.jsonl"),
            "--out",
            str(tmp_path / "f"),
            "--strategies",
            "greedy",
        ]
    )
    assert code == 2 and "uses another tokenizer than 'a'" in capsys.readouterr().err


def test_report_and_compare_refuse_an_unfinished_directory_before_writing(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert hyperfit(["report", str(tmp_path / "half")]) == 2
    assert "half is not a finished run directory (no summary.json)" in capsys.readouterr().err
    assert hyperfit(["compare", str(tmp_path / "half"), "--out", str(tmp_path / "cmp")]) == 2
    assert "half is neither a finished run (no summary.json) nor a --seeds" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists() and list((tmp_path / "half").iterdir()) == []


def test_every_command_answers_help_with_exit_status_0(capsys):
    for command in ("fit-text", "fit-image", "pretrain-image", "eval", "experiment", "compare", "report"):
        try:
            code = hyperfit([command, "--help"])
        except SystemExit as exit:  # HfArgumentParser's --help exits like argparse
            code = exit.code
        assert code == 0, command
    assert "usage: hyperfit compare" in capsys.readouterr().out
