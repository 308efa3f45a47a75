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
