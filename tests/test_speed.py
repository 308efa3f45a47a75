"""The speed-ups keep the numbers: the loss without a logits copy, precision ``auto``, the fused optimizer, one
autocast region for an evaluation, and decoding's end-of-sequence check every few steps."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from hyperfit.common.batch import IGNORE_INDEX, make_batch, token_nll_sum
from hyperfit.common.config import TrainConfig
from hyperfit.common.decode import EOS_CHECK_EVERY, decode, greedy_decode
from hyperfit.common.hardware import fused_optimizer_kwargs, native_bf16_matmul, resolve_precision
from hyperfit.common.runs import Run
from hyperfit.common.train import build_accelerator, train
from tests.conftest import make_tiny_llama


def reference_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The shifted cross-entropy in float64 (the definition, without any shortcut)."""
    shifted = logits[:, :-1].double()
    return F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def test_token_nll_sum_equals_the_shifted_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 50, generator=g) * 3
    labels = make_batch(torch.randint(0, 50, (3, 7), generator=g), ignore_first=2)["labels"]
    labels[1, 4] = IGNORE_INDEX
    assert torch.allclose(
        token_nll_sum(logits, labels).double(), reference_nll_sum(logits, labels), rtol=1e-6
    )


def test_token_nll_sum_resolves_a_loss_near_zero_from_bf16_logits():
    """A model that is almost always right (the end of hyperfitting): per-token losses of 1e-4..1e-3 nats, from
    bf16 logits as autocast produces them, match float64 on the same logits within 1 %."""
    g = torch.Generator().manual_seed(1)
    b, t, v = 2, 9, 4096
    labels = torch.randint(0, v, (b, t), generator=g)
    logits = torch.randn(b, t, v, generator=g)
    margin = torch.empty(b, t).uniform_(16.0, 19.0, generator=g)  # loss per token ≈ v · e^-margin
    logits.scatter_(-1, labels[:, :, None].roll(-1, dims=1), margin[:, :, None])
    logits = logits.bfloat16()
    ours = token_nll_sum(logits, labels)
    exact = reference_nll_sum(logits.float(), labels)
    per_token = float(exact) / (b * (t - 1))
    assert 1e-5 < per_token < 1e-2, per_token
    assert ours.dtype == torch.float32
    assert abs(float(ours) - float(exact)) / float(exact) < 1e-2


def test_auto_precision_is_bf16_only_where_bf16_products_are_native(fresh_accelerate_state):
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16_matmul("cpu") else "fp32")
    cfg = TrainConfig(precision="auto")
    accelerator = build_accelerator(cfg, cpu=True)
    assert cfg.precision in ("bf16", "fp32")  # resolved in place, so config.json records what ran
    assert accelerator.mixed_precision == ("bf16" if cfg.precision == "bf16" else "no")


def test_fused_optimizer_only_for_plain_cpu_or_cuda_parameters():
    assert fused_optimizer_kwargs(list(torch.nn.Linear(3, 3).parameters())) == {"fused": True}
    assert fused_optimizer_kwargs(list(torch.nn.Linear(3, 3, device="meta").parameters())) == {}
    assert fused_optimizer_kwargs([]) == {}


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state whose precision cannot change; start and leave it clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_evaluation_runs_in_one_autocast_region(tmp_path, fresh_accelerate_state):
    """Under bf16 the whole evaluation is one autocast region (each weight is cast once, not at every forward)."""
    seen = []

    def evaluate(model, *, epoch, step):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {}

    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=2, precision="bf16", eval_every_epochs=1)
    ids = torch.randint(3, 97, (2, 8), generator=torch.Generator().manual_seed(0))
    train(
        make_tiny_llama(97),
        ids,
        cfg,
        accelerator=build_accelerator(cfg, cpu=True),
        run=Run.open(tmp_path / "run"),
        evaluate=evaluate,
    )
    assert seen == [True, True]


def test_one_autocast_region_decodes_the_same_tokens_as_autocast_per_forward():
    """Casting the weights once per decode (outer region) or at every step (autocast inside each forward, as an
    accelerate-prepared model does) gives the same tokens and statistics."""
    model = make_tiny_llama(101, seed=3).eval()
    prompts = torch.randint(3, 101, (3, 6), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        once = greedy_decode(model, prompts, max_new_tokens=20)

    class PerForward(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        @functools.wraps(type(model).forward)
        def forward(self, *args, **kwargs):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.inner(*args, **kwargs)

    each = greedy_decode(PerForward(model), prompts, max_new_tokens=20)
    assert torch.equal(once.new_ids, each.new_ids)
    assert torch.equal(once.entropy, each.entropy) and torch.equal(once.top1_prob, each.top1_prob)


def test_decoding_stops_within_a_few_steps_once_every_row_has_ended():
    model = make_tiny_llama(101, seed=1).eval()
    prompts = torch.randint(3, 101, (2, 6), generator=torch.Generator().manual_seed(5))
    free = greedy_decode(model, prompts, max_new_tokens=60)
    eos = [int(free.new_ids[0, 2]), int(free.new_ids[1, 3])]  # both rows end within their first 4 tokens
    out = decode(model, prompts, max_new_tokens=60, eos_id=eos)
    assert out.new_ids.size(1) <= 4 + EOS_CHECK_EVERY
    ends = [
        row.tolist().index(e) if e in row.tolist() else None for row, e in zip(free.new_ids, eos, strict=True)
    ]
    for row, end in enumerate(ends):
        assert out.sequences()[row] == free.new_ids[row, : out.lengths[row]].tolist()
        assert int(out.lengths[row]) <= end  # stops at the first id that is any end-of-sequence id
        assert set(out.new_ids[row, int(out.lengths[row]) + 1 :].tolist()) <= {eos[0]}  # padded after the end


def test_decoding_statistics_equal_the_log_softmax_definition():
    from hyperfit.common.decode import _entropy_and_top1

    g = torch.Generator().manual_seed(3)
    logits = torch.cat([torch.randn(4, 300, generator=g) * 5, torch.full((1, 300), -3.0)])
    logits[0, 7] = 60.0  # a near-certain prediction: entropy ~ 0 must stay ≥ 0 and top-1 ~ 1
    entropy, top1 = _entropy_and_top1(logits)
    logprobs = torch.log_softmax(logits.double(), -1)
    assert torch.allclose(entropy.double(), -(logprobs.exp() * logprobs).sum(-1), atol=1e-5)
    assert torch.allclose(top1.double(), logprobs.exp().max(-1).values, atol=1e-6)
    assert abs(float(entropy[-1]) - float(torch.log(torch.tensor(300.0)))) < 1e-5  # uniform: log v
    assert bool((entropy >= 0).all())


def test_token_stats_equal_the_log_softmax_definition():
    """token_stats computes everything from one max, exp and sum per position; it equals the float64
    definitions, -inf logits included, and ranks ties in the target's favour."""
    from hyperfit.common.analysis import token_stats

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 5, 200, generator=g) * 4
    logits[0, 0, :50] = float("-inf")
    logits[1, 2, 7] = 80.0  # near-zero entropy
    targets = torch.randint(0, 200, (3, 5), generator=g)
    targets[2, 1] = -100
    logits[2, 3, targets[2, 3]] = logits[2, 3].max()  # the target ties the maximum: rank 0
    stats = token_stats(logits, targets, chunk_size=4)
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros((), dtype=torch.float64)).sum(-1)
    assert torch.allclose(stats["entropy"].double(), entropy, atol=2e-5)
    assert bool((stats["entropy"] >= 0).all())
    top = p.topk(5, -1).values.cumsum(-1)
    for key, k in (("top1_prob", 0), ("top3_prob", 2), ("top5_prob", 4)):
        assert torch.allclose(stats[key].double(), top[..., k], atol=1e-6)
    assert torch.equal(stats["argmax"], logits.argmax(-1))
    valid = targets >= 0
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    assert torch.allclose(stats["nll"][valid].double(), nll[valid], rtol=1e-5, atol=1e-5)
    assert bool(stats["nll"][~valid].isnan().all()) and int(stats["target_rank"][2, 1]) == -1
    ranks = (logits > logits.gather(-1, targets.clamp(min=0)[..., None])).sum(-1)
    assert torch.equal(stats["target_rank"][valid], ranks[valid]) and int(stats["target_rank"][2, 3]) == 0
