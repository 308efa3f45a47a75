"""`hyperfit experiment ...`: each data experiment end to end on a tiny saved model and real news text."""

from __future__ import annotations

import pytest
import torch

from hyperfit.cli import main as hyperfit
from hyperfit.common.config import parse_recipe_config
from hyperfit.common.runs import HyperfitError, read_json, read_jsonl
from hyperfit.recipes.experiments import PRESETS, ExperimentRecipeConfig, size_epochs
from tests.conftest import corpus_lines

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
    "--strategies",
    "greedy,top_p",
]


def experiment(name, model_dir, data, out, *extra):
    argv = ["experiment", name, "--model", str(model_dir), "--data", str(data), "--out", str(out), *TINY]
    return hyperfit([*argv, *extra])


def rows_by(summary, key):
    return {row[key]: row for row in summary["rows"]}


def assert_report(out, plots: int):
    for name in ("summary.json", "report.md", "report.html", "experiment.json"):
        assert (out / name).exists(), name
    page = (out / "report.html").read_text()
    assert page.count("<svg") == plots and "<table>" in page
    assert len(list((out / "plots").glob("*.svg"))) == plots  # the Markdown's copies of the charts


def test_size_epochs_hold_the_updates_fixed():
    assert size_epochs(32, batch_size=8, updates=80) == 20
    assert size_epochs(8, batch_size=8, updates=80) == 80
    assert size_epochs(2000, batch_size=8, updates=5000) == 20
    assert size_epochs(12, batch_size=8, updates=10) == 10  # one full batch per epoch; 4 blocks left out
    with pytest.raises(HyperfitError, match="smaller than the batch of 8"):
        size_epochs(4, batch_size=8, updates=80)


def test_presets_are_cpu_scale_by_default_and_paper_scale_on_request():
    cfg = parse_recipe_config(ExperimentRecipeConfig, ["--preset", "cpu"], presets=PRESETS)
    assert (cfg.data.n_train, cfg.data.block_len, cfg.eval.max_new_tokens, cfg.exp.updates) == (
        16,
        64,
        96,
        48,
    )
    cfg = parse_recipe_config(
        ExperimentRecipeConfig, ["--preset", "paper", "--sizes", "8,2000"], presets=PRESETS
    )
    data, train, exp = cfg.data, cfg.train, cfg.exp
    assert (data.n_train, train.lr, exp.updates, exp.sizes, exp.repeat_first_seed) == (
        2000,
        1e-6,
        5000,
        "8,2000",
        True,
    )


def test_data_size_holds_updates_fixed_and_evaluates_on_one_held_out_set(
    tiny_model_dir, news_file, tmp_path, capsys
):
    out = tmp_path / "size"
    assert experiment("data-size", tiny_model_dir, news_file, out, "--sizes", "4,8", "--updates", "4") == 0
    assert_report(out, 1)
    summary = read_json(out / "summary.json")
    rows = rows_by(summary, "n_train")
    assert sorted(rows) == [0, 4, 8]
    assert (rows[4]["epochs"], rows[8]["epochs"]) == (4, 2)
    assert rows[4]["updates"] == rows[8]["updates"] == 4
    assert summary["heldout_of"] == "n8"
    # The largest N is evaluated on its own held-out set, the common one; N = 4 is re-evaluated on it.
    assert rows[8]["ttr"] == rows[8]["own_heldout_ttr"]
    assert read_json(out / "runs/n4/common_heldout.json")["ttr"] == rows[4]["ttr"]
    n8 = read_json(out / "runs/n8/manifest.json")
    assert not set(read_json(out / "runs/n4/manifest.json")["train_doc_ids"]) & set(n8["eval_doc_ids"])
    assert rows[0]["ttr"] == read_json(out / "runs/n8/summary.json")["before"]["ttr"]
    assert not (out / "runs/n4/model").exists() and not (out / "runs/n4/checkpoints").exists()

    # A finished experiment is refused without a flag; --resume reuses every variant and cached evaluation.
    assert experiment("data-size", tiny_model_dir, news_file, out, "--sizes", "4,8", "--updates", "4") == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (
        experiment(
            "data-size", tiny_model_dir, news_file, out, "--sizes", "4,8", "--updates", "4", "--resume"
        )
        == 0
    )
    assert read_json(out / "summary.json")["rows"] == summary["rows"]

    assert experiment("data-size", tiny_model_dir, news_file, tmp_path / "bad", "--sizes", "2,8") == 2
    assert "data size 2 is smaller than the batch of 4" in capsys.readouterr().err


def test_data_order_agreement_matrix(tiny_model_dir, news_file, tmp_path):
    out = tmp_path / "order"
    args = ("--orders", "0,1", "--repeat_first_seed", "true")
    assert experiment("data-order", tiny_model_dir, news_file, out, *args) == 0
    assert_report(out, 1)
    summary = read_json(out / "summary.json")
    matrix = summary["agreement"]
    names = ["original", "seed0", "seed1", "seed0_repeat", "seed0_shuffle1"]
    assert list(matrix) == names
    for a in names:
        assert matrix[a][a] == 1.0
        for b in names:
            assert matrix[a][b] == matrix[b][a] and 0 <= matrix[a][b] <= 1
    # Every cell carries its 95 % interval over the held-out blocks, in summary.json and in the report's matrix.
    intervals = summary["agreement_ci"]
    for a in names:
        assert intervals[a][a] == [1.0, 1.0]
        for b in names:
            low, high = intervals[a][b]
            assert intervals[b][a] == [low, high] and low <= matrix[a][b] <= high
    assert (
        rows_by(summary, "variant")["seed1"]["agreement_with_original_ci"] == intervals["seed1"]["original"]
    )
    page = (out / "report.md").read_text().split("Pairwise top-1 agreement on the held-out blocks")[1]
    matrix_rows = [line for line in page.splitlines() if line.startswith("| seed1 |")]
    low, high = intervals["seed1"]["seed0"]
    assert (
        len(matrix_rows) == 1 and f"{matrix['seed1']['seed0']:.3f} [{low:.3f}, {high:.3f}]" in matrix_rows[0]
    )
    assert summary["mean_pairwise_disagreement"] == pytest.approx(1 - matrix["seed0"]["seed1"])
    # On a CPU the same order trained twice gives the same model: disagreement comes from the order alone.
    assert summary["repeat_agreement"] == 1.0
    assert summary["first_epoch_orders"]["seed0"] != summary["first_epoch_orders"]["seed1"]
    rows = rows_by(summary, "variant")
    assert rows["seed0"]["final_train_loss"] == rows["seed0_repeat"]["final_train_loss"]
    assert rows["seed0"]["final_train_loss"] != rows["seed1"]["final_train_loss"]
    assert rows["seed1"]["agreement_with_original"] == matrix["seed1"]["original"]
    assert summary["positions"] == 4 * 23 == torch.load(out / "runs/seed1/top1_ids.pt").numel()
    # Shuffle-1: seed0's order with one pair of blocks swapped, differing from it in exactly two positions of
    # every epoch (train() applies the same swap to every epoch; the first epoch's order is recorded).
    plain, shuffled = (summary["first_epoch_orders"][v] for v in ("seed0", "seed0_shuffle1"))
    differ = [k for k in range(len(plain)) if plain[k] != shuffled[k]]
    assert len(differ) == 2 and {plain[k] for k in differ} == set(summary["shuffle1_pair"])
    assert differ == [0, 4]  # the first blocks of the first two batches (batch 4)
    assert read_json(out / "runs/seed0_shuffle1/config.json")["swap_blocks"] == "{},{}".format(
        *summary["shuffle1_pair"]
    )
    assert summary["shuffle1_agreement"] == matrix["seed0"]["seed0_shuffle1"]
    low, high = summary["shuffle1_agreement_ci"]
    assert low <= summary["shuffle1_agreement"] <= high
    assert rows["seed0_shuffle1"]["final_train_loss"] != rows["seed0"]["final_train_loss"]
    assert "Shuffle-1" in (out / "report.md").read_text()
    assert not (out / "runs/seed0/model").exists()


def test_domain_table_trains_on_each_domain_and_evaluates_on_every_one(tiny_model_dir, news_file, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(corpus_lines()[-80:]) + "\n", encoding="utf-8")
    out = tmp_path / "domain"
    assert experiment("domain", tiny_model_dir, news_file, out, "--domains", f"{news_file},{other}") == 0
    assert_report(out, 1)
    summary = read_json(out / "summary.json")
    matrix = summary["ttr_matrix"]
    assert list(matrix) == ["original", "news", "other"]
    assert all(list(row) == ["news", "other"] for row in matrix.values())
    assert len(summary["rows"]) == 6
    for domain in ("news", "other"):
        run = read_json(out / f"runs/train_{domain}/summary.json")
        # The re-evaluation of a model on its own domain reproduces fit-text's final evaluation.
        assert matrix[domain][domain] == pytest.approx(run["after"]["ttr"], abs=1e-9)
        assert matrix["original"][domain] == run["before"]["ttr"]
    assert "| trained on | news | other |" in (out / "report.md").read_text()


def test_domain_needs_two_distinct_domains(tiny_model_dir, news_file, tmp_path, capsys):
    assert experiment("domain", tiny_model_dir, news_file, tmp_path / "d", "--domains", str(news_file)) == 2
    assert "at least two corpora" in capsys.readouterr().err
    both = f"{news_file},{tmp_path / 'x' / 'news.txt'}"
    assert experiment("domain", tiny_model_dir, news_file, tmp_path / "d", "--domains", both) == 2
    assert "both named 'news'" in capsys.readouterr().err


def test_lr_epochs_reads_the_epoch_axis_off_one_run_per_learning_rate(tiny_model_dir, news_file, tmp_path):
    out = tmp_path / "grid"
    assert (
        experiment("lr-epochs", tiny_model_dir, news_file, out, "--lrs", "1e-3,3e-3", "--epoch_grid", "1,2")
        == 0
    )
    assert_report(out, 2)
    rows = {(r["lr"], r["epoch"]): r for r in read_json(out / "summary.json")["rows"]}
    assert sorted(rows) == [(1e-3, 0), (1e-3, 1), (1e-3, 2), (3e-3, 0), (3e-3, 1), (3e-3, 2)]
    assert rows[(1e-3, 0)]["ttr"] == rows[(3e-3, 0)]["ttr"]  # both start from the same model
    run = out / "runs/lr0.003"
    assert rows[(3e-3, 2)]["ttr"] == read_json(run / "summary.json")["after"]["ttr"]
    epoch_1 = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "epoch"][0]
    assert rows[(3e-3, 1)]["train_loss"] == epoch_1["train_loss"]

    # `hyperfit report` on an experiment re-renders the experiment's own report from disk: same tables, same
    # recorded wall time, no variant retrained.
    report, summary = (out / "report.md").read_text(), read_json(out / "summary.json")
    (out / "report.md").unlink()
    variant_metrics = (run / "metrics.jsonl").read_text()
    assert hyperfit(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report
    assert read_json(out / "summary.json") == summary
    assert (run / "metrics.jsonl").read_text() == variant_metrics


def test_early_stop_retraces_the_full_run_and_decodes_both(tiny_model_dir, news_file, tmp_path):
    out = tmp_path / "early"
    assert experiment("early-stop", tiny_model_dir, news_file, out, "--epochs", "4") == 0
    assert_report(out, 2)
    summary = read_json(out / "summary.json")
    evals = [r for r in read_jsonl(out / "runs/hyperfitted/metrics.jsonl") if r.get("kind") == "eval"]
    lowest = min((r for r in evals if r["epoch"] >= 1), key=lambda r: r["loss"])
    assert summary["stop_epoch"] == lowest["epoch"] and summary["stop_rule"] == "lowest held-out loss"
    # Stopping after k epochs is exactly the full run at epoch k (constant lr, order fixed by seed and epoch).
    assert summary["early_run_minus_full_run_at_stop"] == {"ttr": 0.0, "loss": pytest.approx(0.0, abs=1e-6)}
    rows = rows_by(summary, "variant")
    assert list(rows) == ["original", "early_stopped", "hyperfitted"]
    assert rows["early_stopped"]["epochs"] == lowest["epoch"] and rows["hyperfitted"]["epochs"] == 4
    for row in rows.values():
        assert row["greedy_ttr"] == pytest.approx(row["ttr"]) and 0 < row["top_p_ttr"] <= 1

    fixed = tmp_path / "fixed"
    assert (
        experiment("early-stop", tiny_model_dir, news_file, fixed, "--epochs", "3", "--early_stop_epoch", "1")
        == 0
    )
    fixed_summary = read_json(fixed / "summary.json")
    assert (
        fixed_summary["stop_epoch"] == 1 and rows_by(fixed_summary, "variant")["hyperfitted"]["epochs"] == 3
    )
    assert fixed_summary["early_run_minus_full_run_at_stop"] == {
        "ttr": 0.0,
        "loss": pytest.approx(0.0, abs=1e-6),
    }
    assert (
        experiment("early-stop", tiny_model_dir, news_file, tmp_path / "no", "--early_stop_epoch", "2") == 2
    )


def test_cli_lists_the_experiments(capsys):
    assert hyperfit(["experiment", "--help"]) == 0
    assert "data-order" in capsys.readouterr().out
    assert hyperfit(["experiment", "shuffle"]) == 2
    assert "unknown experiment 'shuffle'" in capsys.readouterr().err
    assert hyperfit(["--help"]) == 0
    assert "experiment" in capsys.readouterr().out


def test_which_layers_trains_each_subset_for_the_same_updates(tiny_model_dir, news_file, tmp_path):
    out = tmp_path / "layers"
    argv = ["--lora_rank", "2", "--lora_layers", "last:1", "--retention_domains", "lee"]
    assert experiment("which-layers", tiny_model_dir, news_file, out, *argv) == 0
    summary = read_json(out / "summary.json")
    rows = rows_by(summary, "variant")
    assert list(rows) == ["original", "full", "last_block", "embeddings_head", "lora"]
    params = {name: row["trainable_params"] for name, row in rows.items()}
    assert params["full"] > params["last_block"] > params["lora"] > 0
    for name in ("full", "last_block", "embeddings_head", "lora"):
        run = read_json(out / "runs" / name / "summary.json")
        assert run["train"]["steps"] == read_json(out / "runs/full/summary.json")["train"]["steps"]
        row = rows[name]
        assert row["ttr_ci"][0] <= row["ttr"] <= row["ttr_ci"][1]
        assert row["ttr_minus_original"]["n"] == 4 and "lee" in row["retention"]
    assert rows["lora"]["train_layers"] == "last:1" and rows["lora"]["lora_r"] == 2
    assert (out / "runs/full/model/config.json").exists()  # kept for `hyperfit analyze`
    assert not (out / "runs/lora/model").exists()
    assert (
        experiment("which-layers", tiny_model_dir, news_file, tmp_path / "bad", "--train_layers", "last:1")
        == 2
    )


def test_which_layers_to_loss_trains_each_subset_until_the_loss_is_reached(
    tiny_model_dir, news_file, tmp_path
):
    out = tmp_path / "layers"
    argv = ["--lora_rank", "2", "--lora_layers", "last:1", "--retention_domains", "lee"]
    # Any loss is below 1000, so each --to_loss row stops after its first epoch (2 updates; full trains 2 epochs).
    extra = ["--to_loss", "1000", "--to_loss_epochs", "5", "--to_loss_lr", "1e-3"]
    assert experiment("which-layers", tiny_model_dir, news_file, out, *argv, *extra) == 0
    summary = read_json(out / "summary.json")
    rows = rows_by(summary, "variant")
    to_loss = ["last_block_to_loss", "embeddings_head_to_loss", "lora_to_loss"]
    assert list(rows) == ["original", "full", "last_block", "embeddings_head", "lora", *to_loss]
    assert rows["full"]["updates"] == 4 and not rows["full"]["to_loss"]
    for name in to_loss:
        row = rows[name]
        assert row["to_loss"] and row["updates"] == 2 and row["lr"] == 1e-3
        assert row["train_layers"] == rows[name.removesuffix("_to_loss")]["train_layers"]
        assert "stop_loss" in read_json(out / "runs" / name / "summary.json")["train"]["stop_reason"]
        assert row["ttr_minus_full"]["n"] == 4
    page = (out / "report.md").read_text()
    assert "Trained to the same loss: each variant until its train loss is below 1000" in page
    bad = experiment("which-layers", tiny_model_dir, news_file, tmp_path / "bad", "--to_loss", "-1")
    assert bad == 2 and not (tmp_path / "bad").exists()


def test_an_experiment_over_two_seeds_reports_each_seed_and_their_mean_and_sd(
    tiny_model_dir, news_file, tmp_path
):
    out = tmp_path / "lr"
    argv = ["--lrs", "3e-3", "--epoch_grid", "1,2", "--seeds", "0,1"]
    assert experiment("lr-epochs", tiny_model_dir, news_file, out, *argv) == 0
    summary = read_json(out / "summary.json")
    assert summary["kind"] == "seeds" and summary["command"] == "experiment lr-epochs"
    assert summary["seeds"] == [0, 1]
    for seed in (0, 1):
        run = read_json(out / f"seed_{seed}" / "summary.json")
        assert run["experiment"] == "lr-epochs"
        assert read_json(out / f"seed_{seed}" / "runs" / "lr0.003" / "config.json")["seed"] == seed
    label = next(label for label in summary["mean_sd"] if label.endswith("epoch 2"))
    ttrs = [summary["per_seed"][s][label]["ttr"] for s in ("0", "1")]
    assert summary["mean_sd"][label]["ttr"]["mean"] == pytest.approx(sum(ttrs) / 2)
    assert "Mean ± sd over 2 seeds" in (out / "report.md").read_text()
