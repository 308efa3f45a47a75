"""One-off check: our contrastive search and DoLa against transformers 4.46's own (``generate(penalty_alpha=0.6,
top_k=4)`` and ``generate(dola_layers="high", repetition_penalty=1.2)``), which transformers 5 no longer ships.

The same tiny random Llamas (float32; 2 blocks, and 6 blocks with scaled-up embeddings and head, so that DoLa's
"high" bucket holds two layers whose distributions differ) are built here, their state dicts saved, and reloaded
by a child process that imports transformers 4.46 from a separate folder. Each decodes 4 prompts by 32 tokens,
one row at a time and as one batch; the script prints how many tokens and rows agree. For DoLa it also runs ours
with 4.x's divergence swapped in, to show where the remaining differences come from (docs/decoders.md).

    pip install --no-deps --target /tmp/tf4 transformers==4.46.3 tokenizers==0.20.3 huggingface_hub==0.26.2 safetensors
    .venv/bin/python benchmarks/check_decoders_tf4.py [--tf4 /tmp/tf4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

VOCAB, PROMPT, NEW, ROWS = 101, 8, 32, 4
MODELS = {
    "llama2": {"layers": 2, "seed": 1, "scale": None},
    "llama6": {"layers": 6, "seed": 4, "scale": (30, 20)},
}


def build(layers: int, seed: int, scale):
    """A tiny Llama that both transformers 4.46 and 5.x build identically from these arguments."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    if scale is not None:
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(scale[0])
            model.lm_head.weight.mul_(scale[1])
    return model


def prompts() -> torch.Tensor:
    return torch.randint(3, VOCAB, (ROWS, PROMPT), generator=torch.Generator().manual_seed(7))


METHODS = {
    "contrastive": {"penalty_alpha": 0.6, "top_k": 4},
    "dola": {"dola_layers": "high", "repetition_penalty": 1.2},
}


@torch.no_grad()
def child(folder: Path) -> None:
    """transformers 4.46's generate on the saved weights: {model: {method: {"single"|"batch": ids}}}."""
    import transformers

    out: dict = {"version": transformers.__version__}
    for name, spec in MODELS.items():
        model = build(spec["layers"], spec["seed"], None)
        model.load_state_dict(torch.load(folder / f"{name}.pt"), strict=True)
        ids = prompts()
        out[name] = {}
        for method, kwargs in METHODS.items():

            def run(batch, model=model, kwargs=kwargs):
                seqs = model.generate(
                    batch,
                    attention_mask=torch.ones_like(batch),
                    do_sample=False,
                    max_new_tokens=NEW,
                    eos_token_id=None,
                    pad_token_id=0,
                    **kwargs,
                )
                return seqs[:, PROMPT:].tolist()

            out[name][method] = {"single": [run(ids[r : r + 1])[0] for r in range(ROWS)], "batch": run(ids)}
    (folder / "tf4.json").write_text(json.dumps(out))


def kl_div_4x(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """transformers 4.x's "JS divergence": ½ (kl_div(log p, m) + kl_div(log q, m)).mean(-1) = ½ (KL(m‖p) +
    KL(m‖q)) / v."""
    import torch.nn.functional as F

    m = 0.5 * (p_logits.softmax(-1) + q_logits.softmax(-1))
    kl1 = F.kl_div(p_logits.log_softmax(-1), m, reduction="none").mean(-1)
    kl2 = F.kl_div(q_logits.log_softmax(-1), m, reduction="none").mean(-1)
    return 0.5 * (kl1 + kl2)


@torch.no_grad()
def ours(model) -> dict:
    from transformers import RepetitionPenaltyLogitsProcessor

    from hyperfit.common import decoders

    ids = prompts()
    runs = {
        "contrastive": lambda b: decoders.contrastive_decode(
            model, b, max_new_tokens=NEW, penalty_alpha=0.6, top_k=4
        ),
        "dola": lambda b: decoders.dola_decode(
            model,
            b,
            max_new_tokens=NEW,
            layers="high",
            logits_processors=[RepetitionPenaltyLogitsProcessor(1.2)],
        ),
    }
    out = {}
    for method, run in runs.items():
        out[method] = {
            "single": [run(ids[r : r + 1]).new_ids[0].tolist() for r in range(ROWS)],
            "batch": run(ids).new_ids.tolist(),
        }
    real = decoders._js_divergence
    decoders._js_divergence = kl_div_4x
    try:
        dola = runs["dola"]
        out["dola_4x_divergence"] = {
            "single": [dola(ids[r : r + 1]).new_ids[0].tolist() for r in range(ROWS)],
            "batch": dola(ids).new_ids.tolist(),
        }
    finally:
        decoders._js_divergence = real
    return out


def agreement(a: list[list[int]], b: list[list[int]]) -> str:
    tokens = sum(x == y for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    rows = sum(ra == rb for ra, rb in zip(a, b, strict=True))
    firsts = [
        next((i for i, (x, y) in enumerate(zip(ra, rb, strict=True)) if x != y), None)
        for ra, rb in zip(a, b, strict=True)
    ]
    return f"{tokens}/{ROWS * NEW} tokens, {rows}/{ROWS} rows identical, first difference per row {firsts}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf4", default="/tmp/tf4", help="folder holding transformers 4.46 (pip --target)")
    args = parser.parse_args()
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mine = {}
        for name, spec in MODELS.items():
            model = build(spec["layers"], spec["seed"], spec["scale"])
            torch.save(model.state_dict(), folder / f"{name}.pt")
            mine[name] = ours(model)
        env = {**os.environ, "PYTHONPATH": args.tf4}
        subprocess.run([sys.executable, __file__, "--child", str(folder)], env=env, check=True)
        theirs = json.loads((folder / "tf4.json").read_text())
    print(
        f"ours on transformers {transformers.__version__} vs transformers {theirs['version']}, torch {torch.__version__}"
    )
    for name in MODELS:
        for method in METHODS:
            for mode in ("single", "batch"):
                print(
                    f"{name} {method:<11} {mode:<6}: {agreement(mine[name][method][mode], theirs[name][method][mode])}"
                )
            ours_batch, their_rows = mine[name][method]["batch"], theirs[name][method]["single"]
            print(f"{name} {method:<11} ours batch vs 4.x single rows: {agreement(ours_batch, their_rows)}")
        t4 = theirs[name]["dola"]
        m4 = mine[name]["dola_4x_divergence"]
        print(f"{name} dola, ours with 4.x's divergence, single: {agreement(m4['single'], t4['single'])}")
        print(
            f"{name} dola, ours with 4.x's divergence, batch vs 4.x single rows: {agreement(m4['batch'], t4['single'])}"
        )
        print(f"{name} dola, 4.x batch vs 4.x single rows: {agreement(t4['batch'], t4['single'])}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]))
    else:
        main()
