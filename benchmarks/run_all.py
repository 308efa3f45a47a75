"""Every benchmark, each in a fresh process, then benchmarks/results/summary.json: the median ratio of each
against its peer, its spread, the targets and whether each is met, and a Markdown table for the README.
``make bench`` runs this; ``--quick`` runs smaller workloads (minutes instead of ~20).

A fresh process per benchmark because what ran before in the same process moved a ratio: the image prior's
lock-step ratio read 0.64 after the training, decoding and evaluation benchmarks, 1.57 after the evaluation one
alone, and 0.99-1.07 in three fresh processes (2 threads, 2026-11-29); the lock step cancels load drift between
contenders, not the process state they share.

    python benchmarks/run_all.py [--quick] [--only train,decode,eval,image,scaling,blocker]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import _bench
import bench_blocker
import bench_decode
import bench_eval
import bench_image
import bench_scaling
import bench_train
import torch

BENCHES = ("train", "decode", "eval", "image", "scaling", "blocker")

# (summary key, how it is read from the results, target, "ge" or "le")
TARGETS = (
    ("train_vs_hf_trainer", 1.3, "ge"),
    ("train_mfu", 0.70, "ge"),
    ("decode_vs_generate_greedy_b16", 2.0, "ge"),
    ("eval_cost_vs_epoch", 0.25, "le"),
)


def run_one(name: str, quick: bool) -> dict:
    start = time.perf_counter()
    if name == "train":
        result = bench_train.run(quick=quick)
    elif name == "decode":
        result = bench_decode.run(quick=quick)
    elif name == "eval":
        result = bench_eval.run(quick=quick)
    elif name == "image":
        result = bench_image.run(quick=quick)
    elif name == "scaling":
        result = bench_scaling.run(quick=quick)
    else:
        result = bench_blocker.run(repeats=3 if quick else 6)
    result["wall_seconds"] = time.perf_counter() - start
    result["quick"] = quick
    _bench.write_result(name, result)
    return result


def load(name: str) -> dict | None:
    path = _bench.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summarise() -> dict:
    """summary.json from whatever result files exist (each keeps its own machine description and date)."""
    train, decode, evaluation = load("train"), load("decode"), load("eval")
    image, blocker = load("image"), load("blocker")
    # The machine the results were measured on (summarising elsewhere, e.g. results copied from a GPU machine,
    # must not describe this one).
    measured = next((r["machine"] for r in (train, decode, evaluation, image, blocker) if r), None)
    summary: dict = {"machine": measured or _bench.machine()}
    if train:
        summary["train_vs_hf_trainer"] = train["ratios"]["train_vs_hf_trainer"]
        summary["train_vs_official_loop"] = train["ratios"]["train_vs_official_loop"]
        summary["train_vs_plain_loop"] = train["ratios"]["train_vs_plain_loop"]
        summary["train_mfu"] = train["train_mfu"]
        summary["train_mfu_basis"] = train["train_mfu_basis"]
        summary["train_precision"] = train["precision"]
    if decode:
        for case in ("greedy_b16", "top_p_b16", "greedy_b1", "greedy_b64", "top_p_b1", "top_p_b64"):
            if case in decode["cases"]:
                summary[f"decode_vs_generate_{case}"] = decode["cases"][case]["vs_generate"]
                if "vs_generate_prepared" in decode["cases"][case]:
                    summary[f"decode_vs_generate_prepared_{case}"] = decode["cases"][case][
                        "vs_generate_prepared"
                    ]
        summary["decode_greedy_identical"] = all(
            c.get("identical_tokens", True) for c in decode["cases"].values()
        )
    if evaluation:
        summary["eval_cost_vs_epoch"] = evaluation["eval_cost_vs_epoch"]
        summary["eval_projected_paper_shapes"] = evaluation["projected_paper_shapes_eval_vs_epoch"]
    if image:
        summary["image_prior_vs_plain_loop"] = image["image_prior_vs_plain_loop"]
    if blocker:
        summary["blocker_decode_overhead_1x"] = blocker["blocked_over_unblocked"]["1x"]
    summary["targets"] = {}
    for key, target, sense in TARGETS:
        if key in summary:
            median = summary[key]["median"]
            met = median >= target if sense == "ge" else median <= target
            summary["targets"][key] = {"target": target, "sense": sense, "median": median, "met": met}
    path = _bench.RESULTS / "summary.json"
    path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    table = markdown_table(summary)
    (_bench.RESULTS / "table.md").write_text(table + "\n")
    print(f"\n{path.relative_to(_bench.RESULTS.parent.parent)} (and table.md, for the README):")
    print(table)
    return summary


def markdown_table(summary: dict) -> str:
    rows = [
        ("train_vs_hf_trainer", "training tokens/s, hyperfit / HF `Trainer`", "≥ 1.3"),
        ("train_vs_official_loop", "training tokens/s, hyperfit / the paper's fp32 AdamW loop", ""),
        ("train_vs_plain_loop", "training tokens/s, hyperfit / a plain loop", ""),
        ("train_mfu", "training MFU (6·N·tokens/s over the measured matmul peak)", "≥ 0.70"),
        ("decode_vs_generate_greedy_b16", "greedy decoding tokens/s, batch 16, hyperfit / `generate`", "≥ 2"),
        ("decode_vs_generate_top_p_b16", "top-p decoding tokens/s, batch 16, hyperfit / `generate`", ""),
        ("decode_vs_generate_greedy_b1", "greedy, batch 1", ""),
        ("decode_vs_generate_greedy_b64", "greedy, batch 64", ""),
        ("eval_cost_vs_epoch", "one evaluation / one training epoch (demo shapes)", "≤ 0.25"),
        ("image_prior_vs_plain_loop", "image prior pretraining tokens/s, hyperfit / plain loop", ""),
        ("blocker_decode_overhead_1x", "greedy decode time with / without the citation blocker", "≤ 1.05"),
    ]
    lines = ["| measure | median | range | target |", "|---|---|---|---|"]
    for key, label, target in rows:
        if key in summary:
            s = summary[key]
            lines.append(f"| {label} | {s['median']:.2f} | {s['min']:.2f}–{s['max']:.2f} | {target} |")
    m = summary["machine"]
    lines.append(
        f"\n{m['cpu']}, {m['cores']} cores, torch {m['torch']}, transformers {m['transformers']}, {m['date'][:10]}, "
        f"training precision {summary.get('train_precision', '?')}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer repeats")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma list of benchmarks to run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    # Internal: run the one benchmark in --only in this process (main() starts one such child per benchmark).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(BENCHES)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHES)}")
    if args.child:
        run_one(names[0], args.quick)
        return
    start = time.perf_counter()
    for name in names:
        print(f"\n== {name} ==", flush=True)
        command = [sys.executable, __file__, "--only", name, "--child"]
        command += ["--quick"] * args.quick + (["--threads", str(args.threads)] if args.threads else [])
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"benchmark {name} failed (its output is above); the others' results are kept.")
    summarise()
    print(f"\nall benchmarks: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
