"""The cost of one evaluation point relative to one training epoch, on the demo's shapes: SmolLM2-135M, 32 Lee
blocks of 128 tokens (batch 8: 4 steps an epoch); an evaluation greedy-decodes 16 held-out 32-token prompts for
96 tokens and computes teacher-forced statistics on the 16 held-out 128-token blocks, as ``fit-text`` does
after every ``eval_every_epochs`` epochs.

The epoch is timed at its steady-state step rate (its first step's warm-up excluded); the evaluation runs as the
trainer runs it (no grad, one autocast region). Also projected, from the same measured rates: the ratio at the
paper's shapes (2,000 blocks of 256 tokens; 300 prompts).

    python benchmarks/bench_eval.py [--quick] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import _bench
from bench_train import hyperfit_tokens_per_s
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


def run(*, quick: bool = False, repeats: int | None = None) -> dict:
    repeats = repeats or 2
    new_tokens = 48 if quick else NEW_TOKENS
    base, _ = _bench.smollm2()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision("auto", device)
    splits = _bench.lee_splits(32, 128, 16)
    train_ids, eval_ids = splits.train_ids, splits.eval_ids
    batch = 8
    steps = 2 if quick else 3  # timed steps; the epoch time is 4 steps at the steady rate
    epoch_tokens = train_ids.size(0) * (train_ids.size(1) - 1)
    parts: list[dict[str, float]] = []

    def epoch():
        ids = train_ids[: (steps + 1) * batch]
        tps = hyperfit_tokens_per_s(copy.deepcopy(base).train(), ids, batch=batch, precision=precision)
        return epoch_tokens / tps

    def evaluation():
        parts.append(evaluation_seconds(base, eval_ids, new_tokens=new_tokens, precision=precision))
        return parts[-1]["total"]

    print(
        f"evaluation vs epoch: {train_ids.size(0)} x {train_ids.size(1)} training blocks, {eval_ids.size(0)} "
        f"held-out texts, {new_tokens} new tokens, precision {precision}, {repeats} repeats",
        flush=True,
    )
    per_repeat = _bench.interleaved({"epoch": epoch, "evaluation": evaluation}, repeats=repeats)
    ratio = _bench.ratios(per_repeat, "evaluation", "epoch")
    gen = sum(p["generation"] for p in parts) / len(parts)
    tf = sum(p["teacher_forced"] for p in parts) / len(parts)
    epoch_s = sum(per_repeat["epoch"]) / len(per_repeat["epoch"])
    # Per-token rates measured above, applied to the paper's shapes.
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
        "seconds": {name: _bench.spread(v) for name, v in per_repeat.items()},
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
    parser.add_argument("--quick", action="store_true", help="48 new tokens, fewer timed steps")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    _bench.write_result("eval", run(quick=args.quick, repeats=args.repeats))


if __name__ == "__main__":
    main()
