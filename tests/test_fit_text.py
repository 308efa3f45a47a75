"""`hyperfit fit-text` end to end on a tiny saved model and a real news file, and its refusals."""

from __future__ import annotations

import json

import pytest

from hyperfit.cli import main as hyperfit
from hyperfit.common.runs import read_json

TINY = [
    "--n_train",
    "8",
    "--block_len",
    "24",
    "--n_eval",
    "4",
    "--epochs",
    "2",
    "--batch_size",
    "4",
    "--lr",
    "3e-3",
    "--precision",
    "fp32",
    "--eval_every_epochs",
    "1",
    "--max_new_tokens",
    "12",
    "--prompt_tokens",
    "8",
    "--ttr_window",
    "12",
]


def fit(model_dir, data, out, *extra):
    return hyperfit(
        ["fit-text", "--model", str(model_dir), "--data", str(data), "--out", str(out), *TINY, *extra]
    )


def test_cli_runs_end_to_end_and_writes_a_self_describing_run(tiny_model_dir, news_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert fit(tiny_model_dir, news_file, out) == 0
    for name in (
        "config.json",
        "manifest.json",
        "metrics.jsonl",
        "data.pt",
        "summary.json",
        "report.md",
        "report.html",
        "generations/epoch_000.jsonl",
        "generations/epoch_002.jsonl",
        "model/model.safetensors",
        "model/tokenizer.json",
        "checkpoints/last/trainer_state.json",
    ):
        assert (out / name).exists(), name
    summary = read_json(out / "summary.json")
    for side in ("before", "after"):
        assert {"ttr", "entropy", "top1_prob", "perplexity"} <= set(summary[side])
    assert summary["before"]["epoch"] == 0 and summary["after"]["epoch"] == 2
    assert summary["wall_seconds"] > 0
    for model_name in ("original", "hyperfitted"):
        for strategy in ("greedy", "top_p", "greedy_blocked", "entropy_matched"):
            metrics = summary["decoding"][model_name][strategy]
            assert {
                "ttr",
                "word_ttr",
                "rep_2",
                "rep_3",
                "rep_4",
                "diversity",
                "distinct_2",
                "self_bleu",
                "copy_gt10_share",
            } <= set(metrics)
    assert "blocker_fired" in summary["decoding"]["hyperfitted"]["greedy_blocked"]
    assert summary["decoding"]["original"]["greedy"]["ttr"] == pytest.approx(summary["before"]["ttr"])
    assert summary["decoding"]["hyperfitted"]["greedy"]["ttr"] == pytest.approx(summary["after"]["ttr"])
    assert 0 <= summary["sharpness"]["top1_agreement"] <= 1
    assert sum(summary["sharpness"]["entropy_histogram"]["after"].values()) == pytest.approx(1.0)
    assert sum(summary["decoding"]["hyperfitted"]["greedy"]["copy_histogram"].values()) == 4  # one per prompt
    # 3 curves (loss, TTR, entropy); rank, entropy, top-1 and copied-span distributions
    assert (out / "report.html").read_text().count("<svg") == 3 + 4
    assert (out / "generations/decoding/original_top_p.jsonl").exists()
    assert "Decoding strategies" in (out / "report.html").read_text()
    config = read_json(out / "config.json")
    assert config["n_train"] == 8 and config["dropout_off"] is True and config["weight_decay"] == 0.0
    manifest = read_json(out / "manifest.json")
    assert len(manifest["train_doc_ids"]) == 8 and len(manifest["eval_doc_ids"]) == 4
    assert not set(manifest["train_doc_ids"]) & set(manifest["eval_doc_ids"])
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("eval") == 3 and kinds.count("train") == 4 and kinds.count("epoch") == 2
    generation = json.loads((out / "generations/epoch_002.jsonl").read_text().splitlines()[0])
    assert {"prompt", "continuation", "reference", "ids"} <= set(generation)
    assert "before" in (out / "report.md").read_text()

    # A finished run is never overwritten without being asked.
    before = (out / "summary.json").read_text()
    assert fit(tiny_model_dir, news_file, out) == 2
    assert "already holds a finished run; pass --resume" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert fit(tiny_model_dir, news_file, out, "--resume") == 0  # finished: only re-reports
    assert (out / "summary.json").read_text() == before
    assert fit(tiny_model_dir, news_file, out, "--overwrite") == 0
    assert not list(tmp_path.glob(".run.replaced-*"))  # the replaced run is gone once the new one has started


def test_yaml_config_and_flags_layer_over_presets(tiny_model_dir, news_file, tmp_path):
    from hyperfit.common.config import parse_recipe_config
    from hyperfit.recipes.fit_text import PRESETS, FitTextConfig

    yaml_file = tmp_path / "exp.yaml"
    yaml_file.write_text("preset: cpu-demo\nepochs: 7\nlr: 1.0e-4\n")
    cfg = parse_recipe_config(FitTextConfig, ["--config", str(yaml_file), "--lr", "2e-4"], presets=PRESETS)
    assert cfg.data.n_train == 16 and cfg.train.epochs == 7 and cfg.train.lr == 2e-4
    yaml_file.write_text("epochs: 3\nnot_a_field: 1\n")
    assert hyperfit(["fit-text", "--config", str(yaml_file)]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/corpus.txt"], "data file /nonexistent/corpus.txt does not exist"),
        (["--n_train", "500"], "has only 80 documents with at least 24 tokens"),
        (["--lr", "-1"], "lr must be positive"),
    ],
)
def test_bad_input_is_one_clear_sentence(tiny_model_dir, news_file, tmp_path, capsys, args, message):
    argv = [
        "fit-text",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(news_file),
        "--out",
        str(tmp_path / "r"),
        *TINY,
    ]
    assert hyperfit(argv + args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last


def test_unloadable_model_says_how_to_use_the_default(news_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fit("no-such-org/no-such-model", news_file, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "could not be loaded" in err and "leave --model unset" in err


def test_report_marks_repeated_ngrams():
    from hyperfit.common.report import highlight_repeats

    looped = highlight_repeats("the cat sat on the mat and the cat sat on the mat", n=4)
    assert looped.count("<mark>") == 12  # "the cat sat on the mat" twice is marked; "and" between them is not
    assert " and " in looped
    assert highlight_repeats("a b c d e f", n=4) == "a b c d e f"
    assert highlight_repeats("<b> x y z <b> x y z", n=4).startswith("<mark>&lt;b&gt;</mark>")


def test_eval_data_reports_every_figure_per_domain_and_averaged(tiny_model_dir, news_file, tmp_path):
    """--eval_data news,stories: N held-out texts from each source, none of them a training document; every
    evaluation figure and every decoding figure is the mean of the domains' own, which are kept beside it."""
    from tests.conftest import corpus_lines

    stories = tmp_path / "stories.jsonl"
    stories.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus_lines()[150:170]))
    out = tmp_path / "run"
    assert (
        fit(tiny_model_dir, news_file, out, "--eval_data", f"{news_file},{stories}", "--strategies", "greedy")
        == 0
    )
    manifest = read_json(out / "manifest.json")
    assert list(manifest["eval_sets"]) == ["news", "stories"]
    assert manifest["eval_sets"]["news"]["rows"] == [0, 4] and manifest["eval_sets"]["stories"]["rows"] == [
        4,
        8,
    ]
    assert not set(manifest["eval_sets"]["news"]["doc_ids"]) & set(manifest["train_doc_ids"])
    summary = read_json(out / "summary.json")
    after = [
        r
        for r in (json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "eval"
    ][-1]
    for key in ("ttr", "loss", "entropy", "top1_prob", "short_share"):
        domains = [after["domains"][d][key] for d in ("news", "stories")]
        assert after[key] == pytest.approx(sum(domains) / 2), key
    assert summary["after"]["ttr"] == after["ttr"]
    greedy = summary["decoding"]["hyperfitted"]["greedy"]
    assert greedy["ttr"] == pytest.approx(
        (greedy["domains"]["news"]["ttr"] + greedy["domains"]["stories"]["ttr"]) / 2
    )
    assert set(summary["sharpness"]["domains"]) == {"news", "stories"}
    # Intervals resample prompts within their domain, of the figure as reported (the mean over domains), so
    # each brackets its value and after - before is the difference of the reported figures.
    for key in ("ttr", "loss", "perplexity", "rep_4", "entropy"):
        low, high = summary["after"][f"{key}_ci"]
        assert low - 1e-9 <= summary["after"][key] <= high + 1e-9, key
        change = summary["differences"]["after_minus_before"][key]
        assert change["diff"] == pytest.approx(summary["after"][key] - summary["before"][key], rel=1e-6), key
    low, high = greedy["ttr_ci"]
    assert low <= greedy["ttr"] <= high


def test_eval_data_that_overlaps_the_training_documents_is_refused(
    tiny_model_dir, news_file, tmp_path, capsys
):
    from tests.conftest import corpus_lines

    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus_lines()[:80]))
    # 40 held-out texts from a file that holds the 8 training documents among its 80: one is met on the way.
    assert fit(tiny_model_dir, news_file, tmp_path / "run", "--eval_data", str(leaked), "--n_eval", "40") == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert (
        error.startswith("error: --eval_data") and "consecutive tokens with the training documents" in error
    )


def test_the_comparison_reuses_each_evaluations_statistics(tiny_model_dir, news_file, tmp_path, monkeypatch):
    """The first and last evaluations already scored the original and the hyperfitted model on the held-out
    blocks: retention on the run's own blocks and the sharpness comparison take those numbers, with no second
    pass over the blocks, and they equal the before / after figures."""
    import hyperfit.common.evaluate as evaluate_module
    import hyperfit.recipes.fit_text as fit_text_module
    import hyperfit.text.retention as retention_module

    passes = []
    real = evaluate_module.collect_token_stats

    def counted(model, blocks, **kwargs):
        passes.append(tuple(blocks.shape))
        return real(model, blocks, **kwargs)

    for module in (evaluate_module, fit_text_module, retention_module):
        monkeypatch.setattr(module, "collect_token_stats", counted)
    out = tmp_path / "run"
    assert fit(tiny_model_dir, news_file, out, "--retention_domains", "", "--strategies", "greedy,top_p") == 0
    summary = read_json(out / "summary.json")
    evaluations = 3  # before, after epoch 1, after epoch 2
    assert len(passes) == evaluations  # one teacher-forced pass per evaluation, none after training
    own = summary["retention"]["own held-out"]
    assert own["perplexity_before"] == pytest.approx(summary["before"]["perplexity"], rel=1e-9)
    assert own["perplexity_after"] == pytest.approx(summary["after"]["perplexity"], rel=1e-9)
    assert summary["sharpness"]["before"]["entropy"] == pytest.approx(summary["before"]["entropy"], rel=1e-6)
    assert summary["sharpness"]["after"]["top1_prob"] == pytest.approx(
        summary["after"]["top1_prob"], rel=1e-6
    )
