"""Analysis of generations and predictions on token ids and logits: diversity, repetition, copying, sharpness.

Follows the hyperfitting paper (§2.3, Tables 2-3) and the peers' published definitions: SimCTG's rep-n and
diversity (yxuansu/SimCTG), unlikelihood training's seq-rep-n and target ranks (Welleck et al. 2020), degen's
repetition loops (ari-holtzman/degen), sacrebleu's sentence BLEU for Self-BLEU.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from itertools import pairwise

import numpy as np
import torch

from hyperfit.common.stats import mean_ci

Tokens = Sequence[Hashable] | torch.Tensor | np.ndarray
"""One sequence: token ids (list of ints, 1-D LongTensor or array) or words (an already split list of str)."""

_SMOOTH_METHODS = ("exp", "floor", "none")
_FLOOR_SMOOTH_VALUE = 0.1  # sacrebleu's default for 'floor' (Chen & Cherry method 1, nltk method1's epsilon)
_DEGEN_MANY_REPEATS = 50  # degen also flags a phrase shorter than 3 tokens repeated more than 50 times


def _items(seq: Tokens) -> list:
    """One sequence as a plain list; a str is refused because iterating it would silently give characters."""
    if isinstance(seq, str):
        raise TypeError(
            "Got a str where a sequence of ids or words was expected: split the text into words first."
        )
    if isinstance(seq, torch.Tensor | np.ndarray):
        if seq.ndim != 1:
            raise ValueError(
                f"Expected a 1-D sequence, got shape {tuple(seq.shape)}; pass one row at a time."
            )
        return seq.tolist()
    return list(seq)


def _ngrams(items: list, n: int) -> list[tuple]:
    """All contiguous n-grams of ``items`` in order: ``len(items) - n + 1`` tuples, none if shorter than n."""
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}.")
    return list(zip(*(items[i:] for i in range(n)), strict=False))  # shorter tails end it


# ------------------------------------------------------------------------------------------------------------
# Lexical diversity and repetition
# ------------------------------------------------------------------------------------------------------------


def ttr(ids: Tokens, *, window: int | None = 96) -> float:
    """Type-token ratio of one sequence: distinct items / items, over its last ``window`` items.

    All items count when the sequence is shorter than ``window`` (or ``window`` is None); an empty sequence
    gives 0.0. The paper's TTR is this on the last 96 generated token ids with the prompt excluded, so pass
    only the continuation (and strip padding). Works on ids or on already split words. A fraction in [0, 1]
    (tables ×100)."""
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None, got {window}.")
    items = _items(ids)
    if window is not None:
        items = items[-window:]
    return len(set(items)) / len(items) if items else 0.0


def mean_ttr(seqs: Iterable[Tokens], *, window: int | None = 96) -> float:
    """Mean of :func:`ttr` over sequences, each weighted equally (an empty one counts as 0.0); 0.0 if none."""
    values = [ttr(seq, window=window) for seq in seqs]
    return sum(values) / len(values) if values else 0.0


def ttr_by_position(seqs: Iterable[Tokens], *, window: int = 96, step: int = 1) -> dict:
    """TTR of a sliding window against position (paper appendix Fig. 9): for each sequence, the TTR of the
    ``window`` items ending at position p (1-based count of generated items), for p = window, window + step, ...

    Returns ``{"position": [p, ...], "mean": [mean over the sequences long enough], "n": [how many],
    "per_sequence": [[ttr at each p] per sequence]}``; a sequence shorter than p stops contributing at p.
    """
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1, got {window} and {step}.")
    rows = [_items(seq) for seq in seqs]
    longest = max((len(r) for r in rows), default=0)
    positions = list(range(window, longest + 1, step))
    per_sequence = [[len(set(r[p - window : p])) / window for p in positions if p <= len(r)] for r in rows]
    means, counts = [], []
    for i in range(len(positions)):
        values = [v[i] for v in per_sequence if i < len(v)]
        means.append(sum(values) / len(values))
        counts.append(len(values))
    return {"position": positions, "mean": means, "n": counts, "per_sequence": per_sequence}


def rep_n(seqs: Iterable[Tokens], *, n: int, simctg_quirk: bool = False) -> float:
    """SimCTG's corpus-level rep-n: ``1 - Σ_docs |unique n-grams in doc| / Σ_docs |n-grams in doc|``.

    A fraction in [0, 1] (SimCTG reports ×100). Unique n-grams are counted per document, then summed, so an
    n-gram repeated across documents is not a repetition. ``simctg_quirk=True`` reproduces SimCTG's loop
    (``while end_idx < len(tokens)``), which ignores the final n-gram of every document. Documents shorter
    than n contribute nothing; 0.0 when there are no n-grams at all (SimCTG divides by zero there)."""
    unique = total = 0
    for seq in seqs:
        grams = _ngrams(_items(seq), n)
        if simctg_quirk:
            grams = grams[:-1]
        unique += len(set(grams))
        total += len(grams)
    return 1.0 - unique / total if total else 0.0


def ngram_repeats(seq: Tokens, *, n: int) -> tuple[int, int]:
    """(repeated, total) n-grams of one sequence: total minus distinct, and total. :func:`rep_n` is
    ``Σ repeated / Σ total`` over documents, so these are its per-document parts (for intervals over prompts)."""
    grams = _ngrams(_items(seq), n)
    return len(grams) - len(set(grams)), len(grams)


def diversity(seqs: Iterable[Tokens], *, ns: Sequence[int] = (2, 3, 4), simctg_quirk: bool = False) -> float:
    """SimCTG's diversity: ``Π_{n in ns} (1 - rep_n(seqs, n))``, a fraction in [0, 1] (SimCTG reports ×100).

    Computed from unrounded rep-n values (SimCTG rounds each rep-n to 2 decimals of a percent first).
    """
    seqs = [_items(seq) for seq in seqs]
    return math.prod(1.0 - rep_n(seqs, n=n, simctg_quirk=simctg_quirk) for n in ns)


def seq_rep_n(seqs: Iterable[Tokens], *, n: int) -> float:
    """Unlikelihood training's seq-rep-n: mean over sequences of ``1 - |unique n-grams| / |n-grams|``.

    Each sequence (continuation only, padding stripped) is weighted equally; sequences shorter than n are
    skipped; 0.0 if none is long enough. A fraction in [0, 1]."""
    values = []
    for seq in seqs:
        grams = _ngrams(_items(seq), n)
        if grams:
            values.append(1.0 - len(set(grams)) / len(grams))
    return sum(values) / len(values) if values else 0.0


def distinct_n(seqs: Iterable[Tokens], *, n: int) -> float:
    """Corpus distinct-n: distinct n-grams across all sequences / total n-grams; 0.0 if there are none.

    N-grams never span two sequences. A fraction in [0, 1].
    """
    distinct: set[tuple] = set()
    total = 0
    for seq in seqs:
        grams = _ngrams(_items(seq), n)
        distinct.update(grams)
        total += len(grams)
    return len(distinct) / total if total else 0.0


# ------------------------------------------------------------------------------------------------------------
# BLEU and Self-BLEU
# ------------------------------------------------------------------------------------------------------------


def _ngram_counts(items: list, max_n: int) -> Counter:
    """Counts of all n-grams of orders 1..max_n (tuples, so orders never collide)."""
    counts: Counter = Counter()
    for n in range(1, max_n + 1):
        counts.update(_ngrams(items, n))
    return counts


def _closest_ref_len(hyp_len: int, ref_lens: Iterable[int]) -> int:
    """sacrebleu's reference length: the closest to the hypothesis length, the shorter one on a tie."""
    return min(ref_lens, key=lambda ref_len: (abs(ref_len - hyp_len), ref_len))


def _bleu_from_stats(
    correct: list[int], total: list[int], hyp_len: int, ref_len: int, smooth_method: str
) -> float:
    """sacrebleu's ``BLEU.compute_bleu`` with ``effective_order=True``, as a fraction instead of ×100."""
    if hyp_len == 0 or not any(correct):
        return 0.0
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1.0 - ref_len / hyp_len)
    log_precision_sum = 0.0
    order = 0
    exp_divisor = 1.0
    for n_correct, n_total in zip(correct, total, strict=True):
        if n_total == 0:  # effective order: orders the hypothesis is too short for are left out
            break
        order += 1
        if n_correct > 0:
            precision = n_correct / n_total
        elif smooth_method == "exp":
            exp_divisor *= 2.0
            precision = 1.0 / (exp_divisor * n_total)
        elif smooth_method == "floor":
            precision = _FLOOR_SMOOTH_VALUE / n_total
        else:  # 'none': sacrebleu's floored log of 0 makes the score exactly 0.0
            return 0.0
        log_precision_sum += math.log(precision)
    return brevity * math.exp(log_precision_sum / order)


def _check_bleu_options(max_n: int, smooth_method: str) -> None:
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}.")
    if smooth_method not in _SMOOTH_METHODS:
        raise ValueError(f"smooth_method must be one of {_SMOOTH_METHODS}, got {smooth_method!r}.")


def sentence_bleu(
    hyp: Tokens, refs: Sequence[Tokens], *, max_n: int = 4, smooth_method: str = "exp"
) -> float:
    """Sentence BLEU of one token sequence against references, identical to sacrebleu's ``sentence_bleu``.

    Definition (sacrebleu 2.x, ``tokenize='none'`` on the items, ``use_effective_order=True``): clipped n-gram
    precisions for n = 1..max_n, each hypothesis n-gram count clipped by its maximum count in any single
    reference; geometric mean with uniform weights over the orders the hypothesis is long enough for; brevity
    penalty ``exp(1 - r/c)`` when c < r, with r the reference length closest to c (the shorter on a tie).
    Zero-match orders are smoothed by ``smooth_method``: 'exp' (NIST: the k-th such order gets precision
    ``1 / (2^k · total)``), 'floor' (``0.1 / total``) or 'none'. No match at all gives 0.0. A fraction in
    [0, 1].
    """
    _check_bleu_options(max_n, smooth_method)
    refs = [_items(ref) for ref in refs]
    if not refs:
        raise ValueError("sentence_bleu needs at least one reference.")
    ref_max: Counter = Counter()
    for ref in refs:
        ref_max |= _ngram_counts(ref, max_n)  # | keeps the maximum count per n-gram
    return _bleu_against(_items(hyp), ref_max, [len(ref) for ref in refs], max_n, smooth_method)


def _bleu_against(
    items: list, ref_max: Counter, ref_lens: list[int], max_n: int, smooth_method: str
) -> float:
    """Sentence BLEU of ``items`` given the references' maximum n-gram counts and lengths."""
    correct, total = [0] * max_n, [0] * max_n
    for gram, count in _ngram_counts(items, max_n).items():
        total[len(gram) - 1] += count
        correct[len(gram) - 1] += min(count, ref_max[gram])
    ref_len = _closest_ref_len(len(items), ref_lens)
    return _bleu_from_stats(correct, total, len(items), ref_len, smooth_method)


def dataset_bleu(
    gen_seqs: Sequence[Tokens],
    train_seqs: Sequence[Tokens],
    *,
    max_n: int = 4,
    smooth_method: str = "exp",
) -> list[float]:
    """Dataset BLEU (paper Table 2): per generation, :func:`sentence_bleu` against *every* training sequence as
    a reference (clipping by the largest count in any one training sequence, reference length the closest
    training length). Higher = closer to the training set. One fraction in [0, 1] per generation, so the mean
    and its interval over prompts can both be taken; the reference counts are built once."""
    _check_bleu_options(max_n, smooth_method)
    refs = [_items(ref) for ref in train_seqs]
    if not refs:
        raise ValueError("dataset_bleu needs at least one training sequence.")
    ref_max: Counter = Counter()
    for ref in refs:
        ref_max |= _ngram_counts(ref, max_n)
    lengths = sorted({len(ref) for ref in refs})
    return [_bleu_against(_items(seq), ref_max, lengths, max_n, smooth_method) for seq in gen_seqs]


def self_bleu(
    seqs: Sequence[Tokens],
    *,
    max_n: int = 4,
    sample_size: int | None = None,
    seed: int = 0,
    smooth_method: str = "exp",
) -> float:
    """Self-BLEU: mean over hypotheses of :func:`sentence_bleu` (BLEU-``max_n``, 'exp' smoothing by default)
    of each sequence against all OTHER sequences as references (the hypothesis itself is excluded; an
    identical copy elsewhere in the set still counts). Lower means a more diverse set. A fraction in [0, 1].

    With ``sample_size`` (< number of sequences) only ``random.Random(seed).sample`` hypotheses are scored,
    each still against all other sequences (degen's protocol). Equals calling sacrebleu's ``sentence_bleu``
    per hypothesis on whitespace-joined ids with ``tokenize='none'``, but shares the n-gram counts between
    calls."""
    _check_bleu_options(max_n, smooth_method)
    seqs = [_items(seq) for seq in seqs]
    if len(seqs) < 2:
        raise ValueError(f"Self-BLEU needs at least 2 sequences, got {len(seqs)}.")
    counts = [_ngram_counts(seq, max_n) for seq in seqs]
    # Leave-one-out maximum reference counts: keep the largest count, its owner, and the runner-up count.
    best: dict[tuple, tuple[int, int, int]] = {}
    for owner, seq_counts in enumerate(counts):
        for gram, count in seq_counts.items():
            first, first_owner, second = best.get(gram, (0, -1, 0))
            if count > first:
                best[gram] = (count, owner, first)
            elif count > second:
                best[gram] = (first, first_owner, count)
    lengths = np.array([len(seq) for seq in seqs])
    indices = list(range(len(seqs)))
    if sample_size is not None and sample_size < len(seqs):
        indices = random.Random(seed).sample(indices, sample_size)
    scores = []
    for i in indices:
        correct, total = [0] * max_n, [0] * max_n
        for gram, count in counts[i].items():
            first, first_owner, second = best[gram]
            total[len(gram) - 1] += count
            correct[len(gram) - 1] += min(count, second if first_owner == i else first)
        other_lengths = np.delete(lengths, i).tolist()
        ref_len = _closest_ref_len(len(seqs[i]), other_lengths)
        scores.append(_bleu_from_stats(correct, total, len(seqs[i]), ref_len, smooth_method))
    return sum(scores) / len(scores)


# ------------------------------------------------------------------------------------------------------------
# Repetition loops at the end of a generation
# ------------------------------------------------------------------------------------------------------------


def _tail_copies(items: list, length: int) -> int:
    """How many back-to-back copies of the last ``length`` items end ``items`` (1 if too short, as degen)."""
    if length > len(items):
        return 1
    phrase = items[-length:]
    copies = 1
    end = len(items) - length
    while end >= length and items[end - length : end] == phrase:
        copies += 1
        end -= length
    return copies


def repetition_loop(
    ids: Tokens, *, min_phrase: int = 3, max_phrase: int = 90, min_repeats: int = 2, degen_quirk: bool = False
) -> bool:
    """Whether the sequence ends in a loop: a phrase repeated back to back up to its last item.

    Rule: True iff for some phrase length L in [min_phrase, max_phrase] the sequence ends with at least
    ``min_repeats`` consecutive copies of its last L items (so "… x y z x y z" is a loop; a shorter phrase
    repeated often enough is caught through a multiple of its length, e.g. six identical ids are "a a a"
    twice).

    ``degen_quirk=True`` reproduces degen's ``metrics/repetition.py``: for L in 1..max_phrase count the
    copies, take the first L with the most copies, and flag a loop iff that count >= min_repeats and
    (L >= min_phrase or the count > 50); a loop whose phrase is not the most-repeated period
    (e.g. "a b c c a b c c") is then missed. Strip a trailing end-of-sequence id and padding first, as degen
    does."""
    if not 1 <= min_phrase <= max_phrase or min_repeats < 2:
        raise ValueError(
            "Need 1 <= min_phrase <= max_phrase and min_repeats >= 2, "
            f"got {min_phrase}, {max_phrase}, {min_repeats}."
        )
    items = _items(ids)
    if not items:
        return False
    if degen_quirk:
        copies = [_tail_copies(items, length) for length in range(1, max_phrase + 1)]
        best = max(range(max_phrase), key=lambda i: copies[i])  # first maximum, as degen's max()
        return copies[best] >= min_repeats and (best + 1 >= min_phrase or copies[best] > _DEGEN_MANY_REPEATS)
    return any(_tail_copies(items, length) >= min_repeats for length in range(min_phrase, max_phrase + 1))


def loop_share(
    seqs: Iterable[Tokens],
    *,
    min_phrase: int = 3,
    max_phrase: int = 90,
    min_repeats: int = 2,
    degen_quirk: bool = False,
) -> float:
    """Share of sequences for which :func:`repetition_loop` is True (0.0 for no sequences)."""
    flags = [
        repetition_loop(
            seq,
            min_phrase=min_phrase,
            max_phrase=max_phrase,
            min_repeats=min_repeats,
            degen_quirk=degen_quirk,
        )
        for seq in seqs
    ]
    return sum(flags) / len(flags) if flags else 0.0


# ------------------------------------------------------------------------------------------------------------
# Copying from the training set
# ------------------------------------------------------------------------------------------------------------


def _id_array(seq: Tokens) -> np.ndarray:
    array = np.asarray(_items(seq), dtype=np.int64)
    if array.size and array.min() < 0:
        raise ValueError(
            "Copy analysis takes token ids >= 0: strip padding / IGNORE_INDEX (-100) entries first."
        )
    return array


def _prefix_doubling_ranks(text: np.ndarray) -> list[np.ndarray]:
    """``levels[j][i]`` is the rank of ``text[i : i + 2**j]`` (cut at the end) among all such strings.

    Doubling stops once every rank is distinct: the last level is then the inverse suffix array."""
    n = len(text)
    rank = np.unique(text, return_inverse=True)[1].astype(np.int64).ravel()
    levels = [rank]
    step = 1
    while rank.max() < n - 1:
        second = np.zeros(n, dtype=np.int64)
        second[: n - step] = rank[step:] + 1  # 0 marks "past the end"
        rank = np.unique(rank * (n + 1) + second, return_inverse=True)[1].astype(np.int64).ravel()
        levels.append(rank)
        step *= 2
    return levels


def _common_prefix(levels: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Longest common prefix of the suffixes at positions ``a`` and ``b`` (elementwise), by binary lifting."""
    n = len(levels[0])
    length = np.zeros(len(a), dtype=np.int64)
    for j in reversed(range(len(levels))):
        pa, pb = a + length, b + length
        inside = (pa < n) & (pb < n)
        same = np.zeros(len(a), dtype=bool)
        same[inside] = levels[j][pa[inside]] == levels[j][pb[inside]]
        length += same.astype(np.int64) << j
    return length


def copy_match_lengths(gen_seqs: Iterable[Tokens], train_seqs: Iterable[Tokens]) -> list[np.ndarray]:
    """Matching statistics: for each generation and each position i, the length (tokens) of the longest prefix
    of ``gen[i:]`` that occurs contiguously inside one training sequence (0 if ``gen[i]`` never occurs).

    Spans never cross a boundary between training sequences or between generations. Built once for all
    generations with a suffix array over the training and generated ids (each sequence closed by its own
    separator), prefix doubling in numpy and, for each generated suffix, the longest common prefix with its
    nearest training suffixes in sorted order: O(N log N · log L) for N ids in total and L the longest
    repeated span, about a second for 2,000 × 256 training and 300 × 256 generated ids. Ids must be ints
    >= 0 (padding stripped).
    """
    gens = [_id_array(seq) for seq in gen_seqs]
    trains = [_id_array(seq) for seq in train_seqs]
    if not gens:
        return []
    if not any(len(seq) for seq in trains):
        return [np.zeros(len(seq), dtype=np.int64) for seq in gens]
    parts = []
    for k, seq in enumerate(trains + gens):
        parts += [seq, np.array([-1 - k], dtype=np.int64)]  # a unique separator ends every sequence
    text = np.concatenate(parts)
    n_train = sum(len(seq) + 1 for seq in trains)
    levels = _prefix_doubling_ranks(text)
    suffix_rank = levels[-1]
    suffix_array = np.argsort(suffix_rank)
    order = np.arange(len(text))
    is_train = suffix_array < n_train
    # Nearest training suffix before / after each suffix in sorted order: the best match is one of the two.
    prev_train = np.maximum.accumulate(np.where(is_train, order, -1))
    next_train = np.minimum.accumulate(np.where(is_train, order, len(text))[::-1])[::-1]
    gen_pos = np.arange(n_train, len(text))
    gen_pos = gen_pos[text[gen_pos] >= 0]
    ranks = suffix_rank[gen_pos]
    best = np.zeros(len(gen_pos), dtype=np.int64)
    for neighbour in (prev_train[ranks], next_train[ranks]):
        found = (neighbour >= 0) & (neighbour < len(text))
        best[found] = np.maximum(
            best[found], _common_prefix(levels, gen_pos[found], suffix_array[neighbour[found]])
        )
    return np.split(best, np.cumsum([len(seq) for seq in gens])[:-1])


def longest_copied_spans(gen_seqs: Iterable[Tokens], train_seqs: Iterable[Tokens]) -> list[int]:
    """For each generation, the length (tokens) of its longest contiguous span found contiguously in one
    training sequence (the paper's "dataset overlap"); 0 for an empty generation. One index for all
    generations."""
    return [int(lengths.max()) if len(lengths) else 0 for lengths in copy_match_lengths(gen_seqs, train_seqs)]


def longest_copied_span(gen_ids: Tokens, train_seqs: Iterable[Tokens]) -> int:
    """Longest contiguous span of ``gen_ids`` that occurs contiguously in any training sequence (tokens).

    Builds the index for this one generation: for many generations call :func:`longest_copied_spans` once.
    """
    return longest_copied_spans([gen_ids], train_seqs)[0]


def _copied_share(match_lengths: list[np.ndarray], n: int) -> float:
    copied = total = 0
    for lengths in match_lengths:
        starts = lengths[: max(len(lengths) - n + 1, 0)]  # positions where an n-gram starts
        copied += int((starts >= n).sum())
        total += len(starts)
    return copied / total if total else 0.0


def copied_ngram_share(gen_seqs: Iterable[Tokens], train_seqs: Iterable[Tokens], *, n: int = 5) -> float:
    """Share of generated n-grams (pooled over generations, every occurrence counted) that occur contiguously
    in some training sequence; 0.0 if the generations hold no n-gram. A fraction in [0, 1]."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    return _copied_share(copy_match_lengths(gen_seqs, train_seqs), n)


def copy_report(gen_seqs: Iterable[Tokens], train_seqs: Iterable[Tokens], *, threshold: int = 10) -> dict:
    """Copying of the training set by a set of generations (paper Table 2 / Fig. 3), from one index.

    Keys: ``n_generations``; ``mean_longest_span`` / ``max_longest_span`` of :func:`longest_copied_spans`
    (tokens); ``share_gt_threshold``: share of generations whose longest copied span is > ``threshold``
    tokens; ``histogram``: {longest span length: number of generations}, sorted by length;
    ``copied_5gram_share``: :func:`copied_ngram_share` with n = 5."""
    match_lengths = copy_match_lengths(gen_seqs, train_seqs)
    if not match_lengths:
        raise ValueError("copy_report needs at least one generation.")
    spans = [int(lengths.max()) if len(lengths) else 0 for lengths in match_lengths]
    return {
        "n_generations": len(spans),
        "mean_longest_span": sum(spans) / len(spans),
        "max_longest_span": max(spans),
        "share_gt_threshold": sum(span > threshold for span in spans) / len(spans),
        "histogram": dict(sorted(Counter(spans).items())),
        "copied_5gram_share": _copied_share(match_lengths, 5),
    }


# ------------------------------------------------------------------------------------------------------------
# Sharpness of next-token predictions, target ranks, agreement between models
# ------------------------------------------------------------------------------------------------------------


def token_stats(
    logits: torch.Tensor, targets: torch.Tensor | None = None, *, chunk_size: int = 256
) -> dict[str, torch.Tensor]:
    """Per-position statistics of raw ``logits[..., v]`` (e.g. [b, t, v]), computed in float32 in chunks of
    ``chunk_size`` positions, returned with the leading shape (e.g. [b, t]) on ``logits.device``.

    ``logits[:, i]`` must already be the distribution that predicts ``targets[:, i]``: for a causal LM run on
    ``input_ids`` pass ``logits[:, :-1]`` with ``input_ids[:, 1:]`` (or the labels shifted the same way).
    Keys: ``entropy`` (nats), ``top1_prob`` / ``top3_prob`` / ``top5_prob`` (probability mass of the 1/3/5
    most likely tokens), ``argmax`` (first index of the largest logit). With ``targets`` (LongTensor, same
    leading shape; negative entries such as IGNORE_INDEX = -100 are ignored): ``target_prob``, ``nll`` (nats)
    — NaN where ignored — and ``target_rank``: the number of tokens with a strictly larger logit than the
    target (0 = top-1; a tie counts in the target's favour, so a target tied with the maximum has rank 0 even
    if ``argmax`` names another token), -1 where ignored."""
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape [..., v], got {tuple(logits.shape)}.")
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_targets = None
    if targets is not None:
        if targets.shape != lead:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must equal logits' leading shape {tuple(lead)}."
            )
        flat_targets = targets.reshape(-1).to(device=logits.device, dtype=torch.long)
        if flat_targets.numel() and int(flat_targets.max()) >= vocab:
            raise ValueError(
                f"A target id is >= the vocabulary size {vocab}: logits and targets do not match."
            )
    parts: dict[str, list[torch.Tensor]] = {}
    lowest = torch.finfo(torch.float32).min
    for start in range(0, flat_logits.shape[0], chunk_size):
        # One max, one exp and one sum per position, then everything from them: with y = x - max x ≤ 0,
        # z = exp(y) and s = Σ z ≥ 1, log p = y - log s, entropy = log s - Σ z·y / s (two non-negative terms:
        # no cancellation near zero entropy), top-k mass = top-k of z / s.
        x = flat_logits[start : start + chunk_size].float()
        top, argmax = x.max(-1, keepdim=True)  # the first index of the largest logit, like argmax
        y = (x - top).clamp_(min=lowest)  # -inf logits → a finite floor, so that 0 · y = 0 (0 · log 0 = 0)
        z = y.exp()
        s = z.sum(-1)
        log_s = s.log()
        top_mass = z.topk(min(5, vocab), dim=-1).values.cumsum_(-1) / s[:, None]
        chunk = {
            "entropy": log_s - torch.linalg.vecdot(z, y) / s,
            "top1_prob": top_mass[:, 0],
            "top3_prob": top_mass[:, min(3, vocab) - 1],
            "top5_prob": top_mass[:, min(5, vocab) - 1],
            "argmax": argmax.squeeze(-1),
        }
        if flat_targets is not None:
            target = flat_targets[start : start + chunk_size]
            ignored = target < 0
            target_logit = x.gather(1, target.clamp(min=0)[:, None])
            nll = log_s - (target_logit - top).squeeze(1)
            rank = (x > target_logit).sum(-1)
            chunk["nll"] = nll.masked_fill(ignored, math.nan)
            chunk["target_prob"] = torch.exp(-chunk["nll"])
            chunk["target_rank"] = rank.masked_fill(ignored, -1)
        for key, value in chunk.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values).reshape(lead) for key, values in parts.items()}


def rank_histogram(
    ranks: torch.Tensor | Sequence[int], *, bins: Sequence[int] = (1, 2, 3, 5, 10, 100, 1000)
) -> dict[str, int]:
    """Counts of 0-based target ranks by top-k band: ``bins`` are increasing 1-based upper bounds, so the
    default gives bands "1", "2", "3", "4-5", "6-10", "11-100", "101-1000", ">1000" (rank 0 falls in "1").
    Negative ranks (ignored positions) are left out."""
    bounds = [int(b) for b in bins]
    if not bounds or bounds[0] < 1 or any(b <= a for a, b in pairwise(bounds)):
        raise ValueError(f"bins must be strictly increasing integers >= 1, got {tuple(bins)}.")
    values = torch.as_tensor(ranks).reshape(-1).cpu().numpy()
    values = values[values >= 0]
    band = np.searchsorted(np.array(bounds), values + 1, side="left")
    counts = np.bincount(band, minlength=len(bounds) + 1)
    labels, low = [], 1
    for high in bounds:
        labels.append(str(high) if high == low else f"{low}-{high}")
        low = high + 1
    labels.append(f">{bounds[-1]}")
    return {label: int(count) for label, count in zip(labels, counts, strict=True)}


def sharpness_from_stats(stats: dict[str, torch.Tensor], *, mask: torch.Tensor | None = None) -> dict:
    """Summary of :func:`token_stats` output (possibly concatenated across batches), averaged over positions.

    Positions count where ``mask`` (bool, same shape) is True and, when targets were given, the target is not
    ignored. Keys: ``n_positions``; means of ``entropy`` (nats), ``top1_prob``, ``top3_prob``, ``top5_prob``;
    with targets also ``nll`` (mean, nats), ``perplexity`` (exp of that mean), ``target_prob`` (mean),
    ``hits_at_1`` / ``hits_at_5`` (share of target ranks < 1 / < 5), ``mean_rank``, ``median_rank`` (0-based)
    and ``rank_histogram`` (:func:`rank_histogram`).
    """
    keep = torch.ones_like(stats["entropy"], dtype=torch.bool)
    if mask is not None:
        if mask.shape != keep.shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} must equal the positions' shape {tuple(keep.shape)}."
            )
        keep &= mask.to(device=keep.device, dtype=torch.bool)
    has_targets = "target_rank" in stats
    if has_targets:
        keep &= stats["target_rank"] >= 0
    n_positions = int(keep.sum())
    if n_positions == 0:
        raise ValueError("No position left to summarise: every position is masked or has an ignored target.")

    def mean(key: str) -> float:
        return float(stats[key][keep].double().mean())

    summary: dict = {"n_positions": n_positions}
    for key in ("entropy", "top1_prob", "top3_prob", "top5_prob"):
        summary[key] = mean(key)
    if has_targets:
        ranks = stats["target_rank"][keep]
        summary["nll"] = mean("nll")
        summary["perplexity"] = math.exp(summary["nll"]) if summary["nll"] < 700 else math.inf
        summary["target_prob"] = mean("target_prob")
        summary["hits_at_1"] = float((ranks < 1).double().mean())
        summary["hits_at_5"] = float((ranks < 5).double().mean())
        summary["mean_rank"] = float(ranks.double().mean())
        summary["median_rank"] = float(np.median(ranks.cpu().numpy()))
        summary["rank_histogram"] = rank_histogram(ranks)
    return summary


def sharpness(
    logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
    chunk_size: int = 2048,
) -> dict:
    """How peaked the next-token predictions are (paper Table 3): :func:`sharpness_from_stats` of
    :func:`token_stats`. ``logits[b, t, v]`` are raw and aligned so that position i predicts
    ``targets[:, i]``; ``mask[b, t]`` is True where a position counts; ignored targets (< 0) are excluded
    from every mean."""
    return sharpness_from_stats(token_stats(logits, targets, chunk_size=chunk_size), mask=mask)


def top1_agreement_ids(
    argmax_a: torch.Tensor, argmax_b: torch.Tensor, *, mask: torch.Tensor | None = None
) -> float:
    """Share of positions (where ``mask`` is True, all if None) at which two precomputed argmax id tensors of
    the same shape agree. A fraction in [0, 1]."""
    if argmax_a.shape != argmax_b.shape:
        raise ValueError(f"argmax shapes differ: {tuple(argmax_a.shape)} vs {tuple(argmax_b.shape)}.")
    same = argmax_a == argmax_b.to(argmax_a.device)
    if mask is not None:
        if mask.shape != same.shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} must equal the argmax shape {tuple(same.shape)}."
            )
        same = same[mask.to(device=same.device, dtype=torch.bool)]
    if same.numel() == 0:
        raise ValueError("No position to compare: the inputs are empty or fully masked.")
    return float(same.double().mean())


def top1_agreement_matrix(
    argmax: dict[str, torch.Tensor], *, n_blocks: int, seed: int = 0
) -> dict[str, dict[str, dict]]:
    """Pairwise top-1 agreement (:func:`top1_agreement_ids`) of every two models over the same held-out
    positions, each with a 95 % bootstrap interval over the held-out blocks (``stats.mean_ci`` of the per-block
    agreements: positions within a block are not independent draws, blocks are).

    ``argmax[name]`` holds one model's argmax id at the positions of ``n_blocks`` equal-length blocks, block by
    block (any shape, read flattened). Returns ``{"agreement": {a: {b: share}}, "agreement_ci": {a: {b: [low,
    high]}}}``, symmetric, in the order of ``argmax``; a model with itself is 1 with [1, 1]."""
    names = list(argmax)
    argmax = {name: ids.reshape(-1) for name, ids in argmax.items()}
    agreement: dict[str, dict[str, float]] = {a: {} for a in names}
    intervals: dict[str, dict[str, list[float]]] = {a: {} for a in names}
    for i, a in enumerate(names):
        for b in names[i:]:
            share = top1_agreement_ids(argmax[a], argmax[b])
            same = (argmax[a] == argmax[b].to(argmax[a].device)).reshape(n_blocks, -1)
            interval = list(mean_ci(same.double().mean(1).cpu().numpy(), seed=seed))
            agreement[a][b] = agreement[b][a] = share
            intervals[a][b] = intervals[b][a] = interval
    # Rows in the order of ``argmax``, whatever order the pairs were filled in.
    return {
        "agreement": {a: {b: agreement[a][b] for b in names} for a in names},
        "agreement_ci": {a: {b: intervals[a][b] for b in names} for a in names},
    }


def top1_agreement(
    logits_a: torch.Tensor, logits_b: torch.Tensor, *, mask: torch.Tensor | None = None
) -> float:
    """Top-1 similarity of two models (paper §2.3): share of positions where the argmax of
    ``logits_a[..., v]`` equals that of ``logits_b[..., v]`` (first index on ties), over positions where
    ``mask`` is True (all if None). A model compared with itself gives 1.0."""
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits shapes differ: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}.")
    return top1_agreement_ids(logits_a.argmax(-1), logits_b.argmax(-1), mask=mask)


def rank_shift(ranks_before: torch.Tensor | Sequence[int], ranks_after: torch.Tensor | Sequence[int]) -> dict:
    """How the reference token's 0-based rank moves, position by position, from one model (e.g. the original)
    to another (e.g. the hyperfitted one), both from :func:`token_stats` on the same texts.

    Positions where either rank is negative (ignored) are left out. Keys: ``n_positions``; ``share_improved``
    / ``share_unchanged`` / ``share_worsened`` (after < / == / > before); ``mean_log_rank_change``: mean of
    ``ln(1 + after) - ln(1 + before)`` (negative = the reference moved up); ``share_to_top1`` (before > 0 and
    after == 0) and ``share_from_top1`` (before == 0 and after > 0), as shares of all counted positions;
    ``hits_at_1_before`` / ``hits_at_1_after``."""
    before = torch.as_tensor(ranks_before).reshape(-1).cpu().double()
    after = torch.as_tensor(ranks_after).reshape(-1).cpu().double()
    if before.shape != after.shape:
        raise ValueError(f"rank tensors differ in size: {before.numel()} vs {after.numel()}.")
    keep = (before >= 0) & (after >= 0)
    before, after = before[keep], after[keep]
    if before.numel() == 0:
        raise ValueError("No position with a valid rank in both inputs.")
    return {
        "n_positions": int(before.numel()),
        "share_improved": float((after < before).double().mean()),
        "share_unchanged": float((after == before).double().mean()),
        "share_worsened": float((after > before).double().mean()),
        "mean_log_rank_change": float((torch.log1p(after) - torch.log1p(before)).mean()),
        "share_to_top1": float(((before > 0) & (after == 0)).double().mean()),
        "share_from_top1": float(((before == 0) & (after > 0)).double().mean()),
        "hits_at_1_before": float((before == 0).double().mean()),
        "hits_at_1_after": float((after == 0).double().mean()),
    }
