"""How cost grows: training time against the number of blocks and the block length (SmolLM2-135M), decoding
time against the number of new tokens (with the KV cache), and the citation blocker's and the copy analysis'
cost against the training-set size (random Zipf ids, 256 per block). Writes one SVG plot per question and the
numbers to benchmarks/results/scaling.json.

    python benchmarks/bench_scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import _bench
import torch
from bench_train import hyperfit_loop

from hyperfit.common.analysis import copy_report
from hyperfit.common.blocker import CitationBlocker
from hyperfit.common.config import TrainConfig
from hyperfit.common.decode import decode
from hyperfit.common.hardware import resolve_precision
from hyperfit.common.runs import Run
from hyperfit.common.train import build_accelerator, train


def epoch_seconds(base, ids: torch.Tensor, *, batch: int, precision: str) -> float:
    """Wall seconds of one training epoch of ``hyperfit.common.train.train`` over ``ids`` (no evaluation)."""
    cfg = TrainConfig(lr=4e-5, epochs=1, batch_size=batch, precision=precision, eval_every_epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.open(f"{tmp}/run", overwrite=True, resume=False, writer=True)
        accelerator = build_accelerator(cfg, cpu=not torch.cuda.is_available())
        return train(copy.deepcopy(base).train(), ids, cfg, accelerator=accelerator, run=run)["train_seconds"]


def median_step_seconds(base, ids: torch.Tensor, *, batch: int, precision: str) -> float:
    """Median seconds of the trainer's steps over ``ids``, the first (warm-up) step left out."""
    stamps: list[float] = []
    hyperfit_loop(
        copy.deepcopy(base).train(),
        ids,
        lambda: stamps.append(time.perf_counter()),
        batch=batch,
        precision=precision,
    )
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares line y = a + b x and its R²."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1e-12
    return a, b, 1 - ss_res / ss_tot


def zipf_ids(rows: int, length: int, *, vocab: int = 8192, seed: int = 0) -> torch.Tensor:
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(weights, rows * length, replacement=True, generator=g).reshape(rows, length)


def run(*, quick: bool = False) -> dict:
    base, _ = _bench.smollm2()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision("auto", device)
    blocks = _bench.lee_splits(64, 128, 16).train_ids
    out: dict = {"precision": precision}
    plots = {}

    # 1. Training: an epoch over n blocks of 64 tokens (each size twice, the faster kept: load only slows), and
    #    the median step of 4 blocks of L tokens.
    ns = [8, 16, 32] if quick else [8, 16, 32, 64]
    print(f"scaling: training epoch vs blocks {ns} (64 tokens, batch 8)", flush=True)
    runs: dict[int, list[float]] = {n: [] for n in ns}
    for n in ns + ns[::-1]:  # up and down again, so a change of load does not tilt the line
        runs[n].append(epoch_seconds(base, blocks[:n, :64].contiguous(), batch=8, precision=precision))
    epoch_s = [min(runs[n]) for n in ns]
    lengths = [32, 64, 128] if quick else [32, 64, 128, 256]
    print(
        f"scaling: training step vs block length {lengths} (batch 4, median of 3 steps after a warm-up)",
        flush=True,
    )
    step_s = []
    for length in lengths:
        ids = (blocks.reshape(-1, 256) if length > 128 else blocks)[:16, :length].contiguous()
        step_s.append(median_step_seconds(base, ids, batch=4, precision=precision))
    out["train_epoch_vs_blocks"] = {"blocks": ns, "seconds": epoch_s, "fit": fit_line(ns, epoch_s)}
    out["train_step_vs_block_len"] = {
        "block_len": lengths,
        "seconds": step_s,
        "fit": fit_line(lengths, step_s),
    }
    note = f"precision {precision}; {_bench.machine()['cpu']}, {torch.get_num_threads()} thread(s)"
    plots["train_blocks"] = _bench.svg_plot(
        _bench.RESULTS / "scaling_train_blocks.svg",
        title="One training epoch vs training blocks",
        series={"SmolLM2-135M, 64-token blocks, batch 8": (ns, epoch_s)},
        x_label="training blocks",
        y_label="seconds per epoch",
        note=note,
    )
    plots["train_length"] = _bench.svg_plot(
        _bench.RESULTS / "scaling_train_length.svg",
        title="One training step vs block length",
        series={"SmolLM2-135M, batch 4": (lengths, step_s)},
        x_label="tokens per block",
        y_label="seconds per step",
        note=note,
    )

    # 2. Decoding: new tokens with the KV cache, batch 4.
    news = [32, 64, 128] if quick else [32, 64, 128, 256, 384]
    print(f"scaling: decoding time vs new tokens {news} (batch 4, 32-token prompts)", flush=True)
    prompts = _bench.lee_splits(32, 128, 16).eval_ids[:4, :32].to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    model = base.to(device).eval()
    decode_s = []
    with torch.no_grad(), autocast:
        decode(model, prompts, max_new_tokens=4)
        for new in news:
            start = time.perf_counter()
            decode(model, prompts, max_new_tokens=new)
            decode_s.append(time.perf_counter() - start)
    out["decode_vs_new_tokens"] = {"new_tokens": news, "seconds": decode_s, "fit": fit_line(news, decode_s)}
    plots["decode"] = _bench.svg_plot(
        _bench.RESULTS / "scaling_decode.svg",
        title="Greedy decoding time, KV cache (batch 4)",
        series={"hyperfit decode": (news, decode_s)},
        x_label="new tokens",
        y_label="seconds",
        note=note,
    )

    # 3. Citation blocker (index build, per-step call) and copy analysis against the training-set size.
    sizes = [500, 1000, 2000] if quick else [500, 1000, 2000, 4000, 8000, 16000]
    print(f"scaling: blocker and copy analysis vs training blocks {sizes} (x 256 ids)", flush=True)
    gens = zipf_ids(16, 96, seed=1)
    build_s, call_us, copy_s = [], [], []
    for size in sizes:
        train_ids = zipf_ids(size, 256, seed=2)
        train_ids[:16, :96] = gens  # some generations copy training text, so matches are found
        start = time.perf_counter()
        blocker = CitationBlocker(train_ids)
        build_s.append(time.perf_counter() - start)
        scores = torch.randn(16, 8192)
        context = torch.cat([gens[:, :32], gens[:, :32]], 1)
        start = time.perf_counter()
        for _ in range(50):
            blocker(context, scores)
        call_us.append((time.perf_counter() - start) / 50 * 1e6)
        start = time.perf_counter()
        copy_report(gens.tolist(), train_ids.tolist())
        copy_s.append(time.perf_counter() - start)
    tokens = [s * 256 for s in sizes]
    out["blocker_build_vs_train_tokens"] = {
        "train_tokens": tokens,
        "seconds": build_s,
        "fit": fit_line(tokens, build_s),
    }
    out["blocker_call_vs_train_tokens"] = {"train_tokens": tokens, "microseconds": call_us}
    out["copy_report_vs_train_tokens"] = {
        "train_tokens": tokens,
        "seconds": copy_s,
        "fit": fit_line(tokens, copy_s),
    }
    plots["analysis"] = _bench.svg_plot(
        _bench.RESULTS / "scaling_analysis.svg",
        title="Blocker and copy analysis vs training-set size",
        series={
            "blocker index build (s)": ([t / 1e6 for t in tokens], build_s),
            "copy report, 16 x 96 (s)": ([t / 1e6 for t in tokens], copy_s),
            "blocker call (ms)": ([t / 1e6 for t in tokens], [u / 1e3 for u in call_us]),
        },
        x_label="training tokens (millions)",
        y_label="seconds (call: milliseconds)",
    )
    out["plots"] = {k: str(v.relative_to(_bench.RESULTS.parent.parent)) for k, v in plots.items()}
    for key in ("train_epoch_vs_blocks", "train_step_vs_block_len", "decode_vs_new_tokens"):
        a, b, r2 = out[key]["fit"]
        print(f"  {key}: {a:.2f} s + {b:.4f} s per unit, R² {r2:.3f}")
    print(f"  blocker call {call_us[0]:.0f} us at {tokens[0]} tokens, {call_us[-1]:.0f} us at {tokens[-1]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    _bench.write_result("scaling", run(quick=args.quick))


if __name__ == "__main__":
    main()
