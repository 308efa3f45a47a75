"""Contrastive search (Su et al. 2022, SimCTG) and DoLa (Chuang et al. 2024), batched, with a KV cache.

transformers ≥ 5 moved both out of ``generate`` (to hub ``custom_generate`` repos); these follow the papers and
transformers 4.46's ``_contrastive_search`` / ``_dola_decoding``, and each docstring says where they differ. Same
contract as ``decode.decode``: equal-length prompts, Hugging Face logits processors, ``Decoded`` with the
entropy and top-1 probability of the *raw* final-layer logits, ``eos_id`` and ``min_new_tokens`` as there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hyperfit.common.decode import (
    EOS_CHECK_EVERY,
    Decoded,
    LogitsProcessor,
    _cache_kwargs,
    _cache_of,
    _check_prompt_ids,
    _entropy_and_top1,
    _eos_tensor,
    _keeps_last_logits_only,
)


@torch.no_grad()
def contrastive_decode(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    penalty_alpha: float,
    top_k: int,
    eos_id: int | Sequence[int] | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    min_new_tokens: int = 0,
) -> Decoded:
    """Contrastive search: continue every row of ``prompt_ids[b, p]`` by ``max_new_tokens``.

    Each step the ``top_k`` most probable tokens of p(·|x) = softmax(processed logits) over the whole vocabulary
    are candidates, and the one chosen maximises (1 - α)·p(v|x) - α·max_j cos(h_v, h_j), where h is the model's
    last hidden state (after the final norm), h_v that of candidate v appended to x, and j runs over every
    position of x, prompt included (SimCTG Eq. 5). α = 0 is greedy. All b·k candidates go through the model in
    one forward of single tokens on the KV cache repeated k times per row; the chosen rows of that cache, with
    their hidden states and next-token logits, carry over, so a token costs one forward of b·k tokens.

    As in transformers 4.x, processors (repetition penalty, citation blocker) act before the softmax. Unlike it, a
    candidate of probability 0 (forbidden by a processor, or the end-of-sequence id before ``min_new_tokens``) is
    never chosen, even where fewer than k tokens remain allowed. The last token is fed to the model too (to
    score it), so the model needs p + ``max_new_tokens`` positions.
    """
    _check_prompt_ids(prompt_ids)
    if top_k < 1:
        raise ValueError(f"contrastive search needs top_k >= 1 candidates, got {top_k}.")
    if not 0.0 <= penalty_alpha <= 1.0:
        raise ValueError(
            f"penalty_alpha weighs probability against similarity in [0, 1], got {penalty_alpha}."
        )
    eos = _eos_tensor(eos_id, prompt_ids.device)
    b, k = prompt_ids.size(0), top_k
    rows = torch.arange(b, device=prompt_ids.device)
    ids = prompt_ids
    finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
    lengths = torch.zeros(b, dtype=torch.long, device=ids.device)
    entropies, top1s = [], []
    out = model(input_ids=ids, use_cache=True, output_hidden_states=True, **_keeps_last_logits_only(model))
    # Unit vectors once, so each step's cosines are one batched product; float32 even under bf16 autocast.
    context = F.normalize(out.hidden_states[-1].float(), dim=-1)  # [b, t, d]
    logits = out.logits[:, -1, :]
    # Row i's cache becomes rows i·k … i·k + k - 1, one per candidate.
    _cache_of(out).reorder_cache(rows.repeat_interleave(k))
    for step in range(max_new_tokens):
        raw = logits.float()
        entropy, top1 = _entropy_and_top1(raw)
        entropies.append(entropy)
        top1s.append(top1)
        scores = raw
        for processor in logits_processors:
            scores = processor(ids, scores)
        if step < min_new_tokens and eos.numel():
            scores = scores.index_fill(-1, eos, float("-inf"))
        top_probs, top_ids = torch.softmax(scores, dim=-1).topk(k, dim=-1)  # [b, k]
        out = model(
            input_ids=top_ids.reshape(b * k, 1),
            use_cache=True,
            output_hidden_states=True,
            **_cache_kwargs(out),
        )
        candidates = F.normalize(out.hidden_states[-1][:, -1, :].float(), dim=-1).view(b, k, -1)
        penalty = torch.einsum("bkd,btd->bkt", candidates, context).amax(-1)
        score = (1.0 - penalty_alpha) * top_probs - penalty_alpha * penalty
        chosen = score.masked_fill(top_probs == 0, float("-inf")).argmax(-1)  # [b]
        next_ids = top_ids[rows, chosen]
        if eos.numel():
            next_ids = torch.where(finished, eos[0], next_ids)
            finished = finished | torch.isin(next_ids, eos)
        lengths += (~finished).long()
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        if step == max_new_tokens - 1:
            break
        if eos.numel() and step % EOS_CHECK_EVERY == EOS_CHECK_EVERY - 1 and bool(finished.all()):
            break
        context = torch.cat([context, candidates[rows, chosen][:, None]], dim=1)
        logits = out.logits[:, -1, :].view(b, k, -1)[rows, chosen]
        # Keep each row's chosen candidate and repeat it k times for the next step's candidates: one gather.
        _cache_of(out).reorder_cache((rows * k + chosen).repeat_interleave(k))
    return Decoded(
        new_ids=ids[:, prompt_ids.size(1) :],
        lengths=lengths,
        entropy=torch.stack(entropies, 1),
        top1_prob=torch.stack(top1s, 1),
    )


def dola_candidate_layers(
    num_layers: int, layers: str | Sequence[int], *, tied_embeddings: bool
) -> list[int]:
    """The premature layers DoLa chooses among, as transformers 4.x defines them, for a model of ``num_layers``
    blocks. Index j is ``hidden_states[j]``, the output of block j (0: the embeddings).

    ``"low"``: every second layer of the lower half, [s, N/2) (below layer 20 for N > 40); ``"high"``: every
    second layer of the upper half, [N/2, N) (the last 20 for N > 40). With tied embeddings the lowest layers are
    skipped (s = 2, or 1 for N = 2), since the embedding matrix read back through itself favours the input token.
    A sequence names the layers itself (those ≥ N are dropped).
    """
    if not isinstance(layers, str):
        chosen = [int(j) for j in layers if int(j) < num_layers]
        if not chosen:
            raise ValueError(f"dola layers {list(layers)} name no layer below the model's {num_layers}.")
        return chosen
    start = 0 if not tied_embeddings else 2 if num_layers > 2 else 1 if num_layers == 2 else 0
    half = num_layers // 2
    if layers == "low":
        if start == half:
            return [start]
        return list(range(start, half, 2)) if num_layers <= 40 else list(range(start, 20, 2))
    if layers == "high":
        return (
            list(range(half, num_layers, 2))
            if num_layers <= 40
            else list(range(num_layers - 20, num_layers, 2))
        )
    raise ValueError(f"dola layers must be 'low', 'high' or a list of layer indices, got {layers!r}.")


def _js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence (nats) between softmax(p_logits) and softmax(q_logits) over the last axis:
    ½ KL(P‖M) + ½ KL(Q‖M) with M = (P + Q) / 2."""
    log_p, log_q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    return 0.5 * ((log_p.exp() * (log_p - log_m)).sum(-1) + (log_q.exp() * (log_q - log_m)).sum(-1))


def _dola_scores(
    final: torch.Tensor, premature: torch.Tensor, *, relative_top: float, forbid: torch.Tensor | None
) -> torch.Tensor:
    """DoLa's next-token scores from ``final[b, v]`` and the candidate layers' ``premature[l, b, v]`` logits.

    Each row contrasts with its own layer M = argmax_j JSD(q_N ‖ q_j); on the head {x : q_N(x) ≥ relative_top ·
    max q_N} the score is log q_N(x) - log q_M(x), elsewhere -inf. ``forbid`` ids (the end-of-sequence id before
    ``min_new_tokens``) are dropped before the head's threshold is set, so the head never holds only them; 4.x
    forbade them after the contrast, and a head of only forbidden ids left every score -inf.
    """
    if premature.size(0) == 1:
        base = premature[0]
    else:
        # Per row: transformers 4.x averaged the divergence over the batch and gave every row one layer, so a
        # row's tokens depended on the rows decoded beside it.
        layer = _js_divergence(final[None], premature).argmax(0)  # [b]
        base = premature[layer, torch.arange(final.size(0), device=final.device)]
    log_final, log_base = final.log_softmax(-1), base.log_softmax(-1)
    if forbid is not None:
        # Not renormalised: the other tokens' scores stay those transformers 4.x gives them.
        log_final = log_final.index_fill(-1, forbid, float("-inf"))
    head = log_final >= log_final.amax(-1, keepdim=True) + math.log(relative_top)
    return (log_final - log_base).masked_fill(~head, float("-inf"))


@torch.no_grad()
def dola_decode(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    layers: str | Sequence[int] = "high",
    relative_top: float = 0.1,
    eos_id: int | Sequence[int] | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    min_new_tokens: int = 0,
) -> Decoded:
    """DoLa, decoding by contrasting layers, then greedy: continue every row of ``prompt_ids[b, p]``.

    Each step the final layer's next-token distribution q_N is contrasted with the premature layer q_M (among
    ``dola_candidate_layers``) of largest Jensen–Shannon divergence from it, chosen per row; the scores are
    log q_N - log q_M on the tokens with q_N ≥ ``relative_top`` · max q_N and -inf elsewhere (``_dola_scores``);
    the processors (the authors recommend repetition penalty 1.2) act on those scores, then argmax.

    A premature layer's logits are the output head applied to its hidden state without the final norm, as in the
    authors' code and transformers 4.x (an open question upstream, voidism/DoLa#9); we keep it so that the method
    is the one published. Two departures from transformers 4.x, both to follow the paper's definition: the layer
    is chosen per row, where 4.x averaged the divergence over the batch (so a row's tokens depended on its batch);
    and the divergence is the paper's JSD, ½ KL(q_N‖m) + ½ KL(q_j‖m), where 4.x's ``F.kl_div(log q, m)``
    computes ½ KL(m‖q_N) + ½ KL(m‖q_j), which can rank layers differently.
    """
    _check_prompt_ids(prompt_ids)
    if not 0.0 < relative_top <= 1.0:
        raise ValueError(f"relative_top is a share of the top probability in (0, 1], got {relative_top}.")
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(
            f"DoLa reads premature layers through the output head; {type(model).__name__} has none."
        )
    config = model.config.get_text_config()
    candidates = dola_candidate_layers(
        config.num_hidden_layers, layers, tied_embeddings=bool(getattr(config, "tie_word_embeddings", False))
    )
    eos = _eos_tensor(eos_id, prompt_ids.device)
    b = prompt_ids.size(0)
    ids = prompt_ids
    finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
    lengths = torch.zeros(b, dtype=torch.long, device=ids.device)
    entropies, top1s = [], []
    out = model(input_ids=ids, use_cache=True, output_hidden_states=True, **_keeps_last_logits_only(model))
    for step in range(max_new_tokens):
        raw = out.logits[:, -1, :].float()
        entropy, top1 = _entropy_and_top1(raw)
        entropies.append(entropy)
        top1s.append(top1)
        premature = torch.stack([head(out.hidden_states[j][:, -1, :]) for j in candidates]).float()
        forbid = eos if step < min_new_tokens and eos.numel() else None
        scores = _dola_scores(raw, premature, relative_top=relative_top, forbid=forbid)
        for processor in logits_processors:
            scores = processor(ids, scores)
        if forbid is not None:
            scores = scores.index_fill(-1, forbid, float("-inf"))
        next_ids = scores.argmax(dim=-1)
        if eos.numel():
            next_ids = torch.where(finished, eos[0], next_ids)
            finished = finished | torch.isin(next_ids, eos)
        lengths += (~finished).long()
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        if step == max_new_tokens - 1:
            break
        if eos.numel() and step % EOS_CHECK_EVERY == EOS_CHECK_EVERY - 1 and bool(finished.all()):
            break
        out = model(
            input_ids=next_ids[:, None], use_cache=True, output_hidden_states=True, **_cache_kwargs(out)
        )
    return Decoded(
        new_ids=ids[:, prompt_ids.size(1) :],
        lengths=lengths,
        entropy=torch.stack(entropies, 1),
        top1_prob=torch.stack(top1s, 1),
    )
