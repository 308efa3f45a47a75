"""`hyperfit analyze` end to end on a tiny original/hyperfitted pair, and its refusal of a run without a model."""

from __future__ import annotations

import pytest

from hyperfit.cli import main as hyperfit
from hyperfit.common.runs import read_json


def test_analyze_measures_layers_static_bias_and_reordering(tiny_run, tmp_path):
    model_dir, run = tiny_run
    out = tmp_path / "analyze"
    argv = ["analyze", "--original", str(model_dir), "--hyperfitted", str(run), "--out", str(out)]
    assert hyperfit([*argv, "--n_resamples", "200"]) == 0
    summary = read_json(out / "summary.json")
    layers = summary["layers"]
    assert len(layers) == 3  # embeddings + 2 blocks of the tiny Llama
    assert layers[0]["relative_change"] > 0  # the embeddings were trained too
    for layer in layers:
        pr = layer["participation_ratio"]
        assert pr["a_ci"][0] <= pr["a"] <= pr["a_ci"][1] and 1 <= pr["a"] <= 32
    assert summary["static_bias"]["tv_after"] < summary["static_bias"]["tv_before"]
    reorder = summary["rank_reordering"]
    assert 0 <= reorder["argmax_changed"]["value"] <= 1
    assert reorder["plain_agreement"]["value"] == pytest.approx(1 - reorder["argmax_changed"]["value"])
    decoding = summary["decoding"]
    assert decoding["hyperfitted greedy"]["minus_hyperfitted"] is None
    assert decoding["original greedy"]["minus_hyperfitted"]["n"] == summary["n_prompts"] == 4
    assert [c["claim"][:12] for c in summary["claims"]] == [
        "An entropy-m",
        "A static per",
        "The change i",
        "The change i",
        "The final bl",
    ]
    assert "Claims of Li et al." in (out / "report.md").read_text()
    assert (out / "generations" / "hyperfitted_greedy.jsonl").exists()


def test_analyze_refuses_a_directory_without_a_model(tmp_path, capsys):
    argv = ["analyze", "--hyperfitted", str(tmp_path), "--out", str(tmp_path / "a")]
    assert hyperfit(argv) == 2
    assert "not a finished fit-text run" in capsys.readouterr().err
