"""--train_layers and LoRA through the one trainer: what is frozen, what moves, merged LoRA saves and reloads."""

from __future__ import annotations

import pytest
import torch

from hyperfit.common.config import TrainConfig
from hyperfit.common.layers import compress_names, find_blocks, finish_trainable, prepare_trainable
from hyperfit.common.runs import HyperfitError, Run
from hyperfit.common.train import build_accelerator, train
from tests.conftest import make_tiny_gpt2, make_tiny_llama

VOCAB = 97


def blocks(n: int, t: int, *, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def fit(tmp_path, model, **overrides):
    cfg = TrainConfig(
        **{
            "lr": 3e-3,
            "epochs": 2,
            "batch_size": 4,
            "precision": "fp32",
            "eval_every_epochs": 10,
            **overrides,
        }
    )
    model, description = prepare_trainable(model, cfg)
    result = train(
        model, blocks(8, 16), cfg, accelerator=build_accelerator(cfg, cpu=True), run=Run.open(tmp_path / "r")
    )
    return result, description


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def moved(before: dict, model) -> set[str]:
    after = dict(model.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, after[n].detach())}


def make_tiny_imagegpt():
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

    torch.manual_seed(0)
    return ImageGPTForCausalImageModeling(
        ImageGPTConfig(vocab_size=17, n_positions=32, n_embd=16, n_layer=3, n_head=2)
    )


def test_blocks_are_found_for_llama_gpt2_and_imagegpt():
    assert find_blocks(make_tiny_llama(VOCAB, layers=3))[0] == "model.layers"
    assert find_blocks(make_tiny_gpt2(VOCAB))[0] == "transformer.h"
    name, found = find_blocks(make_tiny_imagegpt())
    assert name == "transformer.h" and len(found) == 3


def test_last_block_only_trains_exactly_the_last_block(tmp_path):
    model = make_tiny_llama(VOCAB, layers=3)
    before = snapshot(model)
    result, description = fit(tmp_path, model, train_layers="last:1")
    changed = moved(before, finish_trainable(result["model"]))
    in_last = {n for n in before if n.startswith("model.layers.2.")}
    assert changed == in_last
    assert description["trainable_params"] == sum(before[n].numel() for n in in_last)
    assert description["trainable"] == [
        n.replace("model.layers.2.", "model.layers.{2}.") for n in before if n in in_last
    ]


def test_embeddings_and_head_on_an_untied_model_train_only_those(tmp_path):
    model = make_tiny_llama(VOCAB)
    before = snapshot(model)
    result, description = fit(tmp_path, model, train_layers="embeddings,head")
    assert moved(before, result["model"]) == {"model.embed_tokens.weight", "lm_head.weight"}
    assert description["tied_embeddings"] is False


def test_head_of_a_tied_model_is_the_embedding_matrix(tmp_path):
    model = make_tiny_gpt2(VOCAB, dropout=0.0)
    assert model.lm_head.weight is model.transformer.wte.weight
    before = snapshot(model)
    result, description = fit(tmp_path, model, train_layers="head")
    assert moved(before, result["model"]) == {"transformer.wte.weight"}
    assert description["tied_embeddings"] is True and "share one matrix" in description["note"]


def test_imagegpt_embeddings_are_token_and_position_tables(tmp_path):
    model = make_tiny_imagegpt()
    cfg = TrainConfig(train_layers="embeddings")
    _, description = prepare_trainable(model, cfg)
    assert sorted(description["trainable"]) == ["transformer.wpe.weight", "transformer.wte.weight"]


def test_a_regex_selects_by_name_and_a_bad_spec_lists_the_names():
    model = make_tiny_llama(VOCAB)
    _, description = prepare_trainable(model, TrainConfig(train_layers=r"re:mlp\.(up|down)_proj"))
    assert description["trainable"] == [
        "model.layers.{0-1}.mlp.up_proj.weight",
        "model.layers.{0-1}.mlp.down_proj.weight",
    ]
    with pytest.raises(
        HyperfitError, match=r"matches no parameter.*model\.layers\.\{0-1\}\.self_attn\.q_proj"
    ):
        prepare_trainable(make_tiny_llama(VOCAB), TrainConfig(train_layers="attention_of_doom"))
    with pytest.raises(HyperfitError, match="has 2 blocks"):
        prepare_trainable(make_tiny_llama(VOCAB), TrainConfig(train_layers="last:5"))


def test_lora_on_the_last_block_moves_nothing_else_and_merges_into_a_plain_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    model = make_tiny_llama(VOCAB, layers=3)
    before = snapshot(model)
    result, description = fit(tmp_path, model, train_layers="last:1", lora_r=4, lora_alpha=8, lr=1e-2)
    assert description["lora"]["modules"] == [
        f"model.layers.{{2}}.{m}"
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
        + ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    ]
    assert all("lora_" in n for n in description["trainable"])
    peft_model = result["model"]
    ids = blocks(2, 12, seed=5)
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
    merged = finish_trainable(peft_model)
    assert type(merged).__name__ == "LlamaForCausalLM"
    changed = moved(before, merged)
    assert changed and all(n.startswith("model.layers.2.") for n in changed)
    merged.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, atol=1e-4, rtol=1e-4)


def test_lora_on_gpt2_conv1d_trains(tmp_path):
    model = make_tiny_gpt2(VOCAB, dropout=0.0)
    before = snapshot(model)
    result, description = fit(tmp_path, model, lora_r=2, lora_targets="c_attn")
    assert description["lora"]["modules"] == ["transformer.h.{0-1}.attn.c_attn"]
    changed = moved(before, finish_trainable(result["model"]))
    assert changed == {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_attn.weight"}


def test_lora_targets_that_do_not_exist_are_one_sentence():
    with pytest.raises(HyperfitError, match=r"LoRA target module\(s\) qkv do not exist.*q_proj"):
        prepare_trainable(make_tiny_llama(VOCAB), TrainConfig(lora_r=4, lora_targets="qkv,v_proj"))
    with pytest.raises(HyperfitError, match="needs --lora_r"):
        prepare_trainable(make_tiny_llama(VOCAB), TrainConfig(lora_targets="q_proj"))


def test_compress_names_folds_block_indices():
    names = ["a.emb", "a.h.0.w", "a.h.1.w", "a.h.3.w", "a.h.3.b"]
    assert compress_names(names, "a.h") == ["a.emb", "a.h.{0-1,3}.w", "a.h.{3}.b"]


def test_all_needs_no_block_list_and_freezes_nothing():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5))
    same, description = prepare_trainable(model, TrainConfig())
    assert (
        same is model and description["trainable_params"] == description["total_params"] == 5 * 4 + 4 * 5 + 5
    )
    with pytest.raises(HyperfitError, match="no list of repeated blocks"):
        prepare_trainable(model, TrainConfig(train_layers="last:1"))
