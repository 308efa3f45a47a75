"""The shared trainer on tiny real models: memorisation, parameter updates, batch layouts, resume, NaN, dropout."""

from __future__ import annotations

import pytest
import torch

from hyperfit.common.config import TrainConfig
from hyperfit.common.runs import HyperfitError, Run
from hyperfit.common.train import (
    CHECKPOINT_DIR,
    build_accelerator,
    disable_dropout,
    epoch_order,
    swapped_blocks,
    train,
)
from tests.conftest import make_tiny_gpt2, make_tiny_llama

VOCAB = 97


def blocks(n: int, t: int, *, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def fit(tmp_path, name, ids, *, evaluate=None, resume=False, model=None, **overrides):
    cfg = TrainConfig(
        **{
            "lr": 3e-3,
            "epochs": 3,
            "batch_size": 4,
            "precision": "fp32",
            "eval_every_epochs": 1,
            "log_every_steps": 1,
            **overrides,
        }
    )
    model = model if model is not None else make_tiny_llama(VOCAB)
    run = Run.open(tmp_path / name, resume=resume)
    result = train(model, ids, cfg, accelerator=build_accelerator(cfg, cpu=True), run=run, evaluate=evaluate)
    return result, run


def step_losses(run: Run) -> list[float]:
    return [r["loss"] for r in run.metrics() if r["kind"] == "train"]


def test_tiny_model_memorises_four_samples(tmp_path):
    result, _ = fit(
        tmp_path, "memo", blocks(4, 24), epochs=120, lr=1e-2, stop_loss=0.05, eval_every_epochs=1000
    )
    assert result["final_train_loss"] < 0.05, result["epoch_losses"][-5:]
    assert result["stop_reason"].startswith("train loss")


def test_every_trainable_parameter_changes(tmp_path):
    model = make_tiny_llama(VOCAB)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result, _ = fit(tmp_path, "params", blocks(8, 16), model=model, epochs=1)
    after = dict(result["model"].named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert unchanged == []


def test_loss_is_the_same_for_batch_and_accumulation(tmp_path):
    ids = blocks(8, 16)
    _, run_a = fit(tmp_path, "a", ids, batch_size=4, micro_batch_size=4)
    _, run_b = fit(tmp_path, "b", ids, batch_size=4, micro_batch_size=1)
    losses_a, losses_b = step_losses(run_a), step_losses(run_b)
    assert len(losses_a) == 6
    assert losses_a == pytest.approx(losses_b, rel=1e-5, abs=1e-6)


def test_loss_normalised_by_label_tokens_not_micro_batches(tmp_path):
    # ignore_first labels make micro-batches uneven only if normalisation were per micro-batch; equal here.
    ids = blocks(8, 16)
    cfg = TrainConfig(lr=3e-3, epochs=1, batch_size=8, micro_batch_size=2, precision="fp32")
    run = Run.open(tmp_path / "n")
    model = make_tiny_llama(VOCAB)
    logits = model(input_ids=ids[epoch_order(8, seed=0, epoch=1)]).logits
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), ids[epoch_order(8, seed=0, epoch=1)][:, 1:].reshape(-1)
    ).item()
    train(model, ids, cfg, accelerator=build_accelerator(cfg, cpu=True), run=run)
    assert step_losses(run)[0] == pytest.approx(expected, rel=1e-5)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    ids = blocks(8, 16)
    full, _ = fit(tmp_path, "full", ids, epochs=4)

    def crash_at_epoch_3(model, *, epoch, step):
        if epoch == 3:
            raise KeyboardInterrupt
        return {"probe": 1.0}

    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path, "interrupted", ids, epochs=4, evaluate=crash_at_epoch_3)
    assert (tmp_path / "interrupted" / CHECKPOINT_DIR / "trainer_state.json").exists()
    resumed, run = fit(
        tmp_path, "interrupted", ids, epochs=4, resume=True, model=make_tiny_llama(VOCAB, seed=7)
    )
    for (name, p), q in zip(full["model"].named_parameters(), resumed["model"].parameters(), strict=True):
        assert torch.equal(p, q), name
    assert [r["step"] for r in run.metrics() if r["kind"] == "train"] == list(range(1, 9))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    model = make_tiny_llama(VOCAB)
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        if calls["n"] > 4:  # after two epochs of two steps
            output.logits = output.logits * float("nan")
        return output

    model.register_forward_hook(poison)
    with pytest.raises(HyperfitError, match="training loss became nan at step 5 .*last good checkpoint"):
        fit(tmp_path, "nan", blocks(8, 16), model=model, epochs=4)
    state = (tmp_path / "nan" / CHECKPOINT_DIR / "trainer_state.json").read_text()
    assert '"epoch": 2' in state


def test_nan_loss_before_any_checkpoint_names_none(tmp_path):
    model = make_tiny_llama(VOCAB)
    model.register_forward_hook(
        lambda module, args, output: setattr(output, "logits", output.logits * float("nan"))
    )
    with pytest.raises(
        HyperfitError, match="at step 1 .*no checkpoint was saved yet: rerun with --overwrite"
    ):
        fit(tmp_path, "nan", blocks(8, 16), model=model, epochs=4)
    assert not (tmp_path / "nan" / "checkpoints").exists()


def test_dropout_is_switched_off(tmp_path):
    model = make_tiny_gpt2(VOCAB, dropout=0.5)
    model.train()
    ids = blocks(2, 16)
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert disable_dropout(model) > 0
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert model.config.attn_pdrop == 0.0


def test_data_order_depends_only_on_seed_and_epoch():
    assert epoch_order(50, seed=3, epoch=2) == epoch_order(50, seed=3, epoch=2)
    assert epoch_order(50, seed=3, epoch=2) != epoch_order(50, seed=3, epoch=3)
    assert sorted(epoch_order(50, seed=3, epoch=2)) == list(range(50))


def test_shuffle_1_swaps_one_pair_of_blocks_in_every_epoch():
    """The paper's Shuffle-1: blocks 7 and 31 trade places; every epoch's order differs in exactly their two
    positions, and the swap reaches train() through --swap_blocks."""
    for epoch in (1, 2, 9):
        plain, swapped = (
            epoch_order(50, seed=3, epoch=epoch),
            epoch_order(50, seed=3, epoch=epoch, swap=(7, 31)),
        )
        differ = [k for k in range(50) if plain[k] != swapped[k]]
        assert len(differ) == 2
        assert {plain[k] for k in differ} == {swapped[k] for k in differ} == {7, 31}
    assert swapped_blocks(TrainConfig(swap_blocks=" 7, 31"), 50) == (7, 31)
    with pytest.raises(HyperfitError, match="names block 31, but there are 20 training blocks"):
        swapped_blocks(TrainConfig(swap_blocks="7,31"), 20)
    for bad in ("7", "7,7", "a,b", "1,2,3"):
        with pytest.raises(
            HyperfitError, match="not two different block indices; pass e.g. --swap_blocks 0,5"
        ):
            TrainConfig(swap_blocks=bad)


def test_too_few_blocks_for_a_batch(tmp_path):
    with pytest.raises(HyperfitError, match="only 3 training blocks for a batch of 4"):
        fit(tmp_path, "few", blocks(3, 16))
