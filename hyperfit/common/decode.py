"""Batched decoding over any causal model that maps ids to logits, with a KV cache.

Greedy decoding equals ``model.generate(do_sample=False)`` token for token (tested). Logits processors use the
Hugging Face protocol ``processor(input_ids[b, t], scores[b, v]) -> scores``, so the same citation blocker or
repetition penalty works here and in ``generate``. Sharpness is measured on the *raw* logits, before processors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Decoded:
    """Output of one batched decode.

    ``new_ids[b, n]`` holds the generated ids (after an end-of-sequence id a row is padded with it);
    ``lengths[b]`` counts the real generated tokens of each row, the end-of-sequence id excluded;
    ``entropy[b, n]`` (nats) and ``top1_prob[b, n]`` describe the raw next-token distribution at each step.
    """

    new_ids: torch.Tensor
    lengths: torch.Tensor
    entropy: torch.Tensor
    top1_prob: torch.Tensor

    def sequences(self) -> list[list[int]]:
        """Generated ids per row, cut at the end-of-sequence id (never counted as content)."""
        return [row[: int(n)].tolist() for row, n in zip(self.new_ids, self.lengths, strict=True)]


# Rows are checked for having all finished only every this many steps: each check is a host round trip (a
# device sync on GPUs), and a finished row is only padded meanwhile, so the tokens are the same.
EOS_CHECK_EVERY = 8


def _keeps_last_logits_only(model: torch.nn.Module) -> dict:
    """``{"logits_to_keep": 1}`` for models that can skip the vocabulary projection of all but the last position
    (most Hugging Face causal LMs): the prompt's other logits are never used."""
    return (
        {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(type(model).forward).parameters else {}
    )


def _entropy_and_top1(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and largest probability of softmax(``logits[b, v]``) in fewer passes over the vocabulary than
    log_softmax + exp + product: with y = x - max x ≤ 0, z = exp(y) and s = Σ z ≥ 1, entropy = log s - Σ z·y / s
    (two non-negative terms, so no cancellation near zero entropy) and the top-1 probability is 1 / s."""
    y = logits - logits.max(-1, keepdim=True).values
    z = y.exp()
    s = z.sum(-1)
    return s.log() - (z * y).sum(-1) / s, s.reciprocal()


def _cache_kwargs(out) -> dict:
    """Feed the KV cache back: transformers ≥ 5.2x calls it ``cache``, earlier releases ``past_key_values``."""
    if getattr(out, "cache", None) is not None:
        return {"cache": out.cache}
    return {"past_key_values": out.past_key_values}


def _cache_of(out):
    """The KV cache object a forward returned (under either name, as in ``_cache_kwargs``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _check_prompt_ids(prompt_ids: torch.Tensor) -> None:
    if prompt_ids.dim() != 2 or prompt_ids.size(1) == 0:
        raise ValueError(
            f"prompt_ids must be a non-empty LongTensor[b, p], got shape {tuple(prompt_ids.shape)}."
        )


def _eos_tensor(eos_id: int | Sequence[int] | None, device: torch.device) -> torch.Tensor:
    """``eos_id`` as a LongTensor[n] on ``device`` (n = 0 when there is none)."""
    eos = torch.tensor([] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id))
    return eos.to(device, torch.long)


@torch.no_grad()
def decode(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int | Sequence[int] | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    temperature: float = 0.0,
    warpers: Sequence[LogitsProcessor] = (),
    generator: torch.Generator | None = None,
    min_new_tokens: int = 0,
) -> Decoded:
    """Continue every row of ``prompt_ids[b, p]`` (equal-length prompts, no padding) by ``max_new_tokens``.

    Order per step, as in ``generate``: raw logits → ``logits_processors`` (repetition penalty, citation
    blocker) → if ``temperature > 0``: divide by it, apply ``warpers`` (top-k, top-p, min-p, typical) and sample
    with ``generator``; ``temperature == 0`` is greedy (argmax of the processed scores). A row stops at any id in
    ``eos_id``, but not before ``min_new_tokens`` tokens: until then the end-of-sequence ids are forbidden (as
    ``MinNewTokensLengthLogitsProcessor`` does in ``generate``), so a short row cannot inflate TTR.
    """
    _check_prompt_ids(prompt_ids)
    if generator is not None and generator.device.type != prompt_ids.device.type:
        raise ValueError(
            f"the sampling generator is on {generator.device} but the prompts and model are on "
            f"{prompt_ids.device}; build it with torch.Generator(device=<the model's device>)."
        )
    eos = _eos_tensor(eos_id, prompt_ids.device)
    b = prompt_ids.size(0)
    ids = prompt_ids
    finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
    lengths = torch.zeros(b, dtype=torch.long, device=ids.device)
    entropies, top1s = [], []
    out = model(input_ids=ids, use_cache=True, **_keeps_last_logits_only(model))
    for step in range(max_new_tokens):
        raw = out.logits[:, -1, :].float()
        entropy, top1 = _entropy_and_top1(raw)
        entropies.append(entropy)
        top1s.append(top1)
        scores = raw
        for processor in logits_processors:
            scores = processor(ids, scores)
        if step < min_new_tokens and eos.numel():
            scores = scores.index_fill(-1, eos, float("-inf"))
        if temperature == 0.0:
            next_ids = scores.argmax(dim=-1)
        else:
            scores = scores / temperature
            for warper in warpers:
                scores = warper(ids, scores)
            next_ids = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(-1)
        if eos.numel():
            pad = eos[0]
            next_ids = torch.where(finished, pad, next_ids)
            finished = finished | torch.isin(next_ids, eos)
        lengths += (~finished).long()
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        # No forward after the last token: its logits are never used, and for a model whose positions end
        # exactly at prompt + max_new_tokens - 1 (a start token + 1,023 inputs) it would index past the table.
        if step == max_new_tokens - 1:
            break
        if eos.numel() and step % EOS_CHECK_EVERY == EOS_CHECK_EVERY - 1 and bool(finished.all()):
            break
        out = model(input_ids=next_ids[:, None], use_cache=True, **_cache_kwargs(out))
    new_ids = ids[:, prompt_ids.size(1) :]
    return Decoded(
        new_ids=new_ids, lengths=lengths, entropy=torch.stack(entropies, 1), top1_prob=torch.stack(top1s, 1)
    )


def greedy_decode(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int | Sequence[int] | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    min_new_tokens: int = 0,
) -> Decoded:
    """Greedy continuation (the paper's decoding for original and hyperfitted models)."""
    return decode(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        logits_processors=logits_processors,
        min_new_tokens=min_new_tokens,
    )
