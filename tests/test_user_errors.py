"""What a hostile-but-fair user does to `hyperfit` on a tiny real model: each bad input ends in one sentence that
names it and the fix, with exit status 2 (130 for Ctrl-C), and no earlier result is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hyperfit.cli import main as hyperfit
from hyperfit.common.runs import Run, read_json
from tests.conftest import corpus_lines, make_tiny_gpt2, make_tiny_llama
from tests.test_fit_text import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer):
    """A tiny Llama directory, a news file and one finished fit-text run made from them (shared, copied to change)."""
    base = tmp_path_factory.mktemp("users")
    model = base / "tiny-llama"
    make_tiny_llama(len(tiny_tokenizer)).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    news = base / "news.txt"
    news.write_text("\n".join(corpus_lines()[:80]) + "\n", encoding="utf-8")
    finished = base / "finished"
    assert fit_argv(model, news, finished) == 0
    return {"model": model, "news": news, "finished": finished, "base": base}


def fit_argv(model, data, out, *extra) -> int:
    return hyperfit(
        ["fit-text", "--model", str(model), "--data", str(data), "--out", str(out), *TINY, *extra]
    )


def fit(ws, out, *extra) -> int:
    return fit_argv(ws["model"], ws["news"], out, *extra)


def last_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def copy_run(ws, tmp_path, *, finished: bool = True) -> Path:
    out = tmp_path / "run"
    shutil.copytree(ws["finished"], out, ignore=shutil.ignore_patterns(".lock"))
    if not finished:
        (out / "summary.json").unlink()  # as a run killed during its final decoding leaves it
    return out


def snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ------------------------------------------------------------------------------------------------------------
# 1. --overwrite never loses the old run to a bad new input
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/corpus.txt"], "data file /nonexistent/corpus.txt does not exist"),
        (["--model", "/nonexistent/model"], "model path /nonexistent/model does not exist"),
        (["--strategies", "greedy,gredy"], "unknown strategy 'gredy'"),
        (["--n_train", "500"], "has only 80 documents"),  # found only after the model has loaded
    ],
)
def test_overwrite_with_a_bad_input_keeps_the_finished_run(workspace, tmp_path, capsys, args, message):
    out = copy_run(workspace, tmp_path)
    before = snapshot(out)
    assert fit(workspace, out, "--overwrite", *args) == 2
    error = last_error(capsys)
    assert error.startswith("error: ") and message in error
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing left aside


# ------------------------------------------------------------------------------------------------------------
# 2. one process per run directory
# ------------------------------------------------------------------------------------------------------------


def test_a_second_fit_text_into_a_run_in_use_is_refused(workspace, tmp_path):
    out = tmp_path / "run"
    held = Run.open(out)  # this process uses the run
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [
        "fit-text",
        "--model",
        str(workspace["model"]),
        "--data",
        str(workspace["news"]),
        "--out",
        str(out),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "hyperfit.cli", *argv, *TINY, "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"is in use by process {os.getpid()}" in done.stderr.strip().splitlines()[-1]
    assert not (out / "metrics.jsonl").exists()
    del held


# ------------------------------------------------------------------------------------------------------------
# 3. --resume with other settings
# ------------------------------------------------------------------------------------------------------------


def test_resume_refuses_changed_settings_and_continues_with_allowed_ones(workspace, tmp_path, capsys):
    out = copy_run(workspace, tmp_path, finished=False)
    for args, message in [
        (["--lr", "1e-2"], "lr 0.003 → 0.01); pass --allow_changes lr"),
        (["--batch_size", "2"], "batch_size 4 → 2); these cannot change"),
        (["--n_train", "6"], "n_train 8 → 6); these cannot change"),
        (
            ["--epochs", "3", "--allow_changes", "n_train"],
            "--allow_changes names n_train, which a resumed run",
        ),
    ]:
        assert fit(workspace, out, "--resume", *args) == 2, args
        assert message in last_error(capsys), args
    # The same shape and path, other weights: the run would compare two different models.
    other = tmp_path / "other-weights"
    shutil.copytree(workspace["model"], other)
    shutil.copytree(workspace["model"], tmp_path / "same-model")
    make_tiny_llama(384, seed=1).save_pretrained(other)
    config = read_json(out / "config.json")
    config["model"] = str(other)  # as if the run had been made from this directory before its weights changed
    (out / "config.json").write_text(json.dumps({**config, "model_fingerprint": config["model_fingerprint"]}))
    assert fit_argv(other, workspace["news"], out, "--resume") == 2
    assert "model_fingerprint" in last_error(capsys)
    config["model"] = str(workspace["model"])
    (out / "config.json").write_text(json.dumps(config))
    assert fit(workspace, out, "--resume", "--epochs", "3", "--allow_changes", "epochs") == 0
    config = read_json(out / "config.json")
    assert config["epochs"] == 3 and config["changes_on_resume"][-1]["changed"] == {"epochs": [2, 3]}
    assert [r["step"] for r in Run(out).metrics() if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert read_json(out / "summary.json")["after"]["epoch"] == 3


def test_fit_image_resume_on_a_text_run_is_refused(workspace, tmp_path, capsys):
    out = copy_run(workspace, tmp_path, finished=False)
    assert hyperfit(["fit-image", "--out", str(out), "--resume", "--precision", "fp32"]) == 2
    assert "holds a run of `hyperfit fit-text`, not `hyperfit fit-image`" in last_error(capsys)


# ------------------------------------------------------------------------------------------------------------
# 5. values that train in the wrong direction
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--warmup_steps", "-5"], "warmup_steps must be ≥ 0"),
        (["--max_grad_norm", "-1"], "max_grad_norm must be positive"),
        (["--weight_decay", "-1"], "weight_decay must be ≥ 0"),
        (["--log_every_steps", "0"], "log_every_steps must be ≥ 1"),
        (["--eval_every_steps", "0"], "eval_every_steps must be ≥ 1"),
        (["--checkpoint_every_epochs", "0"], "checkpoint_every_epochs must be ≥ 1"),
        (["--strategies", "greedy,gredy"], "--strategies names the unknown strategy 'gredy'"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(workspace, tmp_path, capsys, args, message):
    assert fit(workspace, tmp_path / "r", *args) == 2
    error = last_error(capsys)
    assert error.startswith("error: ") and message in error
    assert not (tmp_path / "r").exists()


def test_a_diverging_run_is_stopped_not_reported_as_finished(workspace, tmp_path, capsys):
    out = tmp_path / "r"
    assert fit(workspace, out, "--lr", "1") == 2
    error = last_error(capsys)
    assert "training diverged" in error or "training loss became nan" in error, error
    assert "lower --lr" in error and not (out / "summary.json").exists()


def test_divergence_rule():
    from hyperfit.common.runs import HyperfitError
    from hyperfit.common.train import check_divergence

    run = Run(Path("/nonexistent"))
    # A pre-trained model (2.0 nats at the start) that now predicts uniformly over 97 ids: ln 97 = 4.57.
    with pytest.raises(
        HyperfitError, match="about a uniform guess over 97 ids .*no checkpoint was saved yet"
    ):
        check_divergence(4.57, first_loss=2.0, vocab=97, epoch=3, run=run)
    with pytest.raises(HyperfitError, match="far above a uniform guess"):
        check_divergence(40.0, first_loss=4.6, vocab=97, epoch=1, run=run)
    check_divergence(4.5, first_loss=4.6, vocab=97, epoch=1, run=run)  # from scratch: starts at ln V, fine
    check_divergence(2.5, first_loss=2.0, vocab=97, epoch=1, run=run)  # a little worse: not diverged


# ------------------------------------------------------------------------------------------------------------
# 6. data, lengths, model lists, tokenizers, YAML
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("list.jsonl", '{"text": ["a", "b"]}\n', "line 1: 'text' is a list, not a string"),
        ("number.jsonl", '{"text": "fine"}\n{"text": 42}\n', "line 2: 'text' is a int, not a string"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file (a NUL byte at offset 8)"),
        ("latin1.txt", "Caf\xe9 au lait\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9 on line 1)"),
    ],
)
def test_bad_data_files_are_one_sentence(workspace, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert fit_argv(workspace["model"], path, tmp_path / "r") == 2
    error = last_error(capsys)
    assert error.startswith("error: ") and message in error


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_blocks_longer_than_the_model_positions_are_refused_before_training(
    workspace, tiny_tokenizer, tmp_path, capsys, family
):
    model_dir = tmp_path / family
    if family == "gpt2":
        make_tiny_gpt2(len(tiny_tokenizer), n_positions=20).save_pretrained(model_dir)
    else:
        model = make_tiny_llama(len(tiny_tokenizer))
        model.config.max_position_embeddings = 20
        model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    assert fit_argv(model_dir, workspace["news"], tmp_path / "r") == 2  # TINY: --block_len 24
    error = last_error(capsys)
    assert "--block_len = 24 tokens" in error and "has only 20 positions" in error
    assert not (tmp_path / "r").exists()  # the directory this failed command made is gone again


def test_eval_refuses_duplicate_model_names(workspace, tmp_path, capsys):
    spec = f"a={workspace['finished']},a={workspace['model']}"
    assert hyperfit(["eval", "--models", spec, "--out", str(tmp_path / "e")]) == 2
    assert "--models names 'a' twice" in last_error(capsys)


def test_eval_refuses_training_ids_of_another_tokenizer(workspace, tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(list(reversed(corpus_lines())), trainer)
    other = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    model_dir = tmp_path / "other"
    make_tiny_llama(len(other)).save_pretrained(model_dir)
    other.save_pretrained(model_dir)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": line}) + "\n" for line in corpus_lines()[:4]))
    argv = ["eval", "--models", f"b={model_dir}", "--prompts", str(prompts), "--out", str(tmp_path / "e")]
    argv += ["--strategies", "greedy,greedy_blocked"]  # the blocker would forbid foreign ids
    assert hyperfit([*argv, "--train_from", str(workspace["finished"]), "--max_new_tokens", "8"]) == 2
    assert "was tokenised with another tokenizer than model 'b'" in last_error(capsys)


def test_eval_prompts_must_be_utf8_strings(workspace, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    argv = [
        "eval",
        "--models",
        f"a={workspace['model']}",
        "--prompts",
        str(prompts),
        "--strategies",
        "greedy",
    ]
    for content, message in [
        (b'{"text": 5}\n', "line 1: 'text' is a int, not a string"),
        ('{"text": "Caf\xe9"}\n'.encode("latin-1"), "is not UTF-8 text (byte 0xe9 on line 1)"),
    ]:
        prompts.write_bytes(content)
        assert hyperfit([*argv, "--out", str(tmp_path / "e"), "--overwrite"]) == 2
        assert message in last_error(capsys)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("preset: cpu-dem\n", "names the unknown preset 'cpu-dem'; use one of cpu-demo, paper"),
        ("epochs: 2.5\n", "sets epochs: 2.5, but epochs must be int"),
        ("lr: [1, 2\n", "is not valid YAML at line 2"),
        ("lr: fast\n", "sets lr: 'fast', but lr must be float"),
    ],
)
def test_bad_yaml_is_one_sentence(workspace, tmp_path, capsys, yaml_text, message):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml_text)
    argv = ["fit-text", "--model", str(workspace["model"]), "--data", str(workspace["news"])]
    assert hyperfit([*argv, "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    error = last_error(capsys)
    assert error.startswith("error: ") and message in error


# ------------------------------------------------------------------------------------------------------------
# 7. tracebacks that became sentences
# ------------------------------------------------------------------------------------------------------------


def test_a_full_disk_is_one_sentence_and_the_run_resumes(workspace, tmp_path, capsys, monkeypatch):
    import hyperfit.common.runs as runs

    real = runs._write

    def full_at_step_3(f, text):
        if '"kind": "train"' in text and '"step": 3,' in text:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, text)

    monkeypatch.setattr(runs, "_write", full_at_step_3)
    out = tmp_path / "r"
    assert fit(workspace, out) == 2
    error = last_error(capsys)
    assert "no space left on the device of" in error and "metrics.jsonl" in error and "--resume" in error
    assert (
        read_json(out / "checkpoints/last/trainer_state.json")["step"] == 2
    )  # the epoch-1 checkpoint is kept
    monkeypatch.setattr(runs, "_write", real)
    assert fit(workspace, out, "--resume") == 0
    assert [r["step"] for r in Run(out).metrics() if r["kind"] == "train"] == [1, 2, 3, 4]


def test_ctrl_c_says_where_it_stopped_and_the_run_resumes(workspace, tmp_path, capsys, monkeypatch):
    import hyperfit.common.train as train_module

    real, calls = train_module.token_nll_sum, {"n": 0}

    def ctrl_c_in_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "token_nll_sum", ctrl_c_in_step_3)
    out = tmp_path / "r"
    started = time.perf_counter()
    assert fit(workspace, out) == 130
    first = time.perf_counter() - started
    message = last_error(capsys)
    assert message.startswith("interrupted at step 2;") and "--resume" in message
    assert "from the checkpoint at step 2 (epoch 1)" in message
    monkeypatch.setattr(train_module, "token_nll_sum", real)
    started = time.perf_counter()
    assert fit(workspace, out, "--resume") == 0
    second = time.perf_counter() - started
    # The resumed run's wall time counts the interrupted process too.
    assert read_json(out / "summary.json")["wall_seconds"] >= 0.85 * (first + second)


def test_a_missing_local_model_path_is_not_blamed_on_the_network(workspace, tmp_path, capsys):
    assert fit_argv(tmp_path / "no-such-model", workspace["news"], tmp_path / "r") == 2
    error = last_error(capsys)
    assert (
        f"model path {tmp_path / 'no-such-model'} does not exist" in error and "may be offline" not in error
    )


def test_eval_into_a_finished_directory_does_not_suggest_resume(workspace, tmp_path, capsys):
    out = tmp_path / "e"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    spec = f"a={workspace['finished']}"
    assert hyperfit(["eval", "--models", spec, "--out", str(out), "--strategies", "greedy"]) == 2
    error = last_error(capsys)
    assert "already holds a finished run; pass --overwrite to replace it" in error and "--resume" not in error


# ------------------------------------------------------------------------------------------------------------
# 8. progress while decoding
# ------------------------------------------------------------------------------------------------------------


def test_decoding_shows_progress_on_a_terminal(monkeypatch):
    import io

    from hyperfit.common.compare import decoding_table

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model = make_tiny_llama(97).eval()
    prompts = torch.randint(3, 97, (2, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoding_table({"a": model}, prompts, ["greedy", "top_p"], max_new_tokens=3, train_ids=None)
    assert "decoding" in terminal.getvalue() and "2/2" in terminal.getvalue()
