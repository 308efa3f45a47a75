"""Our batched greedy decode equals transformers' generate(do_sample=False) token for token."""

from __future__ import annotations

import torch

from hyperfit.common.decode import greedy_decode
from tests.conftest import make_tiny_gpt2, make_tiny_llama


def prompts(vocab: int, *, b: int = 3, p: int = 8) -> torch.Tensor:
    return torch.randint(3, vocab, (b, p), generator=torch.Generator().manual_seed(5))


def test_greedy_equals_generate_llama_and_gpt2():
    for model in (make_tiny_llama(101, seed=1), make_tiny_gpt2(101, seed=2, dropout=0.0)):
        model.eval()
        ids = prompts(101)
        ours = greedy_decode(model, ids, max_new_tokens=40)
        theirs = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=40,
            min_new_tokens=40,
            eos_token_id=None,
            pad_token_id=0,
        )
        assert torch.equal(ours.new_ids, theirs[:, ids.size(1) :])
        assert ours.lengths.tolist() == [40, 40, 40]


def test_eos_stops_a_row_and_is_not_counted():
    model = make_tiny_llama(101, seed=1).eval()
    ids = prompts(101)
    free = greedy_decode(model, ids, max_new_tokens=30)
    eos = int(free.new_ids[0, 5])  # the token row 0 emits at step 6 becomes the end-of-sequence id
    stopped = greedy_decode(model, ids, max_new_tokens=30, eos_id=eos)
    first = (free.new_ids[0] == eos).nonzero()[0].item()
    assert stopped.lengths[0].item() == first
    assert stopped.sequences()[0] == free.new_ids[0, :first].tolist()
    theirs = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=30,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    for row, seq in enumerate(stopped.sequences()):
        assert theirs[row, ids.size(1) : ids.size(1) + len(seq)].tolist() == seq


def test_raw_sharpness_is_reported_per_step():
    model = make_tiny_llama(101, seed=1).eval()
    out = greedy_decode(model, prompts(101), max_new_tokens=10)
    assert out.entropy.shape == (3, 10) and out.top1_prob.shape == (3, 10)
    assert bool((out.entropy > 0).all()) and bool(
        (out.entropy <= torch.log(torch.tensor(101.0)) + 1e-4).all()
    )
    assert bool((out.top1_prob > 1 / 101).all())


def test_decode_never_runs_past_the_last_position():
    """A model with exactly prompt + max_new_tokens - 1 positions (ImageGPT at full length: SOS + 1,023 inputs
    for 1,024 codes) can generate every token: the last token is never fed back."""
    from tests.conftest import make_tiny_gpt2

    model = make_tiny_gpt2(101, seed=2, dropout=0.0, n_positions=8 + 12 - 1).eval()
    out = greedy_decode(model, prompts(101), max_new_tokens=12)
    assert out.new_ids.shape == (3, 12)
    full = torch.cat([prompts(101), out.new_ids], 1)[:, :-1]  # every input the model ever needed
    assert torch.equal(model(full).logits[:, 7:].argmax(-1), out.new_ids)


def test_sampling_generator_follows_the_model_not_the_prompts(monkeypatch):
    """run_strategy builds its generator on the model's device (prompts may sit on the CPU while the model is on
    a GPU, where torch.multinomial refuses a CPU generator). Simulated with a model on the meta device."""
    from hyperfit.common import compare

    made_on: list[torch.device] = []
    real_generator = torch.Generator

    class SpyGenerator:
        def __new__(cls, device=None):
            made_on.append(torch.device(device) if device is not None else torch.device("cpu"))
            return real_generator()

    seen: dict = {}

    def spy_decode(model, prompt_ids, **kwargs):
        seen["prompt_device"] = prompt_ids.device
        b = prompt_ids.size(0)
        return type("D", (), {"sequences": lambda self: [[1]] * b})()

    model, cpu_prompts = torch.nn.Linear(2, 2, device="meta"), prompts(101)
    monkeypatch.setattr(compare.torch, "Generator", SpyGenerator)
    monkeypatch.setattr(compare, "decode", spy_decode)
    compare.run_strategy(model, cpu_prompts, compare.STRATEGIES["top_p"], max_new_tokens=4)
    assert made_on == [torch.device("meta")]
    assert seen["prompt_device"] == torch.device("meta")


def test_decode_refuses_a_generator_on_another_device():
    model = make_tiny_llama(101, seed=1).eval()
    ids = prompts(101).to("meta")
    import pytest

    with pytest.raises(ValueError, match="generator"):
        from hyperfit.common.decode import decode

        decode(model, ids, max_new_tokens=2, temperature=1.0, generator=torch.Generator())


def test_min_new_tokens_forbids_ending_early_and_short_rows_are_reported():
    """A model that always prefers the end-of-sequence id ends every row at once; min_new_tokens=5 forbids that
    for 5 steps (generate's MinNewTokensLengthLogitsProcessor), and short_rows reports both cases."""
    from hyperfit.common.evaluate import generation_stats

    model = make_tiny_llama(101, seed=1).eval()

    def prefer_eos(input_ids, scores):
        return scores.index_fill(-1, torch.tensor([7], device=scores.device), 1e4)

    eager = greedy_decode(model, prompts(101), max_new_tokens=8, eos_id=7, logits_processors=[prefer_eos])
    assert eager.lengths.tolist() == [0, 0, 0]
    held = greedy_decode(
        model, prompts(101), max_new_tokens=8, eos_id=7, logits_processors=[prefer_eos], min_new_tokens=5
    )
    assert held.lengths.tolist() == [5, 5, 5]
    assert not bool((held.new_ids[:, :5] == 7).any()) and bool((held.new_ids[:, 5] == 7).all())
    metrics, _ = generation_stats(
        model, prompts(101), max_new_tokens=8, eos_id=7, logits_processors=[prefer_eos], min_new_tokens=5
    )
    assert metrics["short_share"] == 1.0 and metrics["short_length"] == 5.0
    metrics, _ = generation_stats(model, prompts(101), max_new_tokens=8)
    assert metrics["short_share"] == 0.0 and metrics["short_length"] != metrics["short_length"]  # NaN
