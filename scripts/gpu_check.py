"""What only a GPU can show, in one table (scripts/gpu_check.sh runs this; GPU_CHECK_DEVICE=cpu runs it on CPU).

Offline and self-contained: tiny models are built in-process, the text is the repository's own README, the image
prior is pretrained from scikit-image's bundled photographs, so a machine with torch, transformers and accelerate
and no network runs it. Each check prints one row: name, ok / FAIL, seconds, what was seen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROWS: list[tuple[str, str, float, str]] = []
WORK = Path(tempfile.mkdtemp(prefix="hyperfit-gpu-check-"))


CHECKS: list[tuple[str, object]] = []


def check(name: str):
    def register(fn):
        CHECKS.append((name, fn))
        return fn

    return register


def run_checks() -> None:
    only = [w.strip() for w in os.environ.get("GPU_CHECK_ONLY", "").split(",") if w.strip()]
    for name, fn in CHECKS:
        if only and not any(w in name for w in only):
            continue
        start = time.perf_counter()
        try:
            detail, ok = fn(), "ok"
        except Exception as err:  # a failed check is a row, not the end of the script
            traceback.print_exc()
            detail, ok = f"{type(err).__name__}: {str(err).splitlines()[0][:150] if str(err) else ''}", "FAIL"
        ROWS.append((name, ok, time.perf_counter() - start, str(detail)))
        print(f"[{ok}] {name}: {detail}", flush=True)


def documents() -> list[str]:
    """Paragraphs of the repository's README and docstrings (real English, in the repository, no download)."""
    texts = [(ROOT / "README.md").read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "hyperfit").rglob("*.py"))]
    blocks = [b for text in texts for b in text.split("\n\n")]
    keep = [
        " ".join(b.replace('"""', " ").split()) for b in blocks if not b.lstrip().startswith(("|", "`", "#"))
    ]
    return [b for b in keep if len(b.split()) >= 25 and "=" not in b and "(" not in b[:40]]


def tiny_tokenizer():
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
    tok.train_from_iterator(documents(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )


def tiny_llama(vocab: int, *, layers: int = 2, width: int = 64, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
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
    )


def tiny_gpt2(vocab: int, *, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=2, n_positions=256)
    return GPT2LMHeadModel(config)


def hyperfit_command(*args: str, launch: list[str] | None = None, timeout: int = 300) -> str:
    """Run ``hyperfit ARGS`` (or ``accelerate launch LAUNCH scripts/...``) in a fresh process; return its tail."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    if DEVICE.type == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"  # else accelerate launch leaves CPU processes without a process group
    if launch is None:
        cmd = [sys.executable, "-m", "hyperfit.cli", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-6000:], sep="\n", file=sys.stderr)
        lines = (done.stderr + done.stdout).splitlines()
        reason = [line for line in lines if line.startswith("error:") or "Error" in line] or lines[-1:]
        raise RuntimeError(f"exit {done.returncode}: {reason[-1].strip()}")
    return done.stdout


# --------------------------------------------------------------------------------------------------------------


@check("greedy decode == generate")
def greedy_equals_generate() -> str:
    from hyperfit.common.decode import greedy_decode

    seen = []
    for model in (tiny_llama(101), tiny_gpt2(101)):
        model.to(DEVICE).eval()
        ids = torch.randint(3, 101, (4, 8), generator=torch.Generator().manual_seed(5)).to(DEVICE)
        ours = greedy_decode(model, ids, max_new_tokens=48)
        theirs = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=48,
            min_new_tokens=48,
            eos_token_id=None,
            pad_token_id=0,
        )[:, ids.size(1) :]
        assert torch.equal(ours.new_ids, theirs), f"{type(model).__name__} differs from generate on {DEVICE}"
        seen.append(f"{type(model).__name__} 4x48 equal")
    return ", ".join(seen) + f" on {DEVICE}"


@check("every decoding strategy")
def every_strategy() -> str:
    from hyperfit.common.compare import STRATEGIES, decoding_table

    model = tiny_llama(101).to(DEVICE).eval()
    blocks = torch.randint(3, 101, (6, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        table, generations = decoding_table(
            {"tiny": model},
            blocks[:, :8],
            list(STRATEGIES),
            max_new_tokens=16,
            train_ids=blocks,
            eval_blocks=blocks,
            target_entropy=3.0,
            eos_id=2,
            min_new_tokens=4,
        )
    assert all(len(s) >= 4 for seqs in generations.values() for s in seqs)
    return f"{len(table['tiny'])} strategies in bf16 on {DEVICE}: " + ", ".join(table["tiny"])


@check("prior with n_positions == t")
def prior_at_full_length() -> str:
    from hyperfit.image.model import PriorConfig, build_prior, complete

    model = build_prior(8, 63, PriorConfig(layers=2, width=32, heads=2), seed=0).to(DEVICE).eval()
    assert model.config.n_positions == 64
    codes = torch.randint(0, 8, (3, 64), generator=torch.Generator().manual_seed(0))
    sampled = complete(
        model, codes, n_context=16, temperature=1.0, generator=torch.Generator(DEVICE).manual_seed(0)
    )
    greedy = complete(model, codes, n_context=16)
    assert greedy.codes.shape == sampled.codes.shape == (3, 64)
    return f"64 codes completed from 16 with a 64-position prior (greedy and sampled) on {DEVICE}"


def write_tiny_text_model() -> tuple[Path, Path]:
    model_dir, data = WORK / "tiny-llama", WORK / "readme.txt"
    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data.write_text("\n".join(documents()) + "\n", encoding="utf-8")
    return model_dir, data


TEXT_RUN = [
    *("--n_train", "8", "--block_len", "24", "--n_eval", "4", "--epochs", "3", "--batch_size", "4"),
    *("--lr", "3e-3", "--precision", "bf16", "--eval_every_epochs", "1", "--max_new_tokens", "16"),
    *("--prompt_tokens", "8", "--ttr_window", "16"),
]


@check("fit-text end to end, bf16")
def fit_text_end_to_end() -> str:
    model_dir, data = write_tiny_text_model()
    out = WORK / "fit-text"
    hyperfit_command("fit-text", "--model", str(model_dir), "--data", str(data), "--out", str(out), *TEXT_RUN)
    summary = json.loads((out / "summary.json").read_text())
    strategies = sorted(summary["decoding"]["hyperfitted"])
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "model")
    return (
        f"loss {summary['epoch_losses'][0]:.2f} -> {summary['epoch_losses'][-1]:.2f}, strategies {','.join(strategies)}, "
        f"model/ reloads"
    )


@check("fit-image end to end, bf16, FID")
def fit_image_end_to_end() -> str:
    prior = WORK / "prior"
    hyperfit_command(
        "pretrain-image",
        *("--photos", "astronaut,coffee,brick", "--resize", "64", "--patch", "8", "--per_image", "120"),
        *("--vocab", "8", "--layers", "2", "--width", "32", "--heads", "2", "--epochs", "1"),
        *("--n_pretrain_eval", "8", "--precision", "bf16", "--out", str(prior)),
    )
    out = WORK / "fit-image"
    hyperfit_command(
        "fit-image",
        *("--prior", str(prior), "--out", str(out), "--n_train", "8", "--n_eval", "6", "--batch_size", "4"),
        *("--epochs", "2", "--eval_every_epochs", "1", "--lr", "1e-3", "--precision", "bf16"),
        *("--grid_rows", "4", "--fid_model", "test_resnet", "--fid_pretrained", "false"),
    )
    summary = json.loads((out / "summary.json").read_text())
    column = summary["columns"]["hyperfitted greedy"]
    return (
        f"stripes {column['stripe_score']:.2f}, FID {column['fid']:.1f} (random features), grid.png written"
    )


@check("FSDP run (accelerate fsdp.yaml, 1 process)")
def fsdp_one_process() -> str:
    model_dir, data = WORK / "tiny-llama", WORK / "readme.txt"
    if not model_dir.exists():
        model_dir, data = write_tiny_text_model()
    out = WORK / "fsdp"
    launch = ["--config_file", "configs/accelerate/fsdp.yaml", "--num_processes", "1"]
    if DEVICE.type == "cpu":
        launch += ["--main_process_port", "29571"]
    hyperfit_command(
        "scripts/fit_text.py",
        *("--model", str(model_dir), "--data", str(data), "--out", str(out), *TEXT_RUN),
        launch=launch,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["sharding"] == "fsdp", f"ran as {config['sharding']!r}, not FSDP"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "model")
    shards = len(list((out / "checkpoints/last").rglob("*.distcp")))
    return f"sharding {config['sharding']}, {shards} checkpoint shard files, gathered model/ reloads"


def step_peak_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Peak bytes of the second bf16-autocast Adam step (the moments exist, as in every later step): the CUDA
    allocator's peak on a GPU, the live tensor storages on CPU."""
    from hyperfit.common.batch import token_nll_sum
    from hyperfit.common.plan import measure_peak_bytes

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

    def step() -> None:
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        token_nll_sum(logits, ids).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    tracker = measure_peak_bytes()
    tracker.track(
        [*model.parameters(), *model.buffers(), *(t for s in optimizer.state.values() for t in s.values())]
    )
    with tracker:
        step()
    return tracker.peak


@check("peak memory vs hyperfit plan")
def peak_memory() -> str:
    from hyperfit.common.plan import estimate, fmt_gib, shape_from_config

    # (width, layers, vocab, batch, tokens): GPU sizes where weights and activations both count; small on CPU.
    sizes = (
        [(512, 4, 32000, 8, 256), (1024, 8, 32000, 4, 512)]
        if DEVICE.type == "cuda"
        else [(256, 2, 4000, 4, 128)]
    )
    lines = []
    for width, layers, vocab, batch, seq in sizes:
        model = tiny_llama(vocab, layers=layers, width=width).to(DEVICE)
        ids = torch.randint(3, vocab, (batch, seq), device=DEVICE)
        measured = step_peak_bytes(model, ids)
        planned = estimate(
            shape_from_config(model.config, description="llama"),
            strategy="ddp",
            gpus=1,
            seq_len=seq,
            micro_batch_size=batch,
            precision="bf16",
            gradient_checkpointing=False,
        ).peak
        lines.append(
            f"llama {layers}x{width} vocab {vocab} batch {batch}x{seq}: measured {fmt_gib(measured)}, plan "
            f"{fmt_gib(planned)} ({planned / measured:.2f}x)"
        )
    return "; ".join(lines)


def table() -> str:
    width = max(len(r[0]) for r in ROWS)
    device = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
    head = [
        f"hyperfit GPU check on {device}: torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}",
        f"| {'check'.ljust(width)} | result | seconds | seen |",
        f"|{'-' * (width + 2)}|--------|---------|------|",
    ]
    return "\n".join(head + [f"| {n.ljust(width)} | {ok:6} | {s:7.1f} | {d} |" for n, ok, s, d in ROWS])


if __name__ == "__main__":
    run_checks()
    text = table()
    print("\n" + text)
    target = os.environ.get("GPU_CHECK_OUT") or (
        str(Path(os.environ["OUT"]) / "gpu_check.txt") if os.environ.get("OUT") else None
    )
    if target:
        Path(target).write_text(text + "\n", encoding="utf-8")
        print(f"written to {target}")
    sys.exit(0 if all(r[1] == "ok" for r in ROWS) else 1)
