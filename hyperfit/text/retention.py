"""What hyperfitting costs elsewhere: teacher-forced perplexity on held-out blocks of every bundled domain, and an
offline cloze probe built from the bundled corpora (no hub needed). Every figure keeps its per-block / per-item
values so intervals over blocks / items can be attached (``hyperfit.common.stats``).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import torch

from hyperfit.common import stats
from hyperfit.common.evaluate import collect_token_stats
from hyperfit.common.runs import HyperfitError
from hyperfit.text.data import BUNDLED, TextDataConfig, load_documents

# Words never used as cloze targets: function words carry no knowledge and are guessable from syntax alone.
STOPWORDS = frozenset(
    """about above after again against also because been before being below between both could does doing down
    during each from further have having here into itself just more most other over same should some such than
    that their theirs them then there these they this those through under until very were what when where which
    while whom will with would your yours said says year years told""".split()
)


def domain_blocks(
    tokenizer,
    *,
    n_blocks: int,
    block_len: int,
    seed: int = 0,
    sources: tuple[str, ...] = BUNDLED,
    exclude: dict[str, list[int]] | None = None,
) -> dict[str, dict]:
    """``{source: {"ids": LongTensor[n, block_len], "doc_ids": [...]}}``: the first ``block_len`` tokens of
    ``n_blocks`` documents of each bundled corpus, visited in a seeded order, skipping ``exclude[source]``
    (e.g. a run's training documents) and documents shorter than ``block_len``. A corpus that cannot be
    loaded (gensim missing) or is too small is left out."""
    out: dict[str, dict] = {}
    for source in sources:
        try:
            docs, _ = load_documents(TextDataConfig(data=source))
        except HyperfitError:
            continue
        skip = set((exclude or {}).get(source, []))
        order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
        chosen, doc_ids = [], []
        for index in order:
            if index in skip:
                continue
            ids = tokenizer(docs[index], add_special_tokens=True)["input_ids"]
            if len(ids) >= block_len:
                chosen.append(ids[:block_len])
                doc_ids.append(index)
                if len(chosen) == n_blocks:
                    break
        if len(chosen) == n_blocks:
            out[source] = {"ids": torch.tensor(chosen, dtype=torch.long), "doc_ids": doc_ids}
    return out


@torch.no_grad()
def block_perplexity(model, blocks: torch.Tensor, *, batch_size: int = 16) -> dict:
    """Teacher-forced ``loss`` (mean NLL, nats) and ``perplexity`` over every predicted token of ``blocks[n, t]``,
    with ``perplexity_ci`` (bootstrap over blocks) and the per-block mean NLL ``block_loss`` (for paired tests)."""
    return perplexity_from_nll(collect_token_stats(model, blocks, batch_size=batch_size)["nll"], blocks)


def perplexity_from_nll(nll: torch.Tensor, blocks: torch.Tensor) -> dict:
    """:func:`block_perplexity` from the per-position NLL already collected on ``blocks[n, t]`` (flattened in
    block order, as :func:`collect_token_stats` gives it)."""
    nll = nll.double().view(blocks.size(0), -1)
    per_block = nll.mean(-1).tolist()
    loss = float(nll.mean())
    tokens = [nll.size(1)] * nll.size(0)
    sums = nll.sum(-1).tolist()
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "perplexity_ci": list(stats.ratio_ci(sums, tokens, transform=math.exp)),
        "block_loss": per_block,
    }


def perplexity_change(before: dict, after: dict) -> dict:
    """After vs before on the same blocks: perplexity ratio ``exp(Δ mean NLL)`` with its paired bootstrap
    interval and sign-flip p-value over blocks (every block has the same number of tokens, so the ratio of
    corpus perplexities is exactly the exp of the mean per-block NLL difference)."""
    diff = stats.paired_difference(after["block_loss"], before["block_loss"])
    return {
        "ratio": math.exp(diff["diff"]),
        "ratio_ci": [math.exp(diff["ci"][0]), math.exp(diff["ci"][1])],
        "loss_diff": diff["diff"],
        "p": diff["p"],
        "n_blocks": diff["n"],
    }


def domain_perplexities(model, blocks: dict[str, dict], *, batch_size: int = 16) -> dict[str, dict]:
    """:func:`block_perplexity` of ``model`` on each domain's blocks (from :func:`domain_blocks`)."""
    return {source: block_perplexity(model, b["ids"], batch_size=batch_size) for source, b in blocks.items()}


def retention_summary(before: dict[str, dict], after: dict[str, dict], *, trained_on: str) -> dict:
    """``{domain: {before, after, before_ci, after_ci, ratio, ratio_ci, p, trained_on}}`` for a summary.json."""
    out = {}
    for source in before:
        change = perplexity_change(before[source], after[source])
        out[source] = {
            "trained_on": source == trained_on,
            "perplexity_before": before[source]["perplexity"],
            "perplexity_before_ci": before[source]["perplexity_ci"],
            "perplexity_after": after[source]["perplexity"],
            "perplexity_after_ci": after[source]["perplexity_ci"],
            **change,
            "block_loss_before": before[source]["block_loss"],
            "block_loss_after": after[source]["block_loss"],
        }
    return out


# ------------------------------------------------------------------------------------------------------------
# Offline cloze probe
# ------------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z][a-z]{4,}")


def cloze_items(
    documents: list[str],
    *,
    n_items: int,
    seed: int = 0,
    min_gap_words: int = 20,
    context_words: int = 80,
    skip_docs: set[int] | None = None,
) -> list[dict]:
    """A fixed, seeded set of cloze items, LAMBADA-style: the context is the text before a content word that
    already occurred at least ``min_gap_words`` words earlier in the same document (so it is recoverable from the
    context), the target is that word (with its leading space). Content word: letters only, at least 5 of them,
    not a stopword. At most one item per document; documents in ``skip_docs`` are not used.

    Each item: ``{"doc": index, "context": text (the last ``context_words`` words), "target": " word"}``.
    """
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist()
    items = []
    for index in order:
        if skip_docs and index in skip_docs:
            continue
        words = documents[index].split()
        seen: dict[str, int] = {}
        for position, word in enumerate(words):
            if _WORD.fullmatch(word) and word.lower() not in STOPWORDS:
                first = seen.setdefault(word, position)
                if position - first >= min_gap_words and position >= context_words // 2:
                    context = " ".join(words[max(0, position - context_words) : position])
                    items.append({"doc": index, "context": context, "target": " " + word})
                    break
        if len(items) == n_items:
            break
    return items


@torch.no_grad()
def score_cloze(model, tokenizer, items: list[dict], *, batch_size: int = 16) -> dict:
    """Per item: ``logprob`` = log P(target tokens | context) in nats (sum over the target's tokens) and ``hit`` =
    every target token is the argmax under teacher forcing (what greedy decoding would write). Returns the
    means with bootstrap intervals over items and the per-item lists."""
    device = next(model.parameters()).device
    logprobs, hits = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        encoded = [
            (
                tokenizer(item["context"], add_special_tokens=True)["input_ids"],
                tokenizer(item["target"], add_special_tokens=False)["input_ids"],
            )
            for item in chunk
        ]
        width = max(len(c) + len(t) for c, t in encoded)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Left padding with an attention mask keeps every target at the right end of its row.
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (context, target) in enumerate(encoded):
            seq = context + target
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        # Positions count from each row's first real token, so absolute-position models (GPT-2) see no offset.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)
        ).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for row, (_, target) in enumerate(encoded):
            k = len(target)
            at = torch.arange(width - k - 1, width - 1, device=device)
            wanted = torch.tensor(target, device=device)
            logprobs.append(float(logp[row, at, wanted].sum()))
            hits.append(float(bool((logits[row, at].argmax(-1) == wanted).all())))
    return {
        "n_items": len(items),
        "accuracy": sum(hits) / len(hits),
        "accuracy_ci": list(stats.mean_ci(hits)),
        "mean_logprob": sum(logprobs) / len(logprobs),
        "mean_logprob_ci": list(stats.mean_ci(logprobs)),
        "hits": hits,
        "logprobs": logprobs,
    }


def cloze_source_items(
    source: str, *, n_items: int, seed: int = 0, skip_docs: set[int] | None = None
) -> list[dict]:
    """:func:`cloze_items` from a bundled corpus (``lee`` or ``wiki``)."""
    docs, _ = load_documents(replace(TextDataConfig(), data=source))
    return cloze_items(docs, n_items=n_items, seed=seed, skip_docs=skip_docs)


def run_domain_blocks(
    tokenizer, *, source: str, eval_ids: torch.Tensor, domains: list[str], seed: int = 0
) -> dict[str, dict]:
    """The blocks a fit-text run is scored on for retention: its own held-out blocks for the domain it trained
    on, and as many blocks of the same length from each other corpus in ``domains`` (gensim missing: only its
    own)."""
    others = tuple(s for s in domains if s != source)
    blocks = domain_blocks(
        tokenizer, n_blocks=eval_ids.size(0), block_len=eval_ids.size(1), seed=seed, sources=others
    )
    label = source if source in BUNDLED else "own held-out"
    return {label: {"ids": eval_ids, "doc_ids": None}, **blocks}
