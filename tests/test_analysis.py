"""hyperfit.common.analysis against hand-built answers, brute-force oracles and the peers' definitions."""

import math
import random

import numpy as np
import pytest
import sacrebleu
import torch

from hyperfit.common.analysis import (
    copied_ngram_share,
    copy_match_lengths,
    copy_report,
    distinct_n,
    diversity,
    longest_copied_span,
    longest_copied_spans,
    loop_share,
    mean_ttr,
    rank_histogram,
    rank_shift,
    rep_n,
    repetition_loop,
    self_bleu,
    sentence_bleu,
    seq_rep_n,
    sharpness,
    sharpness_from_stats,
    token_stats,
    top1_agreement,
    top1_agreement_ids,
    top1_agreement_matrix,
    ttr,
)


def random_seqs(
    rng: random.Random, count: int, *, vocab: int, max_len: int, min_len: int = 0
) -> list[list[int]]:
    return [[rng.randrange(vocab) for _ in range(rng.randint(min_len, max_len))] for _ in range(count)]


# --------------------------------------------------------------------------------------- TTR, rep-n, distinct


def test_ttr_known_answers_and_window():
    assert ttr([1, 1, 2, 3]) == 0.75
    assert ttr([]) == 0.0
    assert ttr([5, 6, 7, 8, 1, 1], window=2) == 0.5  # only the last two items: [1, 1]
    assert ttr([5, 6, 7, 8, 1, 1], window=100) == 5 / 6  # shorter than the window: all items
    assert ttr([5, 6, 7, 8, 1, 1], window=None) == 5 / 6
    assert ttr(list(range(200)) + [0] * 96) == 1 / 96  # default window 96
    assert ttr(torch.tensor([1, 1, 2, 3])) == 0.75
    assert ttr("the cat the dog".split()) == 0.75
    assert mean_ttr([[1, 1], [1, 2]]) == 0.75
    assert mean_ttr([]) == 0.0
    with pytest.raises(TypeError, match="split the text"):
        ttr("a string")


def test_rep_n_known_answers():
    a_b_a_b = "a b a b".split()
    assert rep_n([a_b_a_b], n=2) == pytest.approx(1 / 3)  # ab, ba, ab: 2 unique of 3
    assert rep_n([a_b_a_b], n=2, simctg_quirk=True) == 0.0  # the final "a b" is never counted
    assert rep_n([[1, 2], [1, 2]], n=2) == 0.0  # unique n-grams are counted per document
    assert rep_n([[1]], n=2) == 0.0  # no n-gram at all
    assert diversity([[7, 7, 7, 7, 7]]) == pytest.approx((1 - 3 / 4) * (1 - 2 / 3) * (1 - 1 / 2))
    rows = torch.tensor([[1, 2, 1, 2], [3, 3, 3, 3]])
    assert rep_n(rows, n=2) == pytest.approx(1 - (2 + 1) / 6)


def simctg_measure(texts: list[str], *, fixed: bool = False) -> tuple[float, float, float, float]:
    """SimCTG's simctg/evaluation.py transcribed (yxuansu/SimCTG); ``fixed`` also counts the last n-gram."""

    def eval_text(text, ngram):
        token_list = text.strip().split()
        start_idx, end_idx = 0, ngram
        total_num = 0
        ngram_set = set()
        while end_idx < len(token_list) or (fixed and end_idx == len(token_list)):
            one_ngram = " ".join(token_list[start_idx:end_idx])
            total_num += 1
            ngram_set.add(one_ngram)
            start_idx += 1
            end_idx += 1
        return len(ngram_set), total_num

    unique = {n: 0 for n in (2, 3, 4)}
    total = {n: 0 for n in (2, 3, 4)}
    for text in texts:
        for n in (2, 3, 4):
            u, t = eval_text(text.strip("\n").strip(), n)
            unique[n] += u
            total[n] += t
    reps = [round((1 - unique[n] / total[n]) * 100, 2) for n in (2, 3, 4)]
    return reps[0], reps[1], reps[2], (1 - reps[0] / 100) * (1 - reps[1] / 100) * (1 - reps[2] / 100)


@pytest.mark.parametrize("quirk", [True, False])
def test_rep_n_and_diversity_match_simctg(quirk):
    rng = random.Random(0)
    for _ in range(20):
        seqs = random_seqs(rng, rng.randint(1, 6), vocab=rng.choice([2, 4, 30]), max_len=40, min_len=5)
        texts = [" ".join(map(str, seq)) for seq in seqs]
        reference = simctg_measure(texts, fixed=not quirk)
        ours = [rep_n(seqs, n=n, simctg_quirk=quirk) for n in (2, 3, 4)]
        assert [round(r * 100, 2) for r in ours] == list(reference[:3])
        assert diversity(seqs, simctg_quirk=quirk) == pytest.approx(
            reference[3], abs=3e-4
        )  # SimCTG rounds first
        assert diversity(seqs, simctg_quirk=quirk) == pytest.approx(math.prod(1 - r for r in ours))


def test_seq_rep_n_and_distinct_n():
    assert seq_rep_n([[1, 1, 1, 1]], n=1) == 0.75
    assert seq_rep_n([[1, 1, 1, 1], [1, 2, 3, 4], [9]], n=2) == pytest.approx(
        (1 - 1 / 3 + 0) / 2
    )  # [9] skipped
    assert seq_rep_n([[1]], n=2) == 0.0
    assert distinct_n([[1, 2, 1, 2], [1, 2]], n=2) == pytest.approx(2 / 4)  # {12, 21} of 12 21 12 12
    assert distinct_n([[1, 2], [2, 1]], n=1) == 0.5
    assert distinct_n([[1], [2]], n=2) == 0.0


# ------------------------------------------------------------------------------------------------------- BLEU


def sacrebleu_score(hyp: list[int], refs: list[list[int]], *, max_n: int, smooth_method: str) -> float:
    metric = sacrebleu.BLEU(
        tokenize="none", smooth_method=smooth_method, effective_order=True, max_ngram_order=max_n
    )
    joined_refs = [" ".join(map(str, ref)) for ref in refs]
    return metric.sentence_score(" ".join(map(str, hyp)), joined_refs).score / 100


@pytest.mark.parametrize("smooth_method", ["exp", "floor", "none"])
def test_sentence_bleu_matches_sacrebleu(smooth_method):
    rng = random.Random(1)
    for trial in range(60):
        max_n = 1 + trial % 4
        hyp = random_seqs(rng, 1, vocab=rng.choice([3, 6, 12]), max_len=12)[0]
        refs = random_seqs(rng, rng.randint(1, 4), vocab=6, max_len=14, min_len=1)
        expected = sacrebleu_score(hyp, refs, max_n=max_n, smooth_method=smooth_method)
        ours = sentence_bleu(hyp, refs, max_n=max_n, smooth_method=smooth_method)
        assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_self_bleu_matches_sacrebleu_leave_one_out():
    rng = random.Random(2)
    seqs = random_seqs(rng, 12, vocab=8, max_len=20, min_len=3)
    seqs.append(list(seqs[0]))  # a duplicate elsewhere in the set still counts as a reference
    for max_n in (2, 4):
        expected = [
            sacrebleu_score(seq, seqs[:i] + seqs[i + 1 :], max_n=max_n, smooth_method="exp")
            for i, seq in enumerate(seqs)
        ]
        assert self_bleu(seqs, max_n=max_n) == pytest.approx(sum(expected) / len(expected), rel=1e-9)
    expected = [
        sacrebleu_score(seq, seqs[:i] + seqs[i + 1 :], max_n=4, smooth_method="exp")
        for i, seq in enumerate(seqs)
    ]
    sample = random.Random(7).sample(range(len(seqs)), 5)
    assert self_bleu(seqs, sample_size=5, seed=7) == pytest.approx(
        sum(expected[i] for i in sample) / 5, rel=1e-9
    )


def test_self_bleu_excludes_self():
    assert self_bleu([[1, 2, 3, 4, 5]] * 3) == 1.0
    assert self_bleu([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]) == 0.0  # disjoint vocabularies
    assert self_bleu([torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3])], max_n=3) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu([[1, 2, 3]])


# ------------------------------------------------------------------------------------------- repetition loops


def test_repetition_loop_known_answers():
    assert repetition_loop([9, 8, 1, 2, 3, 1, 2, 3])
    assert not repetition_loop([1, 2, 3, 1, 2, 3, 4])  # the loop does not reach the end
    assert not repetition_loop([9, 1, 2, 1, 2])  # a 2-token phrase twice is too short
    assert repetition_loop([9, 1, 2, 1, 2, 1, 2, 1, 2])  # ... but (1 2 1 2) twice is a loop
    assert repetition_loop([5] * 6)
    assert not repetition_loop([1, 2, 3, 1, 2, 3], min_repeats=3)
    assert not repetition_loop([1, 2, 3, 4, 1, 2, 3, 4], max_phrase=3)
    assert not repetition_loop([])
    # A loop whose phrase is not the most-repeated period: ours finds it, degen's argmax rule does not.
    assert repetition_loop([1, 2, 3, 3, 1, 2, 3, 3])
    assert not repetition_loop([1, 2, 3, 3, 1, 2, 3, 3], degen_quirk=True)
    assert not repetition_loop([5] * 50, degen_quirk=True)
    assert repetition_loop([5] * 52, degen_quirk=True)  # > 50 repeats of a 1-token phrase
    assert loop_share([[1, 2, 3, 1, 2, 3], [1, 2, 3, 4]]) == 0.5
    assert loop_share([]) == 0.0


def degen_is_repeating(gen: list[int], max_n: int = 90) -> bool:
    """Transcription of ari-holtzman/degen metrics/repetition.py (Holtzman et al. 2020), SEP already stripped."""
    rev_gen = list(reversed(gen))
    last_n_repeats = [0] * max_n
    for n in range(1, max_n + 1):
        n_repeat = 1
        while (
            len(rev_gen[n * n_repeat : n * (n_repeat + 1)]) == n
            and rev_gen[n * n_repeat : n * (n_repeat + 1)] == rev_gen[:n]
        ):
            n_repeat += 1
        last_n_repeats[n - 1] = n_repeat
    max_repeated_n = max(range(max_n), key=lambda x: last_n_repeats[x])
    return last_n_repeats[max_repeated_n] > 1 and (
        max_repeated_n + 1 >= 3 or last_n_repeats[max_repeated_n] > 50
    )


def test_repetition_loop_degen_quirk_matches_degen():
    rng = random.Random(3)
    for _ in range(200):
        prefix = random_seqs(rng, 1, vocab=3, max_len=10, min_len=1)[0]
        phrase = random_seqs(rng, 1, vocab=3, max_len=6, min_len=1)[0]
        seq = prefix + phrase * rng.randint(1, 12) + phrase[: rng.randint(0, len(phrase))]
        assert repetition_loop(seq, max_phrase=30, degen_quirk=True) == degen_is_repeating(seq, max_n=30)


# ---------------------------------------------------------------------------------------------------- copying


def brute_match_lengths(gen: list[int], train: list[list[int]]) -> list[int]:
    def occurs(span):
        return any(seq[j : j + len(span)] == span for seq in train for j in range(len(seq) - len(span) + 1))

    lengths = []
    for i in range(len(gen)):
        length = 0
        while i + length < len(gen) and occurs(gen[i : i + length + 1]):
            length += 1
        lengths.append(length)
    return lengths


def test_copy_match_lengths_against_brute_force():
    rng = random.Random(4)
    for _ in range(40):
        vocab = rng.choice([2, 3, 5])
        train = random_seqs(rng, rng.randint(0, 5), vocab=vocab, max_len=15)
        gens = random_seqs(rng, rng.randint(1, 4), vocab=vocab, max_len=15)
        if train and rng.random() < 0.5:  # plant a copied span
            source = rng.choice(train)
            gens[0] = gens[0] + source[rng.randint(0, len(source)) :]
        got = copy_match_lengths(gens, train)
        for gen, lengths in zip(gens, got, strict=True):
            expected = brute_match_lengths(gen, train)
            assert lengths.tolist() == expected
        assert longest_copied_spans(gens, train) == [
            max(brute_match_lengths(g, train), default=0) for g in gens
        ]


def test_copy_spans_do_not_cross_sequence_boundaries():
    train = [[1, 2], [3, 4]]
    assert longest_copied_span([2, 3], train) == 1
    assert longest_copied_span([7, 1, 2, 8], train) == 2
    assert longest_copied_span([], train) == 0
    assert longest_copied_span([1, 2], []) == 0
    assert longest_copied_spans([[3, 4], [4, 3]], [[5, 3, 4, 6]]) == [2, 1]  # generations never join either
    with pytest.raises(ValueError, match="strip padding"):
        longest_copied_span([1, -100], train)


def test_copied_ngram_share_and_report():
    rng = random.Random(5)
    train = random_seqs(rng, 6, vocab=4, max_len=20, min_len=5)
    gens = random_seqs(rng, 5, vocab=4, max_len=20)
    for n in (1, 3, 5):
        train_grams = {tuple(seq[i : i + n]) for seq in train for i in range(len(seq) - n + 1)}
        gen_grams = [tuple(seq[i : i + n]) for seq in gens for i in range(len(seq) - n + 1)]
        expected = sum(g in train_grams for g in gen_grams) / len(gen_grams)
        assert copied_ngram_share(gens, train, n=n) == pytest.approx(expected)

    train = [list(range(100, 120)), list(range(200, 230))]
    gens = [list(range(100, 112)) + [1, 2], [1, 2, 3, 200, 201, 202], [5, 6, 7, 8, 9, 10]]
    report = copy_report(gens, train, threshold=10)
    assert report == {
        "n_generations": 3,
        "mean_longest_span": pytest.approx(5.0),
        "max_longest_span": 12,
        "share_gt_threshold": pytest.approx(1 / 3),
        "histogram": {0: 1, 3: 1, 12: 1},
        "copied_5gram_share": pytest.approx(8 / (10 + 2 + 2)),
    }


def test_copy_index_handles_training_scale_quickly():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 500, size=(400, 256))
    gens = [row.copy() for row in rng.integers(0, 500, size=(50, 256))]
    gens[3][100:160] = train[17][10:70]
    spans = longest_copied_spans(gens, list(train))
    assert spans[3] >= 60
    assert max(spans[:3] + spans[4:]) < 10


# -------------------------------------------------------------------------------------------------- sharpness


def test_token_stats_uniform_and_peaked():
    v = 50
    stats = token_stats(torch.zeros(2, 3, v))
    assert torch.allclose(stats["entropy"], torch.full((2, 3), math.log(v)))
    assert torch.allclose(stats["top1_prob"], torch.full((2, 3), 1 / v))
    assert torch.allclose(stats["top3_prob"], torch.full((2, 3), 3 / v))
    assert torch.allclose(stats["top5_prob"], torch.full((2, 3), 5 / v))
    peaked = torch.zeros(1, 2, v)
    peaked[0, :, 7] = 100.0
    stats = token_stats(peaked)
    assert stats["entropy"].max() < 1e-30
    assert torch.allclose(stats["top1_prob"], torch.ones(1, 2))
    assert stats["argmax"].tolist() == [[7, 7]]
    masked = torch.full((1, 1, 4), -math.inf)
    masked[0, 0, :2] = 0.0  # two allowed tokens, two banned: entropy log 2, no NaN from 0·log 0
    assert token_stats(masked)["entropy"].item() == pytest.approx(math.log(2))


def test_token_stats_targets_ranks_and_ties():
    logits = torch.tensor([[[3.0, 1.0, 2.0, 2.0], [1.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]]])
    targets = torch.tensor([[2, 1, -100]])
    stats = token_stats(logits, targets)
    assert stats["target_rank"].tolist() == [
        [1, 0, -1]
    ]  # the tie with token 3 does not count against token 2
    assert stats["argmax"].tolist() == [[0, 0, 0]]  # ... and a target tied with the maximum is rank 0
    expected_nll = -torch.log_softmax(logits[0, :2], -1)[[0, 1], [2, 1]]
    assert torch.allclose(stats["nll"][0, :2], expected_nll)
    assert torch.allclose(stats["target_prob"][0, :2], torch.exp(-expected_nll))
    assert math.isnan(stats["nll"][0, 2]) and math.isnan(stats["target_prob"][0, 2])
    with pytest.raises(ValueError, match="vocabulary size"):
        token_stats(logits, torch.tensor([[4, 0, 0]]))


def test_token_stats_chunking_and_bfloat16():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 40, generator=gen) * 3
    targets = torch.randint(0, 40, (3, 7), generator=gen)
    whole = token_stats(logits, targets)
    chunked = token_stats(logits, targets, chunk_size=4)
    for key in whole:
        assert torch.allclose(whole[key], chunked[key]), key
    ranks = (logits > logits.gather(-1, targets[..., None])).sum(-1)
    assert torch.equal(whole["target_rank"], ranks)
    half = token_stats(logits.bfloat16(), targets)
    assert half["entropy"].dtype == torch.float32
    assert torch.equal(half["argmax"], logits.bfloat16().float().argmax(-1))


def test_sharpness_summary():
    v = 10
    logits = torch.zeros(1, 4, v)
    logits[0, 0, 3] = 50.0  # near one-hot on token 3
    targets = torch.tensor([[3, 5, 0, -100]])
    summary = sharpness(logits, targets)
    assert summary["n_positions"] == 3  # the -100 position is excluded everywhere
    assert summary["entropy"] == pytest.approx(2 / 3 * math.log(v), abs=1e-6)
    assert summary["top1_prob"] == pytest.approx((1 + 2 / v) / 3, abs=1e-6)
    assert summary["nll"] == pytest.approx(2 / 3 * math.log(v), abs=1e-6)
    assert summary["perplexity"] == pytest.approx(math.exp(summary["nll"]))
    assert summary["hits_at_1"] == 1.0  # uniform rows: every target ties with the maximum
    assert summary["mean_rank"] == 0.0
    assert summary["rank_histogram"]["1"] == 3

    masked = sharpness(logits, targets, mask=torch.tensor([[False, True, True, True]]))
    assert masked["n_positions"] == 2 and masked["entropy"] == pytest.approx(math.log(v))
    no_targets = sharpness(logits)
    assert no_targets["n_positions"] == 4 and "nll" not in no_targets
    with pytest.raises(ValueError, match="No position"):
        sharpness(logits, torch.full((1, 4), -100))

    # Summaries of concatenated per-batch stats equal the summary of the whole batch.
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 6, 30, generator=gen) * 2
    targets = torch.randint(0, 30, (4, 6), generator=gen)
    parts = [token_stats(logits[i : i + 2], targets[i : i + 2]) for i in (0, 2)]
    joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    from_parts, whole = sharpness_from_stats(joined), sharpness(logits, targets)
    assert from_parts.pop("rank_histogram") == whole.pop("rank_histogram")
    assert from_parts == pytest.approx(whole)


def test_rank_histogram_bands():
    ranks = torch.tensor([0, 0, 1, 2, 3, 4, 5, 9, 10, 99, 100, 999, 1000, 5000, -1])
    assert rank_histogram(ranks) == {
        "1": 2,
        "2": 1,
        "3": 1,
        "4-5": 2,
        "6-10": 2,
        "11-100": 2,
        "101-1000": 2,
        ">1000": 2,
    }
    assert rank_histogram([0, 4, 7], bins=(2, 5)) == {"1-2": 1, "3-5": 1, ">5": 1}
    with pytest.raises(ValueError, match="strictly increasing"):
        rank_histogram([0], bins=(5, 5))


def test_top1_agreement():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 11, generator=gen)
    assert top1_agreement(logits, logits) == 1.0
    assert top1_agreement(logits, logits.clone() * 3 + 1) == 1.0  # rank-preserving changes keep the argmax
    a = torch.tensor([[1, 2, 3, 4]])
    b = torch.tensor([[1, 0, 3, 0]])
    assert top1_agreement_ids(a, b) == 0.5
    assert top1_agreement_ids(a, b, mask=torch.tensor([[True, False, True, False]])) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        top1_agreement_ids(a, b[:, :3])


def test_agreement_matrix_intervals_resample_blocks_not_positions():
    """Known cases: 40 blocks of 10 positions. "half" agrees with "a" on every position of blocks 0-19 and on
    none of blocks 20-39: the mean of 20 ones and 20 zeros, whose 95 % interval is 0.5 ± 1.96 · sqrt(0.25 / 40) =
    [0.345, 0.655] (normal approximation). "seven" agrees on 7 of the 10 positions of every block: every block
    says 0.7, so an interval over blocks is exactly [0.7, 0.7] (one over positions would not be)."""
    n_blocks, per_block = 40, 10
    a = torch.arange(n_blocks * per_block).view(n_blocks, per_block)
    half = a.clone()
    half[20:] += 1000
    seven = a.clone()
    seven[:, 7:] += 1000
    result = top1_agreement_matrix({"a": a, "half": half, "seven": seven.reshape(-1)}, n_blocks=n_blocks)
    agreement, ci = result["agreement"], result["agreement_ci"]
    assert list(agreement) == ["a", "half", "seven"] and list(agreement["half"]) == ["a", "half", "seven"]
    assert agreement["a"]["half"] == agreement["half"]["a"] == 0.5
    low, high = ci["a"]["half"]
    assert low == pytest.approx(0.345, abs=0.03) and high == pytest.approx(0.655, abs=0.03)
    assert ci["half"]["a"] == ci["a"]["half"]
    assert agreement["a"]["seven"] == pytest.approx(0.7) and ci["a"]["seven"] == pytest.approx([0.7, 0.7])
    for name in agreement:
        assert agreement[name][name] == 1.0 and ci[name][name] == [1.0, 1.0]
    # "half" and "seven" agree on 7 positions of each of blocks 0-19 and on 3 of each of blocks 20-39: blocks of
    # 0.7 and 0.3, sd 0.2, so 0.5 ± 1.96 · 0.2 / sqrt(40).
    assert agreement["half"]["seven"] == pytest.approx(0.5)
    assert ci["half"]["seven"] == pytest.approx([0.5 - 0.062, 0.5 + 0.062], abs=0.015)


def test_rank_shift():
    result = rank_shift([0, 3, 5, 2, 0, -1], [0, 0, 9, 2, 1, 4])
    assert result["n_positions"] == 5  # the -1 (ignored) position is left out
    assert result["share_improved"] == pytest.approx(1 / 5)
    assert result["share_unchanged"] == pytest.approx(2 / 5)
    assert result["share_worsened"] == pytest.approx(2 / 5)
    assert result["share_to_top1"] == pytest.approx(1 / 5)
    assert result["share_from_top1"] == pytest.approx(1 / 5)
    expected = (math.log(1) - math.log(4) + math.log(10) - math.log(6) + math.log(2) - math.log(1)) / 5
    assert result["mean_log_rank_change"] == pytest.approx(expected)
    assert result["hits_at_1_before"] == pytest.approx(2 / 5) and result["hits_at_1_after"] == pytest.approx(
        2 / 5
    )
    same = rank_shift(torch.tensor([[1, 2]]), torch.tensor([[1, 2]]))
    assert same["share_unchanged"] == 1.0 and same["mean_log_rank_change"] == 0.0


def test_dataset_bleu_equals_sacrebleu_against_all_training_sequences():
    import sacrebleu

    from hyperfit.common.analysis import dataset_bleu

    g = torch.Generator().manual_seed(7)
    train = torch.randint(0, 9, (6, 20), generator=g).tolist()
    gens = [train[0][3:15], torch.randint(0, 9, (14,), generator=g).tolist(), [1, 2]]
    ours = dataset_bleu(gens, train)
    refs = [" ".join(map(str, t)) for t in train]
    for gen, value in zip(gens, ours, strict=True):
        expected = sacrebleu.sentence_bleu(" ".join(map(str, gen)), refs, tokenize="none").score / 100
        assert value == pytest.approx(expected, abs=1e-9)
    assert ours[0] > ours[1]  # a copied span is closer to the training set


def test_ttr_by_position_slides_a_window_over_each_sequence():
    from hyperfit.common.analysis import ttr_by_position

    looping = [1, 2, 3, 4] + [5, 6] * 4  # 12 ids: fresh, then a loop
    fresh = list(range(100, 110))  # 10 ids, all distinct
    result = ttr_by_position([looping, fresh], window=4, step=2)
    assert result["position"] == [4, 6, 8, 10, 12]
    assert result["per_sequence"][0] == [1.0, 1.0, 0.5, 0.5, 0.5]
    assert result["per_sequence"][1] == [1.0, 1.0, 1.0, 1.0]
    assert result["mean"] == [1.0, 1.0, 0.75, 0.75, 0.5] and result["n"] == [2, 2, 2, 2, 1]


def test_word_metrics_count_words_not_tokens():
    from hyperfit.text.metrics import word_metrics

    m = word_metrics(["the cat sat on the mat", "a b a b a b"], ttr_window=96)
    assert m["word_ttr"] == pytest.approx((5 / 6 + 2 / 6) / 2)
    # word bigrams: text 1 has 5 distinct of 5, text 2 has 2 distinct of 5 -> rep-2 = 1 - 7/10
    assert m["word_rep_2"] == pytest.approx(0.3)
    assert 0 < m["word_diversity"] < 1
