"""Contrastive search, DoLa, eta and epsilon sampling against references written from the papers' formulas.

The references decode one row at a time with no KV cache (a full forward of the whole sequence every step), so
the batched, cached decoders must give the same tokens for every row.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hyperfit.common.compare import STRATEGIES, Strategy, run_strategy
from hyperfit.common.decode import decode, greedy_decode
from hyperfit.common.decoders import contrastive_decode, dola_candidate_layers, dola_decode
from tests.conftest import make_tiny_llama

VOCAB = 101
NEW = 20


def prompts(b: int = 3, p: int = 8, seed: int = 5) -> torch.Tensor:
    return torch.randint(3, VOCAB, (b, p), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama(VOCAB, seed=1).eval()


@pytest.fixture(scope="module")
def deep_model():
    """Six blocks, so DoLa's "high" bucket holds two layers (3 and 5) to choose between. A freshly initialised
    Llama's residual stream is tiny next to its final-normed one, so its early layers read through the head are
    all near-uniform and DoLa degenerates to greedy; larger embeddings and head make them distinct."""
    model = make_tiny_llama(VOCAB, seed=4, layers=6).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(30.0)
        model.lm_head.weight.mul_(20.0)
    return model


# ---- references -------------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_contrastive(model, prompt: list[int], *, n: int, alpha: float, k: int) -> list[int]:
    """SimCTG (Su et al. 2022, Eq. 5): among the k most probable next tokens v, take the argmax of
    (1 - α)·p(v|x) - α·max_j cos(h_v, h_j), h the last hidden state, j over every position of x."""
    seq = list(prompt)
    for _ in range(n):
        out = model(torch.tensor([seq]), output_hidden_states=True)
        probs = out.logits[0, -1].float().softmax(-1)
        context = out.hidden_states[-1][0].float()  # [t, d]
        best, best_score = None, -math.inf
        for p, v in zip(*(x.tolist() for x in probs.topk(k)), strict=True):
            h_v = model(torch.tensor([seq + [v]]), output_hidden_states=True).hidden_states[-1][0, -1].float()
            penalty = torch.cosine_similarity(h_v[None], context, dim=-1).max().item()
            score = (1 - alpha) * p - alpha * penalty
            if score > best_score:
                best, best_score = v, score
        seq.append(best)
    return seq[len(prompt) :]


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    p, q = log_p.exp(), log_q.exp()
    m = (p + q) / 2
    return float(0.5 * (p * (log_p - m.log())).sum() + 0.5 * (q * (log_q - m.log())).sum())


@torch.no_grad()
def reference_dola(
    model, prompt: list[int], *, n: int, layers: list[int], penalty: float = 1.0, relative_top: float = 0.1
) -> tuple[list[int], list[dict]]:
    """DoLa (Chuang et al. 2024, Eqs. 2-4): M = argmax_j JSD(q_N ‖ q_j) over the candidate layers; score
    log q_N(x) - log q_M(x) on {x : q_N(x) ≥ α·max_w q_N(w)}, -inf elsewhere; then the repetition penalty
    (CTRL: a seen id's score s becomes s·θ if s < 0 else s/θ) and argmax. Also returns, per step, each candidate
    layer's divergence and the token each layer would give."""
    head = model.get_output_embeddings()
    seq, steps = list(prompt), []
    for _ in range(n):
        out = model(torch.tensor([seq]), output_hidden_states=True)
        log_final = out.logits[0, -1].float().log_softmax(-1)
        kept = log_final >= log_final.max() + math.log(relative_top)
        tokens, divergences = {}, {}
        for j in layers:
            log_j = head(out.hidden_states[j][0, -1]).float().log_softmax(-1)
            divergences[j] = jensen_shannon(log_final, log_j)
            scores = torch.where(kept, log_final - log_j, torch.tensor(-math.inf))
            seen = torch.tensor(sorted(set(seq)))
            scores[seen] = torch.where(scores[seen] < 0, scores[seen] * penalty, scores[seen] / penalty)
            tokens[j] = int(scores.argmax())
        layer = max(layers, key=lambda j: divergences[j])
        seq.append(tokens[layer])
        steps.append({"layer": layer, "divergences": divergences, "tokens": tokens})
    return seq[len(prompt) :], steps


# ---- contrastive search -----------------------------------------------------------------------------------------


def test_contrastive_search_equals_the_reference_row_by_row(model):
    ids = prompts()
    ours = contrastive_decode(model, ids, max_new_tokens=NEW, penalty_alpha=0.6, top_k=4)
    for row, prompt in enumerate(ids.tolist()):
        assert ours.new_ids[row].tolist() == reference_contrastive(model, prompt, n=NEW, alpha=0.6, k=4)
    greedy = greedy_decode(model, ids, max_new_tokens=NEW)
    assert not torch.equal(ours.new_ids, greedy.new_ids)  # the penalty changed something: not a vacuous check
    assert torch.equal(ours.entropy[:, 0], greedy.entropy[:, 0])  # raw logits of the same first step


def test_contrastive_search_with_alpha_zero_is_greedy(model):
    ids = prompts(b=4, seed=9)
    ours = contrastive_decode(model, ids, max_new_tokens=NEW, penalty_alpha=0.0, top_k=4)
    assert torch.equal(ours.new_ids, greedy_decode(model, ids, max_new_tokens=NEW).new_ids)


def test_contrastive_search_never_picks_a_forbidden_candidate(model):
    """Only two tokens allowed but k = 4: the two forbidden candidates (probability 0) are never chosen."""
    allowed = torch.tensor([10, 20])

    def only_two(input_ids, scores):
        mask = torch.full_like(scores, float("-inf"))
        return mask.index_fill(-1, allowed, 0.0) + scores

    out = contrastive_decode(
        model, prompts(), max_new_tokens=12, penalty_alpha=0.9, top_k=4, logits_processors=[only_two]
    )
    assert set(out.new_ids.flatten().tolist()) <= {10, 20}


# ---- DoLa -------------------------------------------------------------------------------------------------------


def test_dola_candidate_layers_follow_transformers_4_buckets():
    assert dola_candidate_layers(32, "high", tied_embeddings=False) == list(range(16, 32, 2))
    assert dola_candidate_layers(48, "high", tied_embeddings=False) == list(range(28, 48, 2))
    assert dola_candidate_layers(32, "low", tied_embeddings=False) == list(range(0, 16, 2))
    assert dola_candidate_layers(32, "low", tied_embeddings=True) == list(range(2, 16, 2))
    assert dola_candidate_layers(48, "low", tied_embeddings=True) == list(range(2, 20, 2))
    assert dola_candidate_layers(2, "low", tied_embeddings=True) == [1]
    assert dola_candidate_layers(6, "high", tied_embeddings=False) == [3, 5]
    assert dola_candidate_layers(6, [1, 4, 9], tied_embeddings=False) == [1, 4]
    with pytest.raises(ValueError, match="'low', 'high'"):
        dola_candidate_layers(6, "middle", tied_embeddings=False)


def test_dola_equals_the_reference_with_rows_choosing_different_layers(deep_model):
    """Batched DoLa chooses the premature layer per row: every row equals its own single-row reference, in a batch
    where rows choose different layers at the same step, and where one layer for the whole batch (transformers
    4.x took the one of largest batch-mean divergence) would have changed a token."""
    from transformers import RepetitionPenaltyLogitsProcessor

    ids = prompts(b=4, seed=7)
    ours = dola_decode(
        deep_model,
        ids,
        max_new_tokens=NEW,
        layers="high",
        logits_processors=[RepetitionPenaltyLogitsProcessor(1.2)],
    )
    refs = [reference_dola(deep_model, p, n=NEW, layers=[3, 5], penalty=1.2) for p in ids.tolist()]
    for row, (tokens, _) in enumerate(refs):
        assert ours.new_ids[row].tolist() == tokens
    per_step = list(zip(*(steps for _, steps in refs), strict=True))
    assert any(len({s["layer"] for s in step}) > 1 for step in per_step)
    batch_layer = [max([3, 5], key=lambda j: sum(s["divergences"][j] for s in step)) for step in per_step]
    assert any(
        s["tokens"][layer] != s["tokens"][s["layer"]]
        for step, layer in zip(per_step, batch_layer, strict=True)
        for s in step
    )
    assert not torch.equal(ours.new_ids, greedy_decode(deep_model, ids, max_new_tokens=NEW).new_ids)


def test_dola_with_one_candidate_layer_equals_the_reference(model):
    ids = prompts()
    ours = dola_decode(model, ids, max_new_tokens=NEW, layers=[1])
    for row, prompt in enumerate(ids.tolist()):
        assert ours.new_ids[row].tolist() == reference_dola(model, prompt, n=NEW, layers=[1])[0]


# ---- both: end of sequence, min_new_tokens, raw sharpness ---------------------------------------------------------


def decoders(model):
    return {
        "contrastive": lambda ids, **kw: contrastive_decode(model, ids, penalty_alpha=0.6, top_k=4, **kw),
        "dola": lambda ids, **kw: dola_decode(model, ids, layers="high", **kw),
    }


@pytest.mark.parametrize("name", ["contrastive", "dola"])
def test_eos_stops_a_row_and_is_not_counted(deep_model, name):
    run = decoders(deep_model)[name]
    ids = prompts()
    free = run(ids, max_new_tokens=NEW)
    eos = int(free.new_ids[0, 5])
    stopped = run(ids, max_new_tokens=NEW, eos_id=eos)
    for row in range(ids.size(0)):
        hits = (free.new_ids[row] == eos).nonzero()
        first = int(hits[0]) if len(hits) else NEW
        assert stopped.lengths[row].item() == first
        assert stopped.sequences()[row] == free.new_ids[row, :first].tolist()
        assert bool((stopped.new_ids[row, first:] == eos).all())


@pytest.mark.parametrize("name", ["contrastive", "dola"])
def test_min_new_tokens_forbids_ending_early(deep_model, name):
    run = decoders(deep_model)[name]

    def prefer_eos(input_ids, scores):
        return scores.index_fill(-1, torch.tensor([7]), 1e4)

    eager = run(prompts(), max_new_tokens=8, eos_id=7, logits_processors=[prefer_eos])
    assert eager.lengths.tolist() == [0, 0, 0]
    held = run(prompts(), max_new_tokens=8, eos_id=7, logits_processors=[prefer_eos], min_new_tokens=5)
    assert held.lengths.tolist() == [5, 5, 5]
    assert not bool((held.new_ids[:, :5] == 7).any()) and bool((held.new_ids[:, 5] == 7).all())


@pytest.mark.parametrize("name", ["contrastive", "dola"])
def test_sharpness_is_that_of_the_raw_final_logits(deep_model, name):
    """entropy/top1 describe the model's own next-token distribution along the chosen path, as a plain forward of
    that path gives it (not the contrast scores)."""
    ids = prompts()
    out = decoders(deep_model)[name](ids, max_new_tokens=10)
    logits = deep_model(torch.cat([ids, out.new_ids], 1)).logits[:, ids.size(1) - 1 : -1].float()
    probs = logits.softmax(-1)
    torch.testing.assert_close(out.entropy, -(probs * logits.log_softmax(-1)).sum(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.top1_prob, probs.amax(-1), atol=1e-5, rtol=1e-4)


# ---- eta and epsilon --------------------------------------------------------------------------------------------


def test_eta_and_epsilon_keep_what_the_paper_keeps():
    """Hewitt et al. 2022: ε-sampling keeps p ≥ ε; η-sampling keeps p ≥ η = min(ε, √ε·exp(-h)), h the entropy in
    nats, on the known distribution p = (.5, .3, .15, .04, .01), h = 1.1671 (cutoffs away from every p, so that
    float rounding at a boundary cannot decide)."""
    p = [0.5, 0.3, 0.15, 0.04, 0.01]
    logits = torch.tensor([p]).log()
    h = -sum(x * math.log(x) for x in p)

    def kept(strategy: Strategy) -> list[bool]:
        scores = logits
        for warper in strategy.warpers():
            scores = warper(torch.zeros(1, 1, dtype=torch.long), scores)
        return torch.isfinite(scores[0]).tolist()

    for eps in (0.02, 0.1, 0.2, 0.35):
        assert kept(Strategy("e", temperature=1.0, epsilon=eps)) == [x >= eps for x in p]
        eta = min(eps, math.sqrt(eps) * math.exp(-h))
        assert kept(Strategy("e", temperature=1.0, eta=eps)) == [x >= eta for x in p]
    # ε = .2: √.2·e^-h = .1392 < .2, so η keeps .15 where ε-sampling drops it (the entropy-dependent bar).
    assert kept(Strategy("e", temperature=1.0, eta=0.2)) == [True, True, True, False, False]
    assert kept(Strategy("e", temperature=1.0, epsilon=0.2)) == [True, True, False, False, False]


@pytest.mark.parametrize("field", ["eta", "epsilon"])
def test_eta_and_epsilon_sampling_equal_generate_with_the_same_seed(deep_model, field):
    """On the model with a scaled-up head, whose distributions are peaked enough for a cutoff to bite (η can never
    truncate a near-uniform distribution: there √ε·exp(-h) ≈ √ε/v is below every probability)."""
    model, ids = deep_model, prompts()
    cutoff = 0.02
    strategy = Strategy(field, temperature=1.0, **{field: cutoff})
    ours = decode(
        model,
        ids,
        max_new_tokens=NEW,
        temperature=1.0,
        warpers=strategy.warpers(),
        generator=torch.Generator().manual_seed(3),
    )
    torch.manual_seed(3)
    theirs = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        eos_token_id=None,
        pad_token_id=0,
        **{f"{field}_cutoff": cutoff},
    )
    assert torch.equal(ours.new_ids, theirs[:, ids.size(1) :])
    # The cutoff bit: without it the same seed draws other tokens.
    plain = decode(
        model, ids, max_new_tokens=NEW, temperature=1.0, generator=torch.Generator().manual_seed(3)
    )
    assert not torch.equal(ours.new_ids, plain.new_ids)


# ---- the strategies ---------------------------------------------------------------------------------------------


def test_registered_strategies_dispatch_to_their_decoders(deep_model):
    from transformers import RepetitionPenaltyLogitsProcessor

    ids = prompts()
    seqs, facts = run_strategy(deep_model, ids, STRATEGIES["contrastive"], max_new_tokens=12)
    assert (
        seqs == contrastive_decode(deep_model, ids, max_new_tokens=12, penalty_alpha=0.6, top_k=4).sequences()
    )
    assert facts["penalty_alpha"] == 0.6 and facts["top_k"] == 4
    seqs, facts = run_strategy(deep_model, ids, STRATEGIES["dola"], max_new_tokens=12)
    penalty = [RepetitionPenaltyLogitsProcessor(1.2)]
    assert seqs == dola_decode(deep_model, ids, max_new_tokens=12, logits_processors=penalty).sequences()
    assert facts["dola_layers"] == "high"
    for name in ("eta", "epsilon"):
        a, _ = run_strategy(deep_model, ids, STRATEGIES[name], max_new_tokens=12, seed=1)
        assert a == run_strategy(deep_model, ids, STRATEGIES[name], max_new_tokens=12, seed=1)[0]


def test_strategy_rejects_contradictions():
    with pytest.raises(ValueError, match="choose one decoder"):
        Strategy("x", penalty_alpha=0.6, top_k=4, dola_layers="high")
    with pytest.raises(ValueError, match="temperature=0"):
        Strategy("x", temperature=0.7, penalty_alpha=0.6, top_k=4)
    with pytest.raises(ValueError, match="needs top_k"):
        Strategy("x", penalty_alpha=0.6)
    with pytest.raises(ValueError, match="eta is a probability"):
        Strategy("x", temperature=1.0, eta=1.5)
    assert dataclasses.replace(STRATEGIES["contrastive"], penalty_alpha=0.0).penalty_alpha == 0.0
