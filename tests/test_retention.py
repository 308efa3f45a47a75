"""Knowledge retention: per-domain perplexity in fit-text summaries, the offline cloze probe, `hyperfit retention`."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from hyperfit.cli import main as hyperfit
from hyperfit.common.runs import HyperfitError, read_json
from hyperfit.recipes.retention import parse_tasks
from hyperfit.text.retention import cloze_items, perplexity_change, score_cloze
from tests.conftest import make_tiny_gpt2, make_tiny_llama


def test_fit_text_summary_reports_perplexity_on_every_bundled_domain(tiny_run):
    _, run = tiny_run
    summary = read_json(run / "summary.json")
    retention = summary["retention"]
    assert set(retention) == {"own held-out", "lee", "wiki"}
    own = retention["own held-out"]
    assert own["trained_on"] and own["perplexity_after"] == pytest.approx(
        summary["after"]["perplexity"], rel=1e-3
    )
    for domain in ("lee", "wiki"):
        r = retention[domain]
        assert not r["trained_on"] and len(r["block_loss_after"]) == summary["n_eval"]
        low, high = r["perplexity_after_ci"]
        assert low <= r["perplexity_after"] <= high
        assert r["ratio"] == pytest.approx(r["perplexity_after"] / r["perplexity_before"], rel=1e-6)
    assert "Retention: held-out perplexity on every bundled domain" in (run / "report.md").read_text()
    assert summary["trainable"]["train_layers"] == "all"
    assert summary["trainable"]["trainable_params"] == summary["trainable"]["total_params"]


def test_perplexity_change_is_the_exp_of_the_paired_nll_difference():
    before = {"block_loss": [1.0, 2.0, 3.0, 2.0]}
    after = {"block_loss": [1.5, 2.5, 3.5, 2.5]}
    change = perplexity_change(before, after)
    assert change["ratio"] == pytest.approx(math.exp(0.5)) and change["ratio_ci"] == pytest.approx(
        [math.exp(0.5)] * 2
    )
    assert change["p"] == pytest.approx(
        0.125
    )  # 4 equal positive differences: 2 of 16 sign patterns as extreme


def test_cloze_items_pick_a_recurring_content_word_with_its_context():
    # Short words and stopwords are never targets; "Anderson" recurs 27 words later.
    doc = " ".join(["the"] * 30 + ["Anderson", "spoke"] + ["to"] * 25 + ["then", "Anderson", "left"])
    items = cloze_items([doc, "too short"], n_items=5, min_gap_words=20, context_words=40)
    assert items == [{"doc": 0, "context": " ".join(doc.split()[18:58]), "target": " Anderson"}]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_score_cloze_equals_an_unpadded_forward(tiny_tokenizer, family):
    # GPT-2 has absolute positions: left padding must not shift them.
    make = make_tiny_llama if family == "llama" else partial(make_tiny_gpt2, dropout=0.0)
    model = make(len(tiny_tokenizer)).eval()
    items = [
        {"context": "The river rose above the stone bridge and the", "target": " river"},
        {"context": "Rain fell", "target": " overnight"},
    ]
    scored = score_cloze(model, tiny_tokenizer, items, batch_size=2)
    for item, logprob, hit in zip(items, scored["logprobs"], scored["hits"], strict=True):
        context = tiny_tokenizer(item["context"])["input_ids"]
        target = tiny_tokenizer(item["target"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context + target])).logits[0]
        logp = torch.log_softmax(logits, -1)
        positions = range(len(context) - 1, len(context) + len(target) - 1)
        expected = sum(float(logp[p, t]) for p, t in zip(positions, target, strict=True))
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert hit == float(all(int(logits[p].argmax()) == t for p, t in zip(positions, target, strict=True)))


def test_retention_command_compares_models_offline(tiny_run, tmp_path):
    model_dir, run = tiny_run
    out = tmp_path / "retention"
    argv = ["retention", "--models", f"original={model_dir},hyperfitted={run}", "--out", str(out)]
    assert (
        hyperfit([*argv, "--n_items", "12", "--n_blocks", "6", "--block_len", "24", "--precision", "fp32"])
        == 0
    )
    summary = read_json(out / "summary.json")
    assert set(summary["cloze"]["hyperfitted"]) == {"lee", "wiki", "newsgroups"}
    lee = summary["cloze"]["hyperfitted"]["lee"]
    assert lee["n_items"] == 12 and len(lee["hits"]) == 12 and "accuracy_minus_first" in lee
    assert summary["perplexity"]["hyperfitted"]["wiki"]["ratio_to_first"]["n_blocks"] == 6
    assert summary["excluded_training_documents"] == {}  # the run trained on a file, not a bundled corpus
    assert "Cloze probe" in (out / "report.md").read_text()


def test_retention_bad_tasks_and_missing_lm_eval_are_one_sentence(tiny_run, tmp_path, capsys):
    with pytest.raises(HyperfitError, match="unknown; use cloze"):
        parse_tasks("cloze,hellaswag")
    assert parse_tasks("cloze,lm-eval:hellaswag") == (["cloze"], ["hellaswag"])
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        model_dir, _ = tiny_run
        argv = [
            "retention",
            "--models",
            f"a={model_dir}",
            "--tasks",
            "lm-eval:hellaswag",
            "--out",
            str(tmp_path / "x"),
        ]
        assert hyperfit(argv) == 2
        assert "lm-evaluation-harness, which is not installed" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
