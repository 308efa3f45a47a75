"""The cost of one evaluation point relative to one training epoch, on the demo's shapes: SmolLM2-135M, 32 Lee
blocks of 128 tokens (batch 8: 4 steps an epoch); an evaluation greedy-decodes 16 held-out 32-token prompts for
96 tokens and computes teacher-forced statistics on the 16 held-out 128-token blocks, as ``fit-text`` does
after every ``eval_every_epochs`` epochs.

Training steps and evaluations run in lock step (one step, then one evaluation, each round; warm-ups excluded),
and an epoch is 4 steps; the evaluation runs as the trainer runs it (no grad, one autocast region). Also projected, from the same measured rates: the ratio at the
paper's shapes (2,000 blocks of 256 tokens; 300 prompts).

    python benchmarks/bench_eval.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import _bench
import torch
from bench_train import hyperfit_loop

from hyperfit.common.evaluate import generation_stats, teacher_forced_stats
from hyperfit.common.hardware import resolve_precision

PROMPT_TOKENS, NEW_TOKENS = 32, 96


def evaluation_seconds(model, eval_ids: torch.Tensor, *, new_tokens: int, precision: str) -> dict[str, float]:
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model.eval()
    with torch.no_grad(), autocast:
        start = time.perf_counter()
        generation_stats(model, eval_ids[:, :PROMPT_TOKENS], max_new_tokens=new_tokens, batch_size=16)
        middle = time.perf_counter()
        teacher_forced_stats(model, eval_ids, batch_size=16)
        end = time.perf_counter()
    return {"generation": middle - start, "teacher_forced": end - middle, "total": end - start}


def run(*, quick: bool = False, rounds: int | None = None) -> dict:
    rounds = rounds or (2 if quick else 3)
    new_tokens = 48 if quick else NEW_TOKENS
    base, _ = _bench.smollm2()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision("auto", device)
    splits = _bench.lee_splits(32, 128, 16)
    train_ids, eval_ids = splits.train_ids, splits.eval_ids
    batch = 8
    steps_per_epoch = train_ids.size(0) // batch
    parts: list[dict[str, float]] = []

    def training(hook):
        ids = train_ids.repeat(2, 1)[: (rounds + 1) * batch]
        hyperfit_loop(copy.deepcopy(base).train(), ids, hook, batch=batch, precision=precision)

    def evaluations(hook):
        model = copy.deepcopy(base)
        hook()
        for _ in range(rounds + 1):
            parts.append(evaluation_seconds(model, eval_ids, new_tokens=new_tokens, precision=precision))
            hook()

    print(
        f"evaluation vs epoch: {train_ids.size(0)} x {train_ids.size(1)} training blocks (batch {batch}), "
        f"{eval_ids.size(0)} held-out texts, {new_tokens} new tokens, precision {precision}, {rounds} rounds",
        flush=True,
    )
    seconds = _bench.lockstep({"train_step": training, "evaluation": evaluations}, rounds=rounds)
    epoch = [s * steps_per_epoch for s in seconds["train_step"]]
    ratio = [e / t for e, t in zip(seconds["evaluation"], epoch, strict=True)]
    timed = parts[1:]
    gen = sum(p["generation"] for p in timed) / len(timed)
    tf = sum(p["teacher_forced"] for p in timed) / len(timed)
    epoch_s = sum(epoch) / len(epoch)
    # Per-token rates measured above, applied to the paper's shapes.
    epoch_tokens = train_ids.size(0) * (train_ids.size(1) - 1)
    train_rate = epoch_tokens / epoch_s
    gen_rate = eval_ids.size(0) * new_tokens / gen
    tf_rate = eval_ids.numel() / tf
    paper = (300 * 96 / gen_rate + 300 * 256 / tf_rate) / (2000 * 255 / train_rate)
    result = {
        "precision": precision,
        "workload": {
            "train_blocks": list(train_ids.shape),
            "eval_blocks": list(eval_ids.shape),
            "new_tokens": new_tokens,
            "batch": batch,
        },
        "seconds": {"epoch": _bench.spread(epoch), "evaluation": _bench.spread(seconds["evaluation"])},
        "evaluation_parts_mean_s": {"generation": gen, "teacher_forced": tf},
        "eval_cost_vs_epoch": _bench.spread(ratio),
        "flop_ratio": (eval_ids.numel() + eval_ids.size(0) * new_tokens) * 2 / (epoch_tokens * 6),
        "projected_paper_shapes_eval_vs_epoch": paper,
    }
    print(
        f"  eval / epoch: {_bench.fmt_ratio(ratio)} (generation {gen:.1f} s, teacher-forced {tf:.1f} s, "
        f"epoch {epoch_s:.1f} s); FLOP ratio {result['flop_ratio']:.2f}; projected at the paper's shapes {paper:.3f}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 new tokens, fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    _bench.write_result("eval", run(quick=args.quick, rounds=args.rounds))


if __name__ == "__main__":
    main()
