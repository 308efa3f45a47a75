"""A GGUF model is de-quantised once and read back from its float32 copy: same tokens, same logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyperfit.text.model import ModelConfig, eos_ids, gguf_cache_dir, load_causal_lm

gguf = pytest.importorskip("gguf")


def write_tiny_gguf(path, tokenizer, *, seed: int = 0, width: int = 32, layers: int = 2) -> None:
    """A two-block Llama in GGUF (float32 tensors, byte-level BPE vocabulary), as llama.cpp would write it."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [t for t, _ in sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])]
    tokens.append(
        "<|endoftext|>"
    )  # transformers' GGUF converter adds it to a gpt2-type vocabulary if missing
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]]
    heads, kv_heads, ffn = 4, 2, 2 * width
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(256)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t.startswith("<") and t.endswith(">") else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    generator = torch.Generator().manual_seed(seed)

    def weight(*shape: int) -> np.ndarray:
        return (torch.randn(*shape, generator=generator) * 0.1).numpy()

    kv_width = kv_heads * width // heads
    writer.add_tensor("token_embd.weight", weight(len(tokens), width))
    writer.add_tensor("output_norm.weight", np.ones(width, np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), width))
    for i in range(layers):
        for name, shape in {
            "attn_norm": (width,),
            "attn_q": (width, width),
            "attn_k": (kv_width, width),
            "attn_v": (kv_width, width),
            "attn_output": (width, width),
            "ffn_norm": (width,),
            "ffn_gate": (ffn, width),
            "ffn_up": (ffn, width),
            "ffn_down": (width, ffn),
        }.items():
            value = np.ones(shape, np.float32) if len(shape) == 1 else weight(*shape)
            writer.add_tensor(f"blk.{i}.{name}.weight", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_model_is_read_back_from_its_dequantised_copy(tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFIT_CACHE", str(tmp_path / "cache"))
    model_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(model_file, tiny_tokenizer)
    cfg = ModelConfig(model=str(model_file))
    first, first_tokenizer, description = load_causal_lm(cfg)
    cache = gguf_cache_dir(model_file)
    assert (cache / "model.safetensors").is_file() and (cache / "config.json").is_file()

    # The second load must not parse the GGUF file at all: make that fail loudly if it were tried.
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF file was parsed again")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", no_gguf)
    again, again_tokenizer, again_description = load_causal_lm(cfg)
    assert again_description == description  # runs record the same model
    text = "Rain fell on the city all night, and by morning the river had risen."
    ids = first_tokenizer(text, return_tensors="pt").input_ids
    assert torch.equal(again_tokenizer(text, return_tensors="pt").input_ids, ids)
    assert eos_ids(again, again_tokenizer) == eos_ids(first, first_tokenizer)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, first(ids).logits)


def test_another_gguf_file_under_the_same_name_gets_its_own_copy(tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFIT_CACHE", str(tmp_path / "cache"))
    model_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(model_file, tiny_tokenizer, seed=0)
    first = load_causal_lm(ModelConfig(model=str(model_file)))[0]
    old_cache = gguf_cache_dir(model_file)
    write_tiny_gguf(model_file, tiny_tokenizer, seed=1)  # other weights, same path and size
    assert gguf_cache_dir(model_file) != old_cache
    second = load_causal_lm(ModelConfig(model=str(model_file)))[0]
    assert not torch.equal(first.lm_head.weight, second.lm_head.weight)


def test_an_unwritable_cache_only_costs_time(tiny_tokenizer, tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory would go")
    monkeypatch.setenv("HYPERFIT_CACHE", str(blocked))
    model_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(model_file, tiny_tokenizer)
    model, tokenizer, _ = load_causal_lm(ModelConfig(model=str(model_file)))
    assert model.get_output_embeddings().weight.size(0) == len(tokenizer)
