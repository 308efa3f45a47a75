"""Tiny real models and a real tokenizer, built in-process: tests never download anything."""

from __future__ import annotations

import pytest
import torch

SAMPLE_TEXT = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence.",
    "Rain fell on the city all night, and by morning the river had risen above the stone bridge.",
    "Scientists announced on Tuesday that the new telescope had captured images of a distant galaxy.",
    "The government said the budget would include more money for schools, hospitals and public roads.",
    "A small boat drifted across the quiet lake as the sun set behind the mountains in the west.",
    "The team won the final match after a late goal from their young striker in extra time.",
]


def corpus_lines() -> list[str]:
    """Real English text: gensim's Lee news corpus when installed, else a few hand-written sentences."""
    try:
        from gensim.test.utils import datapath

        with open(datapath("lee_background.cor"), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except ImportError:
        return SAMPLE_TEXT * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab 384) trained in-process on real news text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_lines(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )


def make_tiny_llama(vocab_size: int, *, seed: int = 0, layers: int = 2, width: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def make_tiny_gpt2(vocab_size: int, *, seed: int = 0, dropout: float = 0.1, n_positions: int = 256):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=n_positions,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    return GPT2LMHeadModel(config)


@pytest.fixture()
def tiny_model_dir(tmp_path, tiny_tokenizer):
    """A tiny Llama and its tokenizer saved like any Hugging Face checkpoint."""
    path = tmp_path / "tiny-llama"
    make_tiny_llama(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def news_file(tmp_path):
    """A .txt corpus of real news, one document per line."""
    path = tmp_path / "news.txt"
    path.write_text("\n".join(corpus_lines()[:80]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_tokenizer):
    """One finished tiny fit-text run (saved model, real news text) shared by the retention and analyze tests."""
    from hyperfit.cli import main as hyperfit
    from tests.test_fit_text import TINY

    root = tmp_path_factory.mktemp("retention")
    model_dir = root / "tiny-llama"
    make_tiny_llama(len(tiny_tokenizer)).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    news = root / "news.txt"
    news.write_text("\n".join(corpus_lines()[:80]) + "\n", encoding="utf-8")
    out = root / "run"
    argv = ["fit-text", "--model", str(model_dir), "--data", str(news), "--out", str(out), *TINY]
    assert hyperfit([*argv, "--strategies", "greedy"]) == 0
    return model_dir, out


def launch_two_processes(args: list[str], *, cwd, clean=None, attempts: int = 3, config_file=None):
    """Run ``accelerate launch`` with two gloo CPU processes on a free port.

    `--cpu --num_processes 2` silently starts ONE process on a machine without CUDA; `--multi_gpu` with
    ACCELERATE_USE_CPU=1 starts two (callers assert the world size). ``config_file`` (e.g. the shipped
    configs/accelerate/fsdp.yaml) replaces `--multi_gpu`. A port taken between choosing it and binding
    it is retried with another port (``clean`` is removed first); any other failure is returned as it is.
    """
    import os
    import shutil
    import socket
    import subprocess
    import sys
    from pathlib import Path

    launcher = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            launcher,
            "launch",
            *(["--config_file", str(config_file)] if config_file else ["--multi_gpu"]),
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(port),
            *args,
        ]
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        output = (done.stdout + done.stderr).lower()
        if done.returncode == 0 or not ("address already in use" in output or "eaddrinuse" in output):
            return done
        if clean is not None:
            shutil.rmtree(clean, ignore_errors=True)
    return done


def launch_failure(done) -> str:
    """Assertion message for a failed launch: both streams, since the launcher's own failure and the workers'
    tracebacks go to different ones."""
    return f"rc {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"


# Study tests share one real fit-text run and one eval of it (each takes tens of seconds on 2 cores).
STUDY_FIT = [
    "--n_train",
    "8",
    "--block_len",
    "40",
    "--n_eval",
    "6",
    "--epochs",
    "1",
    "--batch_size",
    "4",
    "--lr",
    "3e-3",
    "--precision",
    "fp32",
    "--eval_every_epochs",
    "1",
    "--max_new_tokens",
    "24",
    "--prompt_tokens",
    "8",
    "--ttr_window",
    "12",
    "--strategies",
    "greedy,top_p",
]


@pytest.fixture(scope="session")
def study_fit_run(tmp_path_factory, tiny_tokenizer):
    """A finished tiny fit-text run: 6 held-out prompts, 8-token contexts, 32-token human continuations,
    24-token continuations from original/hyperfitted × greedy/top_p."""
    from hyperfit.cli import main as hyperfit

    root = tmp_path_factory.mktemp("study-run")
    model_dir = root / "tiny-llama"
    make_tiny_llama(len(tiny_tokenizer)).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    news = root / "news.txt"
    news.write_text("\n".join(corpus_lines()[:80]) + "\n", encoding="utf-8")
    out = root / "run"
    args = ["fit-text", "--model", str(model_dir), "--data", str(news), "--out", str(out), *STUDY_FIT]
    assert hyperfit(args) == 0
    return out


@pytest.fixture(scope="session")
def study_eval_run(tmp_path_factory, study_fit_run):
    """`hyperfit eval` of the fit run against its original model, on a prompts file (references re-encoded)."""
    import json

    from hyperfit.cli import main as hyperfit

    root = tmp_path_factory.mktemp("study-eval")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": line}) + "\n" for line in SAMPLE_TEXT), encoding="utf-8")
    out = root / "eval"
    args = [
        "eval",
        "--models",
        f"original={study_fit_run.parent / 'tiny-llama'},hyperfitted={study_fit_run}",
        "--prompts",
        str(prompts),
        "--strategies",
        "greedy",
        "--max_new_tokens",
        "16",
        "--prompt_tokens",
        "6",
        "--precision",
        "fp32",
        "--out",
        str(out),
    ]
    assert hyperfit(args) == 0
    return out
