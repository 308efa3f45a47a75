"""Decoding throughput: hyperfit's ``decode`` against ``model.generate`` on SmolLM2-135M (offline), greedy and
top-p (temperature 0.7, top-k 50, top-p 0.9), at batch 1, 16 and 64: 32-token prompts from held-out Lee news
texts, a fixed number of new tokens (no end-of-sequence stop, so both do the same work). Greedy tokens are
asserted identical. The loops run in lock step, 8 decoding steps a turn (the order rotating every round), so
every round compares steps taken at nearly the same moment; the first turn (prefill) is the warm-up.

Both run in the evaluation's precision (``auto``: bf16 autocast where the CPU multiplies bf16 natively, else
float32) inside one autocast region, as hyperfit's evaluation does. Under bf16 a second peer is measured:
``generate`` on an accelerate-prepared model, whose forward enters autocast on every call and so casts every
weight to bf16 at every decoding step.

    python benchmarks/bench_decode.py [--quick] [--every 8]
"""

from __future__ import annotations

import argparse
import functools

import _bench
import torch
from transformers import LogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from hyperfit.common.decode import decode
from hyperfit.common.hardware import resolve_precision

PROMPT_TOKENS = 32


def prompts(batch: int) -> torch.Tensor:
    eval_ids = _bench.lee_splits(32, 128, 64).eval_ids
    return eval_ids[:batch, :PROMPT_TOKENS].contiguous()


class Turns(LogitsProcessor):
    """A logits processor that hands the turn over (``hook()``) every ``every`` decoding steps and changes
    nothing: both loops call their processors once per step, so both are interrupted at the same points."""

    def __init__(self, hook, every: int):
        self.hook, self.every, self.calls = hook, every, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % self.every == 0:
            self.hook()
        return scores


def ours(model, ids, hook, *, new_tokens: int, strategy: str, autocast, every: int, outputs: dict) -> None:
    kwargs = {}
    if strategy == "top_p":
        gen = torch.Generator(device=ids.device).manual_seed(0)
        kwargs = dict(temperature=0.7, warpers=[TopKLogitsWarper(50), TopPLogitsWarper(0.9)], generator=gen)
    hook()
    with torch.no_grad(), autocast():
        out = decode(model, ids, max_new_tokens=new_tokens, logits_processors=[Turns(hook, every)], **kwargs)
    outputs["hyperfit"] = out.new_ids


def theirs(
    model, ids, hook, *, new_tokens: int, strategy: str, autocast, every: int, outputs: dict, name: str
):
    sampling = dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.9) if strategy == "top_p" else {}
    torch.manual_seed(0)
    hook()
    with torch.no_grad(), autocast():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=0,
            logits_processor=[Turns(hook, every)],
            **(sampling or {"do_sample": False}),
        )
    outputs[name] = out[:, ids.size(1) :]


def prepared_forward(model, device_type: str):
    """A copy of ``model`` whose forward autocasts per call, as accelerate's ``prepare`` wraps it."""
    import copy
    import functools

    wrapped = copy.copy(model)
    inner = type(model).forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return inner(wrapped, *args, **kwargs)

    wrapped.forward = forward
    return wrapped


def run(*, quick: bool = False, every: int = 8) -> dict:
    base, _ = _bench.smollm2()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = base.to(device).eval()
    precision = resolve_precision("auto", device)
    bf16 = precision == "bf16"

    def region():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def no_region():
        return torch.autocast(device.type, enabled=False)

    new_tokens = 48 if quick else 96
    rounds = new_tokens // every - 1  # the first turn (prefill and the first steps) is the warm-up
    cases = [("greedy", 16), ("top_p", 16)]
    if not quick:
        cases += [("greedy", 1), ("greedy", 64), ("top_p", 1), ("top_p", 64)]
    print(
        f"decoding: SmolLM2-135M, {PROMPT_TOKENS}-token prompts + {new_tokens} new, precision {precision}, "
        f"turns of {every} steps",
        flush=True,
    )
    result = {"precision": precision, "new_tokens": new_tokens, "prompt_tokens": PROMPT_TOKENS, "cases": {}}
    for strategy, batch in cases:
        ids = prompts(batch).to(device)
        outputs: dict[str, torch.Tensor] = {}
        common = dict(new_tokens=new_tokens, strategy=strategy, every=every, outputs=outputs)
        contenders = {
            "hyperfit": functools.partial(ours, model, ids, autocast=region, **common),
            "generate": functools.partial(theirs, model, ids, autocast=region, name="generate", **common),
        }
        if bf16:
            contenders["generate_prepared"] = functools.partial(
                theirs,
                prepared_forward(model, device.type),
                ids,
                autocast=no_region,
                name="generate_prepared",
                **common,
            )
        print(f"  {strategy} batch {batch}: {rounds} rounds", flush=True)
        with torch.no_grad(), region():
            decode(model, ids[:, :8], max_new_tokens=4)  # warm-up
        seconds = _bench.lockstep(contenders, rounds=rounds)
        per_round = {name: [batch * every / s for s in v] for name, v in seconds.items()}
        case = {
            "batch": batch,
            "tokens_per_s": {name: _bench.spread(v) for name, v in per_round.items()},
            "vs_generate": _bench.spread(_bench.ratios(per_round, "hyperfit", "generate")),
        }
        if bf16:
            case["vs_generate_prepared"] = _bench.spread(
                _bench.ratios(per_round, "hyperfit", "generate_prepared")
            )
        if strategy == "greedy":
            case["identical_tokens"] = bool(torch.equal(outputs["hyperfit"], outputs["generate"]))
            if not case["identical_tokens"]:
                raise SystemExit(
                    f"greedy tokens differ from generate at batch {batch}: hyperfit's decode is wrong"
                )
        result["cases"][f"{strategy}_b{batch}"] = case
        print(
            f"  {strategy} b{batch}: {_bench.fmt_ratio(case['vs_generate']['values'])} generate"
            + (" (identical tokens)" if case.get("identical_tokens") else ""),
            flush=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16 only, 48 new tokens")
    parser.add_argument("--every", type=int, default=8, help="decoding steps per turn")
    args = parser.parse_args()
    _bench.write_result("decode", run(quick=args.quick, every=args.every))


if __name__ == "__main__":
    main()
