"""Image prior pretraining throughput: hyperfit's trainer against a plain loop (the same AdamW, weight decay 0.01,
lr 1e-3) on the palette prior of ``hyperfit pretrain-image --tokenizer palette`` (ImageGPT, 4 layers, width 128,
64 palette codes + SOS, 16 x 16 patches = 1 + 256 positions; the default VQ-VAE prior has 1 + 64), batch 32. The
codes are random: the cost does not depend on them.

    python benchmarks/bench_image.py [--quick] [--rounds 8]
"""

from __future__ import annotations

import argparse
import copy

import _bench
import torch
from bench_train import hyperfit_loop

from hyperfit.common.batch import IGNORE_INDEX, make_batch, token_nll_sum
from hyperfit.common.hardware import resolve_precision
from hyperfit.image.model import PriorConfig, build_prior, encode_for_model, sos_id

VOCAB, TOKENS, BATCH = 64, 256, 32


def plain_loop(model, ids: torch.Tensor, hook, *, batch: int, precision: str) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    hook()
    for start in range(0, ids.size(0), batch):
        b = make_batch(ids[start : start + batch].to(device), ignore_first=1)
        with autocast:
            logits = model(input_ids=b["input_ids"]).logits
        loss = token_nll_sum(logits, b["labels"]) / (b["labels"][:, 1:] != IGNORE_INDEX).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        hook()


def run(*, quick: bool = False, rounds: int | None = None) -> dict:
    rounds = rounds or (4 if quick else 8)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision("auto", device)
    base = build_prior(VOCAB, TOKENS, PriorConfig(), seed=0)
    codes = torch.randint(
        0, VOCAB, ((rounds + 1) * BATCH, TOKENS), generator=torch.Generator().manual_seed(0)
    )
    ids = encode_for_model(codes, sos=sos_id(base))
    print(
        f"image prior: {_bench.n_params(base) / 1e6:.2f}M params, {rounds} rounds of one {BATCH} x {ids.size(1)} "
        f"step each (+1 warm-up), precision {precision}",
        flush=True,
    )
    contenders = {
        "hyperfit": lambda hook: hyperfit_loop(
            copy.deepcopy(base),
            ids,
            hook,
            batch=BATCH,
            precision=precision,
            ignore_first=1,
            lr=1e-3,
            optimizer="adamw",
        ),
        "plain_loop": lambda hook: plain_loop(
            copy.deepcopy(base), ids, hook, batch=BATCH, precision=precision
        ),
    }
    seconds = _bench.lockstep(contenders, rounds=rounds)
    tokens_per_step = BATCH * TOKENS
    per_round = {name: [tokens_per_step / s for s in v] for name, v in seconds.items()}
    ratio = _bench.ratios(per_round, "hyperfit", "plain_loop")
    print(f"  image prior pretraining vs plain loop: {_bench.fmt_ratio(ratio)}")
    return {
        "precision": precision,
        "workload": {
            "params": _bench.n_params(base),
            "batch": BATCH,
            "positions": ids.size(1),
            "rounds": rounds,
        },
        "tokens_per_s": {name: _bench.spread(v) for name, v in per_round.items()},
        "image_prior_vs_plain_loop": _bench.spread(ratio),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    _bench.write_result("image", run(quick=args.quick, rounds=args.rounds))


if __name__ == "__main__":
    main()
