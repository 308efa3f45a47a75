"""Training throughput: hyperfit's trainer against Hugging Face ``Trainer``, the paper's official-style loop and a
plain loop, on the same model (SmolLM2-135M, offline), data (Lee news blocks) and number of steps; and the model
FLOPs utilisation (6 · parameters · tokens/s) against the matrix-product peak measured here.

Contenders run interleaved (the order rotates each repeat); each runs one warm-up step and ``--steps`` timed
steps on a fresh copy of the model. The precision is the trainer's ``auto``: bf16 autocast where the CPU
multiplies bf16 natively, else float32 (then HF ``Trainer`` and the plain loop also run in float32, and one
extra measurement shows what bf16 autocast costs on this CPU). The official-style loop is the paper's code:
float32, AdamW with weight decay 0.01, ``model(ids, labels=ids).loss``.

    python benchmarks/bench_train.py [--quick] [--repeats 3] [--steps 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

import _bench
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


def hyperfit_tokens_per_s(
    model,
    ids: torch.Tensor,
    *,
    batch: int,
    precision: str,
    ignore_first: int = 0,
    lr: float = LR,
    optimizer: str = "adam",
) -> float:
    """Steady-state tokens/s of ``hyperfit.common.train.train`` from its own per-step records (first step
    excluded: it includes allocation warm-up)."""
    cfg = TrainConfig(
        lr=lr, optimizer=optimizer, epochs=1, batch_size=batch, precision=precision, eval_every_epochs=1
    )
    if optimizer == "adamw":
        cfg.weight_decay = 0.01
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.open(f"{tmp}/run", overwrite=True, resume=False, writer=True)
        accelerator = build_accelerator(cfg, cpu=not torch.cuda.is_available())
        train(model, ids, cfg, accelerator=accelerator, run=run, ignore_first=ignore_first)
        records = [r for r in run.metrics() if r.get("kind") == "train"]
    tokens_per_step = batch * (ids.size(1) - max(1, ignore_first))  # label tokens, as the trainer counts
    elapsed = {r["step"]: r["step"] * tokens_per_step / r["tokens_per_s"] for r in records}
    first, last = min(elapsed), max(elapsed)
    return (last - first) * tokens_per_step / (elapsed[last] - elapsed[first])


def hf_trainer_tokens_per_s(model, ids: torch.Tensor, *, batch: int, precision: str) -> float:
    """HF ``Trainer`` with the same recipe (Adam-equivalent AdamW with weight decay 0, constant lr, no clipping),
    its default fused AdamW, timed per step by a callback (first step excluded)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

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
        Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()]).train()
    steps = len(stamps) - 2  # stamps: start, end of step 1, ..., end of step k
    return steps * batch * (ids.size(1) - 1) / (stamps[-1] - stamps[1])


def plain_loop_tokens_per_s(
    model, ids: torch.Tensor, *, batch: int, precision: str, optimizer: str, weight_decay: float
) -> float:
    """A plain loop: ``model(ids, labels=ids).loss``, backward, step; autocast when ``precision`` is bf16."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=LR, weight_decay=weight_decay)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    stamps = []
    for start in range(0, ids.size(0), batch):
        x = ids[start : start + batch].to(device)
        with autocast:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) * batch * (ids.size(1) - 1) / (stamps[-1] - stamps[0])


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


def run(*, quick: bool = False, repeats: int | None = None, steps: int | None = None) -> dict:
    repeats = repeats or (2 if quick else 3)
    steps = steps or (1 if quick else 2)
    batch, block_len = (4, 64) if quick else (8, 128)
    base, _ = _bench.smollm2()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision("auto", device)
    ids = blocks_for(steps + 1, batch, block_len)
    print(
        f"training: SmolLM2-135M, {steps} timed steps of {batch} x {block_len} tokens (+1 warm-up), "
        f"{repeats} repeats, precision {precision}",
        flush=True,
    )

    def fresh():
        return copy.deepcopy(base).train()

    contenders = {
        "hyperfit": lambda: hyperfit_tokens_per_s(fresh(), ids, batch=batch, precision=precision),
        "hf_trainer": lambda: hf_trainer_tokens_per_s(fresh(), ids, batch=batch, precision=precision),
        "official_loop": lambda: plain_loop_tokens_per_s(
            fresh(), ids, batch=batch, precision="fp32", optimizer="adamw", weight_decay=0.01
        ),
        "plain_loop": lambda: plain_loop_tokens_per_s(
            fresh(), ids, batch=batch, precision=precision, optimizer="adam", weight_decay=0.0
        ),
    }
    per_repeat = _bench.interleaved(contenders, repeats=repeats)
    peaks = {
        "fp32": _bench.matmul_peak(torch.float32),
        "bf16": _bench.matmul_peak(torch.bfloat16),
    }
    n = _bench.n_params(base)
    flops_per_token = 6 * n
    # MFU against the peak of the products the trainer actually ran (bf16 where native, else float32).
    peak = peaks[precision if precision in peaks else "fp32"]["flops"]
    mfu = [tps * flops_per_token / peak for tps in per_repeat["hyperfit"]]
    mfu_vs_bf16 = [tps * flops_per_token / peaks["bf16"]["flops"] for tps in per_repeat["hyperfit"]]
    result = {
        "workload": {"model": "SmolLM2-135M", "params": n, "batch": batch, "block_len": block_len, "steps": steps},
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
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer steps and repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    _bench.write_result("train", run(quick=args.quick, repeats=args.repeats, steps=args.steps))


if __name__ == "__main__":
    main()
