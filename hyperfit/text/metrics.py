"""Word-level twins of the id-level generation metrics (TTR, SimCTG rep-n and diversity): the same definitions
(``hyperfit.common.analysis``) on whitespace-separated words of the decoded continuation, so numbers do not hinge
on the tokenizer (the paper and its official code count token ids)."""

from __future__ import annotations

from hyperfit.common import analysis


def word_metrics(texts: list[str], *, ttr_window: int = 96) -> dict[str, float]:
    """``word_ttr`` (last ``ttr_window`` words of each text, averaged), ``word_rep_2/3/4`` (corpus rep-n) and
    ``word_diversity`` (Π (1 - rep-n), n = 2..4) over the whitespace-split texts."""
    words = [text.split() for text in texts]
    return {
        "word_ttr": analysis.mean_ttr(words, window=ttr_window),
        **{f"word_rep_{n}": analysis.rep_n(words, n=n) for n in (2, 3, 4)},
        "word_diversity": analysis.diversity(words),
    }
