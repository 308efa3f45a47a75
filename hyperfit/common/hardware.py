"""What the device does fast: bf16 matrix products where they are native, fused optimizer kernels where they exist.

PyTorch multiplies bfloat16 matrices on the CPU with oneDNN only when the CPU has AVX-512 (or AMX); on other CPUs
(AVX2 machines such as AMD Zen 2/3 servers and most laptops) a bf16 product falls back to a plain loop that runs
tens of times slower than float32, so bf16 autocast there costs time and saves nothing. ``precision="auto"``
therefore means bf16 autocast where bf16 products are native and float32 elsewhere.
"""

from __future__ import annotations

import os
import platform

import accelerate
import torch
import transformers

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def native_bf16_matmul(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (CUDA with bf16 support; CPUs with oneDNN bf16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if check is not None:
            return bool(check())
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return True  # other accelerators (XPU, MPS, …) have bf16 units


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` → ``bf16`` where bf16 products are native on ``device``, else ``fp32``; other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16_matmul(device) else "fp32"


def fused_optimizer_kwargs(params: list[torch.nn.Parameter]) -> dict:
    """``{"fused": True}`` when torch has a fused Adam/AdamW kernel for every parameter's device and dtype.

    The fused kernel updates a tensor in one pass instead of about ten; on a CPU the optimizer step of a 135M
    model takes a tenth of the default for-loop's time. Parameters that are views of a sharded/distributed
    tensor keep the default.
    """
    devices = {p.device.type for p in params}
    floating = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params)
    plain = all(type(p.data) is torch.Tensor for p in params)
    if params and floating and plain and devices <= {"cpu", "cuda"}:
        return {"fused": True}
    return {}


# Environment variables that change which kernels run, and so the last bits of every result.
KERNEL_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "OMP_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
)


def machine(device: torch.device | str, *, mixed_precision: str) -> dict:
    """What a run's numbers depend on beyond its configuration: the device and its kernels, the precision, the
    thread count and the library versions. Greedy decoding is exact only on one machine: another CPU's (or
    GPU's) kernels round differently, flip near-ties and change the continuations, so two runs of one
    configuration are compared within their intervals and this record says how their machines differed."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        kernels = f"CUDA {torch.version.cuda}, compute capability {major}.{minor}"
    else:
        name = _cpu_name() or platform.processor() or platform.machine()
        kernels = f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    return {
        "device": str(device),
        "device_name": name,
        "kernels": kernels,
        "precision": "fp32" if mixed_precision == "no" else mixed_precision,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
    }


def _cpu_name() -> str | None:
    """The CPU's model name (Linux), e.g. "AMD EPYC 7B13"; None where /proc/cpuinfo does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def describe_machine(record: dict | None) -> str:
    """One line for a report: "AMD EPYC 7B13 (CPU capability AVX2), fp32, 2 threads, torch 2.14.1"."""
    if not record:
        return "machine not recorded"
    variables = ", ".join(f"{k}={v}" for k, v in record.get("variables", {}).items())
    return (
        f"{record['device_name']} ({record['kernels']}), {record['precision']}, {record['threads']} threads, "
        f"torch {record['torch']}" + (f", {variables}" if variables else "")
    )
