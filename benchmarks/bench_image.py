"""Image prior pretraining throughput: hyperfit's trainer against a plain loop (the same AdamW, weight decay 0.01,
lr 1e-3) on the offline prior of ``hyperfit pretrain-image`` (ImageGPT, 4 layers, width 128, 64 palette codes +
SOS, 16 x 16 patches = 1 + 256 positions), batch 32. The codes are random: the cost does not depend on them.

    python benchmarks/bench_image.py [--quick] [--repeats 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import _bench
from bench_train import hyperfit_tokens_per_s
from hyperfit.common.batch import make_batch, token_nll_sum
from hyperfit.common.hardware import resolve_precision
from hyperfit.image.model import PriorConfig, build_prior, encode_for_model, sos_id

VOCAB, TOKENS, BATCH = 64, 256, 32


def plain_loop_tokens_per_s(model, ids: torch.Tensor, *, batch: int, precision: str) -> float:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    stamps = []
    for start in range(0, ids.size(0), batch):
        b = make_batch(ids[start : start + batch].to(device), ignore_first=1)
        with autocast:
            logits = model(input_ids=b["input_ids"]).logits
        loss = token_nll_sum(logits, b["labels"]) / (b["labels"][:, 1:] >= 0).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) * batch * (ids.size(1) - 1) / (stamps[-1] - stamps[0])


def run(*, quick: bool = False, repeats: int | None = None, steps: int | None = None) -> dict:
    repeats = repeats or (2 if quick else 3)
    steps = steps or (4 if quick else 8)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision("auto", device)
    base = build_prior(VOCAB, TOKENS, PriorConfig(), seed=0)
    codes = torch.randint(0, VOCAB, ((steps + 1) * BATCH, TOKENS), generator=torch.Generator().manual_seed(0))
    ids = encode_for_model(codes, sos=sos_id(base))
    print(
        f"image prior: {_bench.n_params(base) / 1e6:.2f}M params, {steps} timed steps of {BATCH} x {ids.size(1)} "
        f"(+1 warm-up), precision {precision}, {repeats} repeats",
        flush=True,
    )
    contenders = {
        "hyperfit": lambda: hyperfit_tokens_per_s(
            copy.deepcopy(base), ids, batch=BATCH, precision=precision, ignore_first=1, lr=1e-3, optimizer="adamw"
        ),
        "plain_loop": lambda: plain_loop_tokens_per_s(copy.deepcopy(base), ids, batch=BATCH, precision=precision),
    }
    per_repeat = _bench.interleaved(contenders, repeats=repeats)
    ratio = _bench.ratios(per_repeat, "hyperfit", "plain_loop")
    print(f"  image prior pretraining vs plain loop: {_bench.fmt_ratio(ratio)}")
    return {
        "precision": precision,
        "workload": {"params": _bench.n_params(base), "batch": BATCH, "positions": ids.size(1), "steps": steps},
        "tokens_per_s": {name: _bench.spread(v) for name, v in per_repeat.items()},
        "image_prior_vs_plain_loop": _bench.spread(ratio),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    _bench.write_result("image", run(quick=args.quick, repeats=args.repeats, steps=args.steps))


if __name__ == "__main__":
    main()
