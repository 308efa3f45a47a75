"""Training throughput: hyperfit's trainer against Hugging Face ``Trainer``, the paper's official-style loop and a
plain loop, on the same model (SmolLM2-135M, offline), data (Lee news blocks) and number of steps; and the model
FLOPs utilisation (6 · parameters · tokens/s) against the matrix-product peak measured here.

Contenders run in lock step: each on a fresh copy of the model, one step per turn, the order rotating every
round, so every round's ratios compare steps taken at nearly the same moment (the machine may be shared); the
first step of each is a warm-up and not counted. The precision is the trainer's ``auto``: bf16 autocast where the CPU
multiplies bf16 natively, else float32 (then HF ``Trainer`` and the plain loop also run in float32, and one
extra measurement shows what bf16 autocast costs on this CPU). The official-style loop is the paper's code:
float32, AdamW with weight decay 0.01, ``model(ids, labels=ids).loss``.

    python benchmarks/bench_train.py [--quick] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import _bench
import torch

from hyperfit.common.config import TrainConfig
from hyperfit.common.hardware import resolve_precision
from hyperfit.common.runs import Run
from hyperfit.common.train import build_accelerator, train

LR = 4e-5


def blocks_for(steps: int, batch: int, block_len: int) -> torch.Tensor:
    """``steps`` batches of real Lee blocks (the 32 demo blocks, repeated if more are needed)."""
    base = _bench.lee_splits(32, 128, 16).train_ids[:, :block_len]
    need = steps * batch
    return base.repeat((need + base.size(0) - 1) // base.size(0), 1)[:need].contiguous()


def hyperfit_loop(
    model,
    ids: torch.Tensor,
    hook,
    *,
    batch: int,
    precision: str,
    ignore_first: int = 0,
    lr: float = LR,
    optimizer: str = "adam",
) -> None:
    """``hyperfit.common.train.train`` for one epoch over ``ids``; ``hook()`` runs before the first and after every
    step (through the trainer's per-step evaluation callback, which does nothing else here)."""
    cfg = TrainConfig(
        lr=lr,
        optimizer=optimizer,
        weight_decay=0.01 if optimizer == "adamw" else 0.0,
        epochs=1,
        batch_size=batch,
        precision=precision,
        eval_every_steps=1,
        eval_every_epochs=1,
    )
    seen: set[int] = set()

    def evaluate(model, *, epoch: int, step: int) -> dict:
        if step not in seen:  # the end-of-epoch evaluation repeats the last step's
            seen.add(step)
            hook()
        return {}

    with tempfile.TemporaryDirectory() as tmp:
        run = Run.open(f"{tmp}/run", overwrite=True, resume=False, writer=True)
        accelerator = build_accelerator(cfg, cpu=not torch.cuda.is_available())
        train(model, ids, cfg, accelerator=accelerator, run=run, evaluate=evaluate, ignore_first=ignore_first)


def hf_trainer_loop(model, ids: torch.Tensor, hook, *, batch: int, precision: str) -> None:
    """HF ``Trainer`` with the same recipe (AdamW with weight decay 0 = Adam, constant lr, no clipping) and its
    default fused AdamW; ``hook()`` runs at the start of training and after every step (a callback)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Turns(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            hook()

        def on_step_end(self, args, state, control, **kwargs):
            hook()

    data = [{"input_ids": row, "labels": row} for row in ids]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            max_steps=len(data) // batch,
            learning_rate=LR,
            weight_decay=0.0,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            bf16=precision == "bf16",
            use_cpu=not torch.cuda.is_available(),
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
        )
        Trainer(model=model, args=args, train_dataset=data, callbacks=[Turns()]).train()


def plain_loop(
    model, ids: torch.Tensor, hook, *, batch: int, precision: str, optimizer: str, weight_decay: float
):
    """A plain loop: ``model(ids, labels=ids).loss``, backward, step; autocast when ``precision`` is bf16."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=LR, weight_decay=weight_decay)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    hook()
    for start in range(0, ids.size(0), batch):
        x = ids[start : start + batch].to(device)
        with autocast:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        hook()


def bf16_penalty(base, *, tokens: int = 64) -> dict:
    """Seconds of one forward + backward of 1 × ``tokens`` in bf16 autocast and in float32 (CPUs without native
    bf16 products only: it shows why ``auto`` chose float32)."""
    ids = blocks_for(1, 1, tokens)
    out = {}
    for name, enabled in (("fp32", False), ("bf16_autocast", True)):
        model = copy.deepcopy(base).train()
        for _ in range(2):  # the second is timed
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            out[name] = time.perf_counter() - start
    out["ratio_bf16_over_fp32"] = out["bf16_autocast"] / out["fp32"]
    return out


def run(*, quick: bool = False, rounds: int | None = None) -> dict:
    rounds = rounds or (3 if quick else 5)
    batch, block_len = (4, 64) if quick else (8, 128)
    base, _ = _bench.smollm2()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision("auto", device)
    ids = blocks_for(rounds + 1, batch, block_len)
    print(
        f"training: SmolLM2-135M, {rounds} rounds of one {batch} x {block_len}-token step each (+1 warm-up), "
        f"precision {precision}",
        flush=True,
    )

    def fresh():
        return copy.deepcopy(base).train()

    contenders = {
        "hyperfit": lambda hook: hyperfit_loop(fresh(), ids, hook, batch=batch, precision=precision),
        "hf_trainer": lambda hook: hf_trainer_loop(fresh(), ids, hook, batch=batch, precision=precision),
        "official_loop": lambda hook: plain_loop(
            fresh(), ids, hook, batch=batch, precision="fp32", optimizer="adamw", weight_decay=0.01
        ),
        "plain_loop": lambda hook: plain_loop(
            fresh(), ids, hook, batch=batch, precision=precision, optimizer="adam", weight_decay=0.0
        ),
    }
    step_seconds = _bench.lockstep(contenders, rounds=rounds)
    tokens_per_step = batch * (block_len - 1)
    per_repeat = {name: [tokens_per_step / s for s in v] for name, v in step_seconds.items()}
    peaks = {
        "fp32": _bench.matmul_peak(torch.float32, device=device),
        "bf16": _bench.matmul_peak(torch.bfloat16, device=device),
    }
    n = _bench.n_params(base)
    flops_per_token = 6 * n
    # MFU against the peak of the products the trainer actually ran (bf16 where native, else float32).
    peak = peaks[precision if precision in peaks else "fp32"]["flops"]
    mfu = [tps * flops_per_token / peak for tps in per_repeat["hyperfit"]]
    mfu_vs_bf16 = [tps * flops_per_token / peaks["bf16"]["flops"] for tps in per_repeat["hyperfit"]]
    result = {
        "workload": {
            "model": "SmolLM2-135M",
            "params": n,
            "batch": batch,
            "block_len": block_len,
            "rounds": rounds,
        },
        "precision": precision,
        "tokens_per_s": {name: _bench.spread(v) for name, v in per_repeat.items()},
        "ratios": {
            "train_vs_hf_trainer": _bench.spread(_bench.ratios(per_repeat, "hyperfit", "hf_trainer")),
            "train_vs_official_loop": _bench.spread(_bench.ratios(per_repeat, "hyperfit", "official_loop")),
            "train_vs_plain_loop": _bench.spread(_bench.ratios(per_repeat, "hyperfit", "plain_loop")),
        },
        "matmul_peak": peaks,
        "train_mfu": _bench.spread(mfu),
        "train_mfu_basis": f"6 x {n} params x tokens/s over the measured {precision} matmul peak",
        "train_mfu_vs_bf16_peak": _bench.spread(mfu_vs_bf16),
    }
    if device == "cpu" and precision != "bf16":
        print("  bf16 autocast on this CPU (no native bf16 products): one step of 1 x 64 tokens", flush=True)
        result["bf16_autocast_penalty"] = bf16_penalty(base)
    for key, value in result["ratios"].items():
        print(f"  {key}: {_bench.fmt_ratio(value['values'])}")
    print(
        f"  MFU {result['train_mfu']['median']:.1%} of the {precision} peak "
        f"({peaks[precision if precision in peaks else 'fp32']['flops'] / 1e9:.0f} GFLOP/s); "
        f"bf16 peak {peaks['bf16']['flops'] / 1e9:.1f} GFLOP/s, fp32 peak {peaks['fp32']['flops'] / 1e9:.1f} GFLOP/s"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    _bench.write_result("train", run(quick=args.quick, rounds=args.rounds))


if __name__ == "__main__":
    main()
