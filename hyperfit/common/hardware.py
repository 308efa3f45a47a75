"""What the device does fast: bf16 matrix products where they are native, fused optimizer kernels where they exist.

PyTorch multiplies bfloat16 matrices on the CPU with oneDNN only when the CPU has AVX-512 (or AMX); on other CPUs
(AVX2 machines such as AMD Zen 2/3 servers and most laptops) a bf16 product falls back to a plain loop that runs
tens of times slower than float32, so bf16 autocast there costs time and saves nothing. ``precision="auto"``
therefore means bf16 autocast where bf16 products are native and float32 elsewhere.
"""

from __future__ import annotations

import torch

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
