"""`hyperfit plan`: its memory estimate against the peak measured on CPU for two tiny models, and its answers."""

from __future__ import annotations

import pytest
import torch

from hyperfit.common.batch import token_nll_sum
from hyperfit.common.plan import estimate, measure_peak_bytes, shape_from_config
from hyperfit.image.model import PriorConfig, build_prior
from tests.conftest import make_tiny_llama


def measured_peak(model: torch.nn.Module, ids: torch.Tensor, *, precision: str) -> int:
    """Peak live tensor bytes of the second training step (Adam's moments exist, as in every later step)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=ids).logits
        token_nll_sum(logits, ids).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    tracker = measure_peak_bytes()
    tracker.track(
        [*model.parameters(), *model.buffers(), *(t for s in optimizer.state.values() for t in s.values())]
    )
    with tracker:
        step()
    return tracker.peak


TINY = {
    "llama": lambda: make_tiny_llama(384, layers=2, width=256),
    "imagegpt": lambda: build_prior(255, 64, PriorConfig(layers=2, width=128, heads=4), seed=0),
}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", list(TINY))
def test_estimate_is_within_a_quarter_of_the_measured_peak(name, precision):
    torch.manual_seed(0)
    model = TINY[name]()
    shape = shape_from_config(model.config, description=name)
    assert shape.params == pytest.approx(sum(p.numel() for p in model.parameters()), rel=0.02)
    batch, seq = 4, 65
    ids = torch.randint(0, 255, (batch, seq), generator=torch.Generator().manual_seed(0))
    measured = measured_peak(model, ids, precision=precision)
    planned = estimate(
        shape,
        strategy="ddp",
        gpus=1,
        seq_len=seq,
        micro_batch_size=batch,
        precision=precision,
        gradient_checkpointing=False,
    ).peak
    assert planned == pytest.approx(measured, rel=0.25), (planned / measured, planned, measured)


def test_plan_reads_a_local_model_and_names_config_and_command(tiny_model_dir, capsys):
    from hyperfit.cli import main as hyperfit

    assert hyperfit(["plan", "--model", str(tiny_model_dir), "--gpus", "1", "--gpu_memory_gb", "1"]) == 0
    out = capsys.readouterr().out
    assert "fits: yes" in out and "configs/accelerate/one_gpu.yaml" in out
    assert f"scripts/fit_text.py --model {tiny_model_dir}" in out


def test_a_model_too_large_for_the_gpus_is_refused_with_what_would_fit(capsys):
    from hyperfit.cli import main as hyperfit

    assert (
        hyperfit(["plan", "--model", "8e9", "--gpus", "8", "--gpu_memory_gb", "80", "--strategy", "ddp"]) == 2
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: 8e9 needs about")
    assert "it fits with --strategy fsdp on 8 GPUs" in error[0]


def test_sharding_divides_the_model_state_by_the_gpus():
    from hyperfit.common.plan import shape_from_count

    shape = shape_from_count(8e9)
    common = dict(seq_len=256, micro_batch_size=1, precision="bf16", gradient_checkpointing=False)
    ddp = estimate(shape, strategy="ddp", gpus=8, **common)
    fsdp = estimate(shape, strategy="fsdp", gpus=8, **common)
    assert fsdp.optimizer == pytest.approx(ddp.optimizer / 8)
    assert ddp.optimizer == pytest.approx(8 * shape.params)  # Adam: two float32 moments
    assert fsdp.activations == ddp.activations  # FSDP shards state, not activations
    checkpointed = estimate(shape, strategy="fsdp", gpus=8, **{**common, "gradient_checkpointing": True})
    assert checkpointed.activations < fsdp.activations


def test_an_unreadable_model_is_one_sentence(capsys, tmp_path):
    from hyperfit.cli import main as hyperfit

    assert hyperfit(["plan", "--model", str(tmp_path / "nothing-here")]) == 2
    assert capsys.readouterr().err.startswith("error: no model config could be read")
