"""Citation blocker (hyperfit.common.blocker) against transformers' NoBadWordsLogitsProcessor as the oracle."""

import inspect

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList, NoBadWordsLogitsProcessor

from hyperfit.common.blocker import CitationBlocker


def all_ngrams(train: torch.Tensor, n: int = 5) -> list[list[int]]:
    return train.unfold(1, n, 1).reshape(-1, n).tolist()


def batch_with_hits(
    train: torch.Tensor, *, b: int, t: int, v: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (input_ids, scores); the first half of the rows end in a training 4-gram, so they must hit."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, v, (b, t), generator=g)
    for row in range(b // 2):
        seq = int(torch.randint(0, train.shape[0], (), generator=g))
        pos = int(torch.randint(0, train.shape[1] - 4, (), generator=g))
        input_ids[row, -4:] = train[seq, pos : pos + 4]
    return input_ids, torch.randn(b, v, generator=g)


@pytest.mark.parametrize(
    ("vocab", "hash_modulus"),
    [(12, None), (100_000, None), (12, 1), (12, 3)],
    ids=["exact-keys", "hashed-keys", "one-bucket", "modulus-3"],
)
def test_matches_bad_words_oracle_on_random_scores(vocab, hash_modulus):
    g = torch.Generator().manual_seed(0)
    # Few distinct ids so 4-grams recur with several different next tokens.
    train = torch.randint(0, 6, (6, 40), generator=g) * (vocab // 6)
    blocker = CitationBlocker(train, hash_modulus=hash_modulus)
    assert blocker.exact == (vocab == 12 and hash_modulus is None)
    if hash_modulus is not None:
        assert blocker.max_bucket > 1  # collisions really happen and must be resolved by verification
    oracle = NoBadWordsLogitsProcessor(all_ngrams(train))
    changed_rows = unchanged_rows = 0
    for seed in range(10):
        input_ids, scores = batch_with_hits(train, b=8, t=7, v=vocab, seed=seed)
        input_ids = input_ids // (vocab // 6) * (vocab // 6)  # same id set as the training data
        ours, expected = blocker(input_ids, scores.clone()), oracle(input_ids, scores.clone())
        assert torch.equal(ours, expected)
        changed = (ours != scores).any(1)
        changed_rows += int(changed.sum())
        unchanged_rows += int((~changed).sum())
    assert changed_rows > 0 and unchanged_rows > 0
    assert blocker.fired == changed_rows


def test_short_input_and_out_of_vocab_tails_are_left_alone():
    train = torch.arange(10).reshape(1, 10)
    blocker = CitationBlocker(train)
    scores = torch.randn(2, 50)
    assert blocker(torch.tensor([[1, 2, 3], [4, 5, 6]]), scores) is scores  # t < n - 1
    assert torch.equal(blocker(torch.tensor([[1, 2, 3, 40], [44, 45, 46, 47]]), scores), scores)
    assert blocker.fired == 0


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    # initializer_range 0.3 (not 0.02) so greedy output varies instead of repeating one token.
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=64,
        n_positions=128,
        initializer_range=0.3,
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config).eval()


GREEDY = dict(do_sample=False, max_new_tokens=40, eos_token_id=None, pad_token_id=0)


def test_generate_matches_bad_words_ids_end_to_end():
    model = tiny_gpt2()
    prompt = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(1))
    # Train on the model's own greedy output, so unblocked decoding would copy it token for token; then add
    # the blocked output and block again, so the blocker must fire mid-generation too.
    train = model.generate(prompt, **GREEDY)
    for _ in range(2):
        blocker = CitationBlocker(train)
        ours = model.generate(prompt, logits_processor=LogitsProcessorList([blocker]), **GREEDY)
        expected = model.generate(prompt, bad_words_ids=all_ngrams(train), **GREEDY)
        assert torch.equal(ours, expected)
        assert blocker.fired > 0
        train_ngrams = {tuple(g) for g in all_ngrams(train)}
        # Every 5-gram that ends on a generated token (the prompt's own 5-grams are in the training data).
        assert not [g for g in all_ngrams(ours[:, 4:]) if tuple(g) in train_ngrams]
        train = torch.cat([train, ours])


def test_own_greedy_loop_with_kv_cache_calls_it_like_generate():
    model = tiny_gpt2()
    prompt = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(2))
    train = model.generate(prompt, **GREEDY)
    expected = model.generate(prompt, logits_processor=[CitationBlocker(train)], **GREEDY)
    # transformers 5 renamed past_key_values to cache (kwarg and output field).
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    blocker, ids, cache = CitationBlocker(train), prompt, None
    with torch.no_grad():
        for _ in range(40):
            out = model(ids if cache is None else ids[:, -1:], use_cache=True, **{cache_name: cache})
            cache = out[cache_name]
            scores = blocker(ids, out.logits[:, -1].float())
            ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], 1)
    assert torch.equal(ids, expected)
    assert blocker.fired > 0


def test_ragged_list_input_equals_tensor_input():
    train = torch.randint(0, 5, (4, 20), generator=torch.Generator().manual_seed(3))
    ragged = [train[0].tolist(), train[1, :7].tolist(), train[2, :5].tolist(), train[3].tolist()]
    ours = CitationBlocker(ragged)
    oracle = NoBadWordsLogitsProcessor([g for seq in ragged for g in all_ngrams(torch.tensor([seq]))])
    for seed in range(5):
        input_ids, scores = batch_with_hits(train, b=6, t=9, v=5, seed=seed)
        assert torch.equal(ours(input_ids, scores.clone()), oracle(input_ids, scores.clone()))


def test_blocked_next_tokens_counters_reset_and_dtype():
    train = torch.tensor([[1, 2, 3, 4, 5, 1, 2, 3, 4, 7], [9, 1, 2, 3, 4, 5, 0, 0, 0, 0]])
    blocker = CitationBlocker(train)
    assert blocker.blocked_next_tokens([8, 1, 2, 3, 4]) == [5, 7]  # only the last n-1 ids matter
    assert blocker.blocked_next_tokens([9, 1, 2, 3]) == [4]
    assert blocker.blocked_next_tokens([2, 3, 4]) == []
    assert blocker.blocked_next_tokens([0, 0, 0, 0]) == []  # (0,0,0,0) is never followed by anything
    scores = torch.zeros(3, 10, dtype=torch.bfloat16)
    out = blocker(torch.tensor([[1, 2, 3, 4], [9, 1, 2, 3], [5, 5, 5, 5]]), scores)
    assert out.dtype == torch.bfloat16
    assert torch.isinf(out).nonzero().tolist() == [[0, 5], [0, 7], [1, 4]]
    assert (blocker.fired, blocker.blocked_tokens) == (2, 3)
    blocker.reset()
    assert (blocker.fired, blocker.blocked_tokens) == (0, 0)


def test_include_prompt_false_only_blocks_tails_made_of_generated_ids():
    train = [[1, 2, 3, 4, 5]]
    with_prompt = CitationBlocker(train, n=3)
    generated_only = CitationBlocker(train, n=3, include_prompt=False, prompt_len=2)
    scores = torch.zeros(1, 8)

    def blocked(blocker, row):
        return torch.isinf(blocker(torch.tensor([row]), scores))[0].nonzero().squeeze(1).tolist()

    # prompt = first 2 ids; the tail (1, 2) is all prompt, then half prompt, then all generated.
    assert blocked(with_prompt, [1, 2]) == [3] and blocked(generated_only, [1, 2]) == []
    assert blocked(with_prompt, [9, 1, 2]) == [3] and blocked(generated_only, [9, 1, 2]) == []
    assert blocked(with_prompt, [9, 9, 2, 3]) == [4] and blocked(generated_only, [9, 9, 2, 3]) == [4]
    generated_only.reset(prompt_len=1)  # next batch has a 1-token prompt: (1, 2) is now all generated
    assert blocked(generated_only, [9, 1, 2]) == [3]


def test_word_start_variant_lets_the_current_word_finish():
    # Word starts 1, 2, 3; 7, 8, 9 continue a word. Training text: "1·7 2·8 3·9" (two pieces per word).
    train = [[1, 7, 2, 8, 3, 9]]
    plain = CitationBlocker(train, n=3)
    word = CitationBlocker(train, n=3, word_start_ids={1, 2, 3})
    assert [plain.blocked_next_tokens(t) for t in ([1, 7], [7, 2], [2, 8], [8, 3])] == [[2], [8], [3], [9]]
    # Copying may finish the word in progress (7,2 -> 8 and 8,3 -> 9 stay allowed) but not start the next one.
    assert [word.blocked_next_tokens(t) for t in ([1, 7], [7, 2], [2, 8], [8, 3])] == [[2], [], [3], []]
    out = word(torch.tensor([[1, 7], [7, 2]]), torch.zeros(2, 10))
    assert torch.isinf(out).nonzero().tolist() == [[0, 2]]
    assert (word.fired, word.blocked_tokens) == (1, 1)
    # A data set whose continuations are never word starts leaves nothing to block.
    nothing = CitationBlocker([[7, 8, 9, 7]], n=3, word_start_ids=torch.tensor([1, 2, 3]))
    assert nothing(torch.tensor([[7, 8]]), torch.zeros(1, 10)).isfinite().all()


@pytest.mark.parametrize(
    ("train", "kwargs", "message"),
    [
        ([[1, 2, 3, 4, 5, 6]], {"n": 1}, "n=1 is invalid"),
        ([[1, 2, 3, 4, 5, 6]], {"n": 0}, "n=0 is invalid"),
        ([[1, 2, 3, 4, 5, 6], [1, 2, 3]], {}, "sequence 1 has 3 ids, fewer than n=5"),
        (torch.zeros(4, 3, dtype=torch.long), {}, "sequence 0 has 3 ids, fewer than n=5"),
        ([[1, 2, 3, 4, 5, 6]], {"include_prompt": False}, "needs prompt_len"),
        ([], {}, "train_ids is empty"),
        (torch.zeros(10, dtype=torch.long), {}, "pass LongTensor"),
        ([[1, 2, 3, -100, 5, 6]], {}, "negative ids"),
    ],
)
def test_bad_input_raises_one_clear_sentence(train, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CitationBlocker(train, **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scores_give_the_cpu_result():
    train = torch.randint(0, 6, (6, 40), generator=torch.Generator().manual_seed(4))
    blocker_cpu, blocker_cuda = CitationBlocker(train), CitationBlocker(train.cuda())
    for seed in range(5):
        input_ids, scores = batch_with_hits(train, b=8, t=7, v=6, seed=seed)
        out = blocker_cuda(input_ids.cuda(), scores.cuda())
        assert out.device.type == "cuda"
        assert torch.equal(out.cpu(), blocker_cpu(input_ids, scores))
    assert blocker_cuda.fired == blocker_cpu.fired > 0


def test_word_finish_on_a_real_tokenizer_and_a_model_that_memorised_its_text(tiny_tokenizer):
    """The word-start ids come from a real byte-level BPE vocabulary, and a model that recites its training text
    is allowed to finish the word it is in, never to start a copied word (plain blocking: no copied 5-gram)."""
    from hyperfit.common.decode import decode
    from hyperfit.text.model import word_start_ids
    from tests.conftest import corpus_lines, make_tiny_llama

    starts = set(word_start_ids(tiny_tokenizer))
    assert starts == {
        i for i in range(len(tiny_tokenizer)) if tiny_tokenizer.decode([i]).startswith((" ", "\n"))
    }
    ids = tiny_tokenizer(corpus_lines()[3])["input_ids"][:48]
    model = make_tiny_llama(len(tiny_tokenizer))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = torch.tensor([ids])
    for _ in range(150):
        model(batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    prompt = batch[:, :8]
    with torch.no_grad():
        assert decode(model, prompt, max_new_tokens=30).sequences()[0] == ids[8:38]  # it recites
        plain = CitationBlocker([ids], n=5)
        finish = CitationBlocker([ids], n=5, word_start_ids=sorted(starts))
        outputs = {
            blocker: ids[:8]
            + decode(model, prompt, max_new_tokens=30, logits_processors=[blocker]).sequences()[0]
            for blocker in (plain, finish)
        }
    train_grams = {tuple(ids[i : i + 5]) for i in range(len(ids) - 4)}

    def copied_ends(seq):  # last token of every generated-reaching 5-gram that occurs in the training text
        return [seq[i + 4] for i in range(4, len(seq) - 4) if tuple(seq[i : i + 5]) in train_grams]

    assert plain.fired > 0 and copied_ends(outputs[plain]) == []
    assert finish.fired > 0 and copied_ends(outputs[finish])  # copying went on inside words...
    assert not starts & set(copied_ends(outputs[finish]))  # ...but no copied n-gram ends in a new word


def test_changed_counts_only_steps_where_the_top_token_was_blocked():
    # Training 5-gram 1 2 3 4 -> 5. Both rows end in the prefix 1 2 3 4, so both fire; only in row 0 is the
    # blocked id 5 the top-scoring one, so only row 0 changes the greedy choice.
    blocker = CitationBlocker(torch.tensor([[1, 2, 3, 4, 5]]))
    input_ids = torch.tensor([[9, 1, 2, 3, 4], [8, 1, 2, 3, 4]])
    scores = torch.zeros(2, 10)
    scores[0, 5] = 3.0  # row 0 would pick 5
    scores[1, 7] = 3.0  # row 1 would pick 7; 5 is blocked but never chosen
    out = blocker(input_ids, scores)
    assert blocker.fired == 2 and blocker.changed == 1
    assert out.argmax(-1).tolist() == [0, 7]
    blocker.reset()
    assert blocker.fired == blocker.changed == 0


def test_include_prompt_decides_whether_a_copy_may_start_in_the_prompt():
    from hyperfit.common.compare import STRATEGIES, run_strategy

    model = tiny_gpt2()
    prompts = torch.randint(0, 64, (3, 6), generator=torch.Generator().manual_seed(1))
    greedy, _ = run_strategy(model, prompts, STRATEGIES["greedy"], max_new_tokens=8)
    # Training data: the prompts' last 4 ids followed by the greedy first token, so the prompt ends in a training
    # 4-gram whose continuation is exactly what greedy decoding would pick.
    train = torch.tensor([p[-4:] + [g[0]] for p, g in zip(prompts.tolist(), greedy, strict=True)])
    strategy = STRATEGIES["greedy_blocked"]
    with_prompt, facts = run_strategy(model, prompts, strategy, max_new_tokens=8, train_ids=train)
    without, facts_without = run_strategy(
        model, prompts, strategy, max_new_tokens=8, train_ids=train, blocker_include_prompt=False
    )
    assert all(w[0] != g[0] for w, g in zip(with_prompt, greedy, strict=True))
    assert facts["blocker_changed"] >= 3 and facts["blocker_include_prompt"] is True
    assert without == greedy and facts_without["blocker_changed"] == 0
