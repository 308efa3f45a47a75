"""Cost of the citation blocker (hyperfit.common.blocker, the paper's §4) in greedy decoding.

A 4-layer, width-256, 8192-vocab GPT-2 decodes 16 prompts x 32 tokens for 96 new tokens with a plain KV-cache
loop, without and with the blocker, on training data of 2,000 x 256 ids (the paper's size, "1x") and
20,000 x 256 ("10x"). Prints the decode-time ratio blocked/unblocked and the blocker's per-step cost at 1x and
10x. Targets: <= 5 % added decode time at 1x; per-step cost flat in the data size (lookup is O(b log K)).

    OMP_NUM_THREADS=1 python benchmarks/bench_blocker.py [--repeats 6] [--threads 1]
"""

import argparse
import inspect
import statistics
import time

import _bench
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hyperfit.common.blocker import CitationBlocker

VOCAB, PROMPTS, PROMPT_LEN, NEW_TOKENS, SEQ_LEN = 8192, 16, 32, 96, 256


def greedy(model, prompt_ids, *, max_new_tokens, processor=None):
    """Greedy decoding with a KV cache. Returns (ids[b, t + new], seconds spent inside `processor`)."""
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    ids, cache, in_processor = prompt_ids, None, 0.0
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model(ids if cache is None else ids[:, -1:], use_cache=True, **{cache_name: cache})
            cache, scores = out[cache_name], out.logits[:, -1]
            if processor is not None:
                start = time.perf_counter()
                scores = processor(ids, scores)
                in_processor += time.perf_counter() - start
            ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], 1)
    return ids, in_processor


def build_train_ids(rows: int, planted: torch.Tensor, seed: int) -> torch.Tensor:
    """Zipf-distributed random ids (so frequent 4-grams recur with several continuations), with the model's own
    greedy outputs planted in the first rows so that the blocker really fires while decoding."""
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, VOCAB + 1, dtype=torch.float64) ** 1.1
    train = torch.multinomial(weights, rows * SEQ_LEN, replacement=True, generator=g).reshape(rows, SEQ_LEN)
    train[: len(planted), : planted.shape[1]] = planted
    return train


def median_call_time(blocker, input_ids, scores, *, calls=200, repeats=5) -> float:
    """Median over `repeats` of the mean time of one blocker call. Outputs are dropped at once, as in decoding,
    so the allocator can reuse their memory."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            blocker(input_ids, scores)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def run(*, repeats: int = 6, threads: int = 1) -> dict:
    """Measure and print; return the numbers (benchmarks/results/blocker.json)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=4,
        n_embd=256,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=256,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config).eval()
    prompts = torch.randint(0, VOCAB, (PROMPTS, PROMPT_LEN), generator=torch.Generator().manual_seed(1))

    # Plant the unblocked outputs, and the outputs blocked against those, so both steer into hits.
    unblocked, _ = greedy(model, prompts, max_new_tokens=NEW_TOKENS)
    round_1, _ = greedy(model, prompts, max_new_tokens=NEW_TOKENS, processor=CitationBlocker(unblocked))
    planted = torch.cat([unblocked, round_1])

    blockers = {}
    for name, rows in (("1x", 2_000), ("10x", 20_000)):
        train = build_train_ids(rows, planted, seed=2)
        start = time.perf_counter()
        blockers[name] = CitationBlocker(train)
        print(
            f"{name:>3}: train {rows} x {SEQ_LEN}, index built in {time.perf_counter() - start:.2f} s: {blockers[name]}"
        )

    # Interleave the variants within each repeat, rotating their order, and take the ratio within a repeat, so
    # load drift on a shared machine hits the variants alike.
    names = ["none", "1x", "10x"]
    decode = {name: [] for name in names}
    ratio = {"1x": [], "10x": []}
    per_step = {"1x": [], "10x": []}
    fired = {}
    greedy(model, prompts, max_new_tokens=8)  # warm-up
    for repeat in range(repeats):
        for name in names[repeat % 3 :] + names[: repeat % 3]:
            blocker = blockers.get(name)
            if blocker is not None:
                blocker.reset()
            start = time.perf_counter()
            _, in_blocker = greedy(model, prompts, max_new_tokens=NEW_TOKENS, processor=blocker)
            decode[name].append(time.perf_counter() - start)
            if blocker is not None:
                per_step[name].append(in_blocker / NEW_TOKENS)
                fired[name] = (blocker.fired, blocker.blocked_tokens)
        for name in ratio:
            ratio[name].append(decode[name][-1] / decode["none"][-1])
    med = {name: statistics.median(times) for name, times in decode.items()}
    step = {name: statistics.median(times) for name, times in per_step.items()}

    # The lookup alone on fixed batches: all 16 rows hitting (tails from the planted data) and none hitting.
    hit_ids = planted[:PROMPTS, :64]
    miss_ids = torch.randint(0, VOCAB, (PROMPTS, 64), generator=torch.Generator().manual_seed(3))
    scores = torch.randn(PROMPTS, VOCAB)
    micro = {}
    for name, blocker in blockers.items():
        for case, ids in (("hit", hit_ids), ("miss", miss_ids)):
            micro[name, case] = median_call_time(blocker, ids, scores)

    print(
        f"\ngreedy decode, {PROMPTS} prompts x {PROMPT_LEN} tokens + {NEW_TOKENS} new, median of {repeats}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"  unblocked            {med['none']:.3f} s  ({med['none'] / NEW_TOKENS * 1e3:.2f} ms/step)")
    for name in ("1x", "10x"):
        print(
            f"  blocked {name:>3}          {med[name]:.3f} s  ratio blocked/unblocked {statistics.median(ratio[name]):.3f}  "
            f"blocker {step[name] * 1e6:.0f} us/step = {step[name] / (med['none'] / NEW_TOKENS) * 100:.1f} % of a "
            f"step; fired {fired[name][0]} (row, step) events, {fired[name][1]} tokens blocked"
        )
    print(f"  per-step blocker cost 10x / 1x: {step['10x'] / step['1x']:.2f}")
    print("\nblocker call alone (16 rows x 64 ids, 8192-vocab scores), median per call")
    for case in ("hit", "miss"):
        one, ten = micro["1x", case], micro["10x", case]
        print(f"  {case:<4}  1x {one * 1e6:6.0f} us   10x {ten * 1e6:6.0f} us   10x / 1x {ten / one:.2f}")
    torch.set_num_threads(previous_threads)
    return {
        "threads": threads,
        "decode_seconds": {name: _bench.spread(times) for name, times in decode.items()},
        "blocked_over_unblocked": {name: _bench.spread(values) for name, values in ratio.items()},
        "blocker_us_per_step": {name: value * 1e6 for name, value in step.items()},
        "per_step_cost_10x_over_1x": step["10x"] / step["1x"],
        "call_us": {f"{name}_{case}": value * 1e6 for (name, case), value in micro.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _bench.write_result("blocker", run(repeats=args.repeats, threads=args.threads))


if __name__ == "__main__":
    main()
