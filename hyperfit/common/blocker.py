"""Citation blocker (paper §4): a logits processor that forbids continuing any n-gram (n = 5) of the
hyperfitting training ids, so no copied span grows past n - 1 tokens. Same idea as transformers'
`NoRepeatNGramLogitsProcessor`, with the n-grams taken from the training data instead of the current row.

Exactly what is blocked. Before the token at position t is chosen, the row's last n-1 ids (positions t-n+1 ..
t-1) are looked up; if that (n-1)-gram occurs contiguously in any training sequence, every id that follows it
anywhere in the training sequences gets score -inf. So no n-gram of the training ids is ever completed, and a
continuation copies at most n-1 consecutive training ids (n = 5: 4). The paper describes checking "the last 5
generated tokens" and blocking what would continue them, which copies up to 5 ids: that reading is n = 6 here
(`--blocker_n 6`). Prompt ids: with `include_prompt=True` (default) the n-1 looked-up ids may reach back into the
prompt, so a prompt ending in a training (n-1)-gram is blocked at the first generated token; with False only
tails made entirely of generated ids count (`--blocker_include_prompt false`). Counts, per (row, step):
`fired` = the tail matched a training prefix and at least one id was blocked; `changed` = among those, the
highest-scoring id before blocking was one of the blocked ids (under greedy decoding: the blocker changed the
chosen token); `fired - changed` = it only matched a prefix and the chosen token stayed the same.

Index (built once): every training n-gram is split into its (n-1)-token prefix and its next token. The distinct
prefixes get an int64 key and are sorted by it; a CSR layout stores, per prefix, the distinct next tokens:

    keys[K]          sorted prefix keys (int64)
    offsets[K + 1]   prefix k's next tokens are next_ids[offsets[k]:offsets[k + 1]]
    next_ids[E]      int32, distinct within each prefix

Keys: exact packing `sum_j tail[j] * vocab**(n-2-j)` when `vocab**(n-1) <= 2**62` (e.g. 32k vocab at n = 5),
which is injective, so no collision can exist. Otherwise a 62-bit double polynomial hash (two 31-bit
Horner hashes mod the primes 2^31-1 and 2^31-19 with fixed large multipliers, concatenated). A hash may
collide; then the colliding prefixes sit next to each other in `keys`, the prefixes themselves are stored
(`grams[K, n-1]`), and a lookup verifies the row's tail against the stored prefix before using its next tokens,
so a collision costs one more comparison and can never block a wrong token.

Per decoding step, for all rows at once: take the last n-1 ids, compute their key, `torch.searchsorted` into
`keys` (O(b log K)), verify, then gather the hit rows' next-token lists and scatter -inf into `scores`. The
only data-size dependence is the log K of the binary search; nothing loops over the vocabulary or the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import LogitsProcessor

# Two 31-bit Horner hashes with multipliers below their primes: every intermediate h * base + token stays
# below 2^62, so int64 never overflows, on CPU or GPU.
_P1, _B1 = 2**31 - 1, 1_315_423_911
_P2, _B2 = 2**31 - 19, 1_796_357_459
_EXACT_LIMIT = 2**62


class CitationBlocker(LogitsProcessor):
    """Forbid every token that would continue an n-gram of the training ids.

    At each step, for each row: if the row's last n-1 ids occur contiguously somewhere in `train_ids`, every
    token that follows that (n-1)-gram anywhere in `train_ids` gets score -inf. Hence no n-gram of the
    training data can be produced (with the exceptions that `include_prompt` and `word_start_ids` opt into).

    Args:
        train_ids: the hyperfitting training ids, `LongTensor[N, T]` or a list of (possibly ragged) id lists.
            Every sequence needs at least n ids.
        n: n-gram order; the paper blocks 5-grams (a copied span stops at 4 tokens).
        prompt_len: number of prompt positions at the start of every `input_ids` row (the padded prompt width
            under `generate`). Only read when `include_prompt=False`; may be changed between batches with
            `reset(prompt_len=...)`.
        include_prompt: True (default, what `bad_words_ids` does): the tail may include prompt ids, so a
            prompt that ends in a training (n-1)-gram is stopped from continuing it at the first generated token.
            False: only tails made entirely of generated ids count, i.e. the blocker starts once
            `input_ids.shape[1] - prompt_len >= n - 1`; a copy that starts inside the prompt is allowed.
        word_start_ids: "let the current word finish first" (one secondary source for §4 says the zeroing is
            applied once the current word is completed). The ids of tokens that begin a new word (for a subword
            vocabulary, those whose string starts with a space; the caller's tokenizer knows them). When
            given, only continuations that ARE word starts are blocked; a continuation that extends the current
            word is left allowed. So a copied span can still grow inside the word it is in, and is cut at the
            next word boundary: the next copied word cannot begin. `fired` and `blocked_tokens` count only what
            is actually blocked. None (default): block every continuation, the plain n-gram rule.
        hash_modulus: for tests only. None picks the key scheme described in the module docstring; an integer m
            forces hashed keys reduced mod m (m = 1 puts every prefix in one bucket), to show that collisions are
            resolved by verification and never change the output.

    Attributes:
        fired: number of (row, step) events in which at least one token was blocked.
        changed: of those, events in which the top-scoring id of the incoming scores was blocked (greedy
            decoding then picks another token; ``fired - changed`` only matched a prefix).
        blocked_tokens: total number of (row, step, token) scores set to -inf.

    `__call__(input_ids[b, t], scores[b, v]) -> scores[b, v]` follows the `LogitsProcessor` protocol, so the
    blocker works in `model.generate(logits_processor=LogitsProcessorList([blocker]))` and in any loop that
    calls processors the same way. Scores are returned unchanged (same tensor) at steps with no hit and as a
    new tensor otherwise. Rows of `generate` that already finished (eos, then padding) are checked like the
    others, so they may add to `fired`; their scores are discarded by `generate` anyway.
    """

    def __init__(
        self,
        train_ids: torch.Tensor | Sequence[Sequence[int]],
        *,
        n: int = 5,
        prompt_len: int | None = None,
        include_prompt: bool = True,
        word_start_ids: Iterable[int] | torch.Tensor | None = None,
        hash_modulus: int | None = None,
    ):
        if not isinstance(n, int) or n < 2:
            raise ValueError(
                f"CitationBlocker n={n!r} is invalid: n is the n-gram order and must be an integer >= 2 "
                "(the paper uses n=5)."
            )
        if not include_prompt and prompt_len is None:
            raise ValueError(
                "CitationBlocker include_prompt=False needs prompt_len (the prompt width of input_ids); "
                "pass prompt_len=... or use include_prompt=True."
            )
        if hash_modulus is not None and hash_modulus < 1:
            raise ValueError(
                f"CitationBlocker hash_modulus={hash_modulus} must be a positive integer or None."
            )
        self.n = n
        self.prompt_len = prompt_len
        self.include_prompt = include_prompt
        self.fired = 0
        self.changed = 0
        self.blocked_tokens = 0

        flat, lengths = _flatten(train_ids, n)
        self.vocab = int(flat.max()) + 1
        self.exact = hash_modulus is None and self.vocab ** (n - 1) <= _EXACT_LIMIT
        self.hash_modulus = hash_modulus
        self._build(flat, lengths, word_start_ids)

    # ------------------------------------------------------------------ index

    def _build(self, flat: torch.Tensor, lengths: torch.Tensor, word_start_ids) -> None:
        n = self.n
        # Start position of every n-gram that lies inside one sequence.
        seq_starts = torch.cumsum(lengths, 0) - lengths
        n_grams = lengths - n + 1
        starts = torch.repeat_interleave(seq_starts, n_grams) + _ragged_arange(n_grams)
        next_ids = flat[starts + n - 1]
        if word_start_ids is not None:
            word_starts = torch.as_tensor(
                list(word_start_ids) if not torch.is_tensor(word_start_ids) else word_start_ids
            )
            keep = torch.isin(next_ids, word_starts.to("cpu", torch.long))
            starts, next_ids = starts[keep], next_ids[keep]
        if len(starts) == 0:  # only possible with word_start_ids: nothing left to block
            starts = next_ids = torch.zeros(0, dtype=torch.long)

        def col(j: int, at: torch.Tensor = starts) -> torch.Tensor:
            return flat[at + j]

        keys = self._keys([col(j) for j in range(n - 1)])
        # Sort by (key, prefix, next token) with stable sorts, least significant first. With exact keys the
        # prefix is implied by the key, so its columns need no sort.
        order = torch.argsort(next_ids, stable=True)
        if not self.exact:
            for j in reversed(range(n - 1)):
                order = order[torch.argsort(col(j)[order], stable=True)]
        order = order[torch.argsort(keys[order], stable=True)]
        starts, keys, next_ids = starts[order], keys[order], next_ids[order]

        def same_prefix_as_previous(starts: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
            same = keys[1:] == keys[:-1]
            if not self.exact:
                for j in range(n - 1):
                    same &= col(j, starts)[1:] == col(j, starts)[:-1]
            return same

        duplicate = same_prefix_as_previous(starts, keys) & (next_ids[1:] == next_ids[:-1])
        keep = torch.cat([torch.ones(min(1, len(keys)), dtype=torch.bool), ~duplicate])
        starts, keys, next_ids = starts[keep], keys[keep], next_ids[keep]

        new_prefix = torch.cat(
            [torch.ones(min(1, len(keys)), dtype=torch.bool), ~same_prefix_as_previous(starts, keys)]
        )
        first = new_prefix.nonzero().squeeze(1)
        self.keys = keys[first].contiguous()
        self.offsets = torch.cat([first, torch.tensor([len(next_ids)])])
        self.next_ids = next_ids.to(torch.int32)
        # Exact keys need no verification: the key is the prefix.
        self.grams = None if self.exact else torch.stack([col(j, starts[first]) for j in range(n - 1)], 1)
        # Largest number of distinct prefixes sharing one key (1 unless a hash collided): lookups probe this
        # many neighbours. Always 1 for exact keys.
        _, run_lengths = torch.unique_consecutive(self.keys, return_counts=True)
        self.max_bucket = int(run_lengths.max()) if len(run_lengths) else 1
        self._powers = (
            torch.tensor([self.vocab ** (self.n - 2 - j) for j in range(self.n - 1)]) if self.exact else None
        )
        self._device = torch.device("cpu")

    def _keys(self, columns: Sequence[torch.Tensor]) -> torch.Tensor:
        """int64 key of each (n-1)-gram given as n-1 id columns of equal shape; ids must lie in [0, vocab)."""
        if self.exact:
            key = torch.zeros_like(columns[0])
            for c in columns:
                key = key * self.vocab + c
            return key
        h1 = torch.zeros_like(columns[0])
        h2 = torch.zeros_like(columns[0])
        for c in columns:
            h1 = (h1 * _B1 + c) % _P1
            h2 = (h2 * _B2 + c) % _P2
        key = h1 * 2**31 + h2
        return key if self.hash_modulus is None else key % self.hash_modulus

    def _to(self, device: torch.device) -> None:
        if device != self._device:
            self.keys, self.offsets, self.next_ids = (
                x.to(device) for x in (self.keys, self.offsets, self.next_ids)
            )
            if self.grams is not None:
                self.grams = self.grams.to(device)
            if self._powers is not None:
                self._powers = self._powers.to(device)
            self._device = device

    def _lookup(self, tails: torch.Tensor) -> torch.Tensor:
        """Prefix index (into `keys`) of each row of `tails[b, n-1]`, or -1 where the tail is not a prefix."""
        if len(self.keys) == 0:
            return torch.full(tails.shape[:1], -1, dtype=torch.long, device=tails.device)
        # Ids the training data never uses cannot be part of a prefix; clamp them for the key, then reject.
        clamped = tails.clamp(0, self.vocab - 1)
        in_range = (clamped == tails).all(1)
        key = (clamped * self._powers).sum(1) if self.exact else self._keys(clamped.unbind(1))
        pos = torch.searchsorted(self.keys, key)
        found = None
        # Probe the bucket of equal keys (one entry unless a hash collided). A probe past the end lands on the
        # last key, which is then a real candidate and is verified like any other, so no bounds mask is needed.
        for k in range(self.max_bucket):
            idx = (pos + k).clamp_(max=len(self.keys) - 1)
            match = (self.keys[idx] == key) & in_range
            if self.grams is not None:
                match &= (self.grams[idx] == clamped).all(1)
            found = torch.where(match, idx, -1 if found is None else found)
        return found

    # ------------------------------------------------------------- protocol

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t = input_ids.shape[1]
        first_tail_start = 0 if self.include_prompt else self.prompt_len
        if t - first_tail_start < self.n - 1:
            return scores
        self._to(scores.device)
        found = self._lookup(input_ids[:, t - self.n + 1 :])
        hit_rows = (found >= 0).nonzero().squeeze(1)
        # nonzero() is the step's one host sync (its size is data-dependent); the common no-hit step ends here.
        # A hit step syncs once more in repeat_interleave.
        if hit_rows.numel() == 0:
            return scores
        prefix = found[hit_rows]
        begin = self.offsets[prefix]
        counts = self.offsets[prefix + 1] - begin
        rows = torch.repeat_interleave(hit_rows, counts)
        # Flat positions begin[i] + 0..counts[i]-1 of every hit row's next-token list, without a loop.
        shift = torch.repeat_interleave(
            begin - (torch.cumsum(counts, 0) - counts), counts, output_size=len(rows)
        )
        cols = self.next_ids[torch.arange(len(rows), device=rows.device) + shift].long()
        top = scores[hit_rows].argmax(-1)
        scores = scores.clone()
        scores[rows, cols] = float("-inf")
        self.changed += int(torch.isneginf(scores[hit_rows, top]).sum())
        self.fired += hit_rows.numel()
        self.blocked_tokens += rows.numel()
        return scores

    def blocked_next_tokens(self, tail: Sequence[int]) -> list[int]:
        """Sorted ids that would be blocked after `tail` (only its last n-1 ids matter); [] if it is shorter.

        Ignores `include_prompt`/`prompt_len` (those decide which tails are checked, not what a tail blocks).
        """
        tail = list(tail)
        if len(tail) < self.n - 1:
            return []
        found = int(self._lookup(torch.tensor([tail[len(tail) - self.n + 1 :]], device=self._device))[0])
        if found < 0:
            return []
        return sorted(self.next_ids[self.offsets[found] : self.offsets[found + 1]].tolist())

    def reset(self, *, prompt_len: int | None = None) -> None:
        """Zero `fired`, `changed` and `blocked_tokens`; optionally set a new `prompt_len` for the next batch."""
        self.fired = 0
        self.changed = 0
        self.blocked_tokens = 0
        if prompt_len is not None:
            self.prompt_len = prompt_len

    def __repr__(self) -> str:
        return (
            f"CitationBlocker(n={self.n}, prefixes={len(self.keys)}, ngrams={len(self.next_ids)}, "
            f"keys={'exact' if self.exact else 'hashed'}, include_prompt={self.include_prompt}, "
            f"fired={self.fired}, changed={self.changed}, blocked_tokens={self.blocked_tokens})"
        )


def _ragged_arange(counts: torch.Tensor) -> torch.Tensor:
    """cat([arange(c) for c in counts]) without a Python loop."""
    total = counts.sum()
    ends = torch.cumsum(counts, 0)
    return torch.arange(int(total), device=counts.device) - torch.repeat_interleave(ends - counts, counts)


def _flatten(train_ids, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All training ids concatenated (int64, CPU) and the length of each sequence; validates them."""
    if torch.is_tensor(train_ids):
        if train_ids.dim() != 2:
            raise ValueError(
                f"CitationBlocker train_ids has shape {tuple(train_ids.shape)}; pass LongTensor[N, T] "
                "or a list of id lists."
            )
        lengths = torch.full((train_ids.shape[0],), train_ids.shape[1], dtype=torch.long)
        flat = train_ids.detach().to("cpu", torch.long).reshape(-1)
    else:
        rows = [torch.as_tensor(list(r), dtype=torch.long) for r in train_ids]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        flat = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    if len(lengths) == 0:
        raise ValueError("CitationBlocker train_ids is empty; pass the hyperfitting training ids.")
    short = (lengths < n).nonzero().squeeze(1)
    if len(short):
        i = int(short[0])
        raise ValueError(
            f"CitationBlocker train_ids sequence {i} has {int(lengths[i])} ids, fewer than n={n} "
            f"({len(short)} such sequence(s)); drop sequences shorter than n or lower n."
        )
    if int(flat.min()) < 0:
        raise ValueError("CitationBlocker train_ids contains negative ids; strip padding/-100 labels first.")
    return flat, lengths
