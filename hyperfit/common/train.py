"""The one training loop: hyperfit any causal model on fixed blocks of ids until the training loss is near zero.

Follows the paper's recipe (Carlsson et al. 2025, §3) and accelerate's nlp_example: one ``Accelerator`` does
devices, processes and mixed precision; the loss is normalised by the number of label tokens in each optimizer
step over every process and accumulation micro-batch, so "near-zero loss" means the same at any batch layout.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from hyperfit.common.batch import count_label_tokens, make_batch, token_nll_sum
from hyperfit.common.config import TrainConfig
from hyperfit.common.hardware import fused_optimizer_kwargs, resolve_precision
from hyperfit.common.runs import CHECKPOINT_DIR, HyperfitError, Run, read_json, write_json
from hyperfit.common.shard import (
    evaluation_model,
    every_rank_evaluates,
    prepare_model_and_optimizer,
    restore_fsdp_on_cpu,
    sharding,
)

# evaluate(model, epoch=..., step=...) -> flat dict of numbers (and anything JSON-able)
EvaluateFn = Callable[..., dict]


def build_accelerator(cfg: TrainConfig, *, cpu: bool | None = None) -> Accelerator:
    """The run's single Accelerator. ``cpu=None`` uses a GPU when one is visible. The distribution strategy
    (DDP, FSDP, ZeRO-3) comes from ``accelerate launch --config_file``; see ``hyperfit.common.shard``.

    ``cfg.precision == "auto"`` is resolved here, in place (bf16 where the device multiplies bf16 natively, else
    fp32), so the run's config.json records the precision that ran.
    """
    use_cpu = bool(cpu) if cpu is not None else not torch.cuda.is_available()
    cfg.precision = resolve_precision(cfg.precision, "cpu" if use_cpu else "cuda")
    mixed = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[cfg.precision]
    accelerator = Accelerator(mixed_precision=mixed, cpu=use_cpu)
    restore_fsdp_on_cpu(accelerator)
    return accelerator


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability in ``model`` to 0; return how many settings changed.

    Covers ``nn.Dropout`` modules and the float attributes that attention code reads at call time
    (``attention_dropout``, ``attn_pdrop``, …) both on modules and on the config.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p != 0:
            module.p = 0.0
            changed += 1
        for name, value in list(vars(module).items()):
            if ("dropout" in name or "pdrop" in name) and isinstance(value, float) and value != 0:
                setattr(module, name, 0.0)
                changed += 1
    config = getattr(model, "config", None)
    if config is not None:
        for name, value in list(vars(config).items()):
            if ("dropout" in name or "pdrop" in name) and isinstance(value, float) and value != 0:
                setattr(config, name, 0.0)
                changed += 1
    return changed


def epoch_order(n: int, *, seed: int, epoch: int, swap: tuple[int, int] | None = None) -> list[int]:
    """The data order of one epoch: a permutation that depends only on (seed, epoch), so resumes are exact.

    ``swap = (i, j)`` exchanges the places of blocks i and j (as if they had traded rows of the training set), so
    the order differs from the unswapped one in exactly those two positions: the paper's Shuffle-1."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    if swap is not None:
        i, j = swap
        order = [j if block == i else i if block == j else block for block in order]
    return order


def swapped_blocks(cfg: TrainConfig, n: int) -> tuple[int, int] | None:
    """``--swap_blocks i,j`` as a pair of block indices below ``n``, or None."""
    if not cfg.swap_blocks:
        return None
    i, j = (int(x) for x in cfg.swap_blocks.split(","))
    if max(i, j) >= n:
        raise HyperfitError(
            f"--swap_blocks {cfg.swap_blocks} names block {max(i, j)}, but there are {n} training blocks (0 to "
            f"{n - 1}); name two blocks below {n}."
        )
    return i, j


def batch_layout(cfg: TrainConfig, *, num_processes: int) -> tuple[int, int]:
    """(micro batch per process, accumulation steps) for a global ``cfg.batch_size``."""
    micro = cfg.micro_batch_size or max(1, cfg.batch_size // num_processes)
    if cfg.batch_size % (micro * num_processes):
        raise HyperfitError(
            f"batch_size {cfg.batch_size} cannot be split into micro batches of {micro} on {num_processes} "
            "process(es); choose a batch_size that is a multiple of micro_batch_size × processes."
        )
    return micro, cfg.batch_size // (micro * num_processes)


def recover_checkpoint(directory) -> None:
    """Finish or undo a checkpoint replacement that a killed process left half done.

    :func:`_save_checkpoint` writes ``last.tmp`` (``trainer_state.json`` last, so its presence means complete),
    renames ``last`` to ``last.old``, ``last.tmp`` to ``last``, then deletes ``last.old``. Every state a kill can
    leave is resolved here: a complete ``last.tmp`` is the newest checkpoint and is put in place, an incomplete
    one is deleted; ``last.old`` takes the place of a missing ``last``, and is otherwise deleted (also when a kill
    left it half deleted, which would make the next rename fail).
    """
    final = directory / "last"
    tmp, old = final.with_name("last.tmp"), final.with_name("last.old")
    if (tmp / "trainer_state.json").exists():
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
    elif tmp.exists():
        shutil.rmtree(tmp)
    if old.exists():
        if not final.exists():
            old.rename(final)
        else:
            shutil.rmtree(old)


def _save_checkpoint(accelerator: Accelerator, run: Run, state: dict) -> None:
    """Save model, optimizer and RNG state (accelerate) plus our trainer state, replacing the last one atomically."""
    final = run.path / CHECKPOINT_DIR
    tmp = final.with_name("last.tmp")
    if accelerator.is_main_process:
        recover_checkpoint(final.parent)
        tmp.mkdir(parents=True)  # before the barrier: under FSDP every process writes its shard into it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process writes its RNG state (and, sharded, its shard) into tmp
    if accelerator.is_main_process:
        write_json(tmp / "trainer_state.json", state)  # last: its presence marks the checkpoint complete
        old = final.with_name("last.old")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _load_checkpoint(accelerator: Accelerator, run: Run) -> dict | None:
    path = run.path / CHECKPOINT_DIR
    if accelerator.is_main_process and path.parent.exists():
        recover_checkpoint(path.parent)
    accelerator.wait_for_everyone()
    if not (path / "trainer_state.json").exists():
        return None
    accelerator.load_state(str(path))
    return read_json(path / "trainer_state.json")


def _vocab_size(model: torch.nn.Module) -> int | None:
    """Number of ids the model predicts (its output layer), or None when it has no recognisable one."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.size(0))
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _restart_hint(run: Run) -> str:
    """Where a run that went wrong can restart from: the last checkpoint if there is one, else from scratch."""
    path = run.path / CHECKPOINT_DIR
    if (path / "trainer_state.json").exists():
        saved = read_json(path / "trainer_state.json")
        return (
            f"the last good checkpoint is {path} (epoch {saved['epoch']}, step {saved['step']}): rerun with --resume "
            "--allow_changes lr and a lower --lr to continue from it, or with --overwrite and a lower --lr"
        )
    return "no checkpoint was saved yet: rerun with --overwrite and a lower --lr"


def check_divergence(
    epoch_loss: float, *, first_loss: float | None, vocab: int | None, epoch: int, run: Run
) -> None:
    """Stop a run whose training diverged instead of reporting it as hyperfitted.

    Diverged means: the epoch's mean loss is at least that of a uniform guess, ln V nats, although the model
    started clearly below it (it forgot everything and predicts about uniformly, e.g. after a huge --lr), or it is
    1.5 × above both ln V and the starting loss (exploding). A model trained from scratch starts near ln V and is
    only stopped when it explodes.
    """
    if vocab is None or vocab < 2:
        return
    uniform = math.log(vocab)
    start = first_loss if first_loss is not None else uniform
    forgot = first_loss is not None and first_loss < 0.8 * uniform and epoch_loss > 0.95 * uniform
    exploded = epoch_loss > 1.5 * max(uniform, start)
    if forgot or exploded:
        what = "about a uniform guess over" if forgot and not exploded else "far above a uniform guess over"
        raise HyperfitError(
            f"training diverged: the mean training loss of epoch {epoch} is {epoch_loss:.2f} nats, {what} "
            f"{vocab} ids (ln V = {uniform:.2f}; the model started at {start:.2f}); {_restart_hint(run)}."
        )


def train(
    model: torch.nn.Module,
    train_ids: torch.Tensor,
    cfg: TrainConfig,
    *,
    accelerator: Accelerator,
    run: Run,
    evaluate: EvaluateFn | None = None,
    ignore_first: int = 0,
) -> dict:
    """Hyperfit ``model`` on the blocks ``train_ids[n, t]`` and return a summary of the training.

    Every process holds all ``n`` blocks; each epoch is a seeded permutation cut into global batches of
    ``cfg.batch_size`` (an incomplete last batch is left out, a different one each epoch), each global batch is
    split across processes and then into micro-batches. ``evaluate`` runs on the main process (on every process
    when the model is sharded, see ``hyperfit.common.shard``; only the main process writes) before training,
    every ``cfg.eval_every_epochs`` epochs (and ``eval_every_steps`` steps) and after the last epoch; its
    numbers are appended to ``metrics.jsonl`` together with one training record every ``log_every_steps``.
    With ``run`` reopened for resuming, training continues from the last checkpoint exactly.
    """
    n = train_ids.size(0)
    swap = swapped_blocks(cfg, n)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro, accumulation = batch_layout(cfg, num_processes=world)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise HyperfitError(
            f"only {n} training blocks for a batch of {cfg.batch_size}; lower --batch_size or add blocks."
        )
    if cfg.dropout_off:
        disable_dropout(model)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing is the variant that composes with FSDP and with frozen inputs.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    vocab = _vocab_size(model)
    # The fused Adam kernel where the parameters stay plain tensors; sharded ones keep torch's default.
    fused = sharding(accelerator) == "none"
    model, optimizer = prepare_model_and_optimizer(
        model,
        lambda params: optimizer_cls(
            params,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            **(fused_optimizer_kwargs(params) if fused else {}),
        ),
        accelerator,
        micro_batch_size=micro,
        accumulation=accumulation,
    )
    device = accelerator.device

    state = {"epoch": 0, "step": 0, "epoch_losses": [], "tokens_seen": 0, "train_seconds": 0.0}
    resumed = _load_checkpoint(accelerator, run)
    if resumed is not None:
        state = resumed
        run.truncate_metrics(after_step=state["step"])
        accelerator.print(f"resuming from epoch {state['epoch']}, step {state['step']}")
    else:
        run.truncate_metrics(after_step=-1)  # a run restarted before its first checkpoint starts clean

    # A sharded model needs every process in each forward pass, so then all of them evaluate (the same prompts,
    # the same gathered weights, the same results) and the main process alone writes; otherwise the main
    # process evaluates the unwrapped model while the others wait.
    evaluating = every_rank_evaluates(accelerator) or accelerator.is_main_process

    def run_evaluation(epoch: int, step: int) -> None:
        if evaluate is not None and evaluating:
            inner = evaluation_model(model, accelerator)
            inner.eval()
            # One autocast region around the whole evaluation: autocast then casts each weight to bf16 once per
            # evaluation instead of once per forward (each decoding step), with the same numbers.
            with torch.no_grad(), accelerator.autocast():
                metrics = evaluate(inner, epoch=epoch, step=step)
            inner.train()
            run.log({"kind": "eval", "epoch": epoch, "step": step, **metrics})
        accelerator.wait_for_everyone()

    checkpoint_every = cfg.checkpoint_every_epochs or cfg.eval_every_epochs
    if resumed is None:
        run_evaluation(0, 0)
    model.train()
    stop_reason = "epochs"
    total_steps = cfg.epochs * steps_per_epoch
    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        disable=not accelerator.is_local_main_process,
        desc="hyperfit",
    )
    last_eval_epoch = state["epoch"] if resumed is not None else 0
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        order = epoch_order(n, seed=cfg.seed, epoch=epoch, swap=swap)
        epoch_nll, epoch_tokens, epoch_start = 0.0, 0, time.perf_counter()
        for step_in_epoch in range(steps_per_epoch):
            global_batch = order[step_in_epoch * cfg.batch_size : (step_in_epoch + 1) * cfg.batch_size]
            mine = global_batch[rank * micro * accumulation : (rank + 1) * micro * accumulation]
            micro_batches = [
                make_batch(train_ids[mine[i : i + micro]].to(device), ignore_first=ignore_first)
                for i in range(0, len(mine), micro)
            ]
            local_tokens = sum(count_label_tokens(b["labels"]) for b in micro_batches)
            global_tokens = accelerator.reduce(
                torch.tensor(local_tokens, device=device), reduction="sum"
            ).item()
            # DDP averages gradients over processes, so scale by world size to get a sum over all tokens.
            scale = world / max(global_tokens, 1)
            local_nll = torch.zeros((), device=device)
            for i, batch in enumerate(micro_batches):
                sync = i == len(micro_batches) - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                    logits = model(input_ids=batch["input_ids"]).logits
                    nll = token_nll_sum(logits, batch["labels"])
                    accelerator.backward(nll * scale)
                local_nll += nll.detach()
            step_loss = accelerator.reduce(local_nll, reduction="sum").item() / max(global_tokens, 1)
            if not math.isfinite(step_loss):
                raise HyperfitError(
                    f"the training loss became {step_loss} at step {state['step'] + 1} (epoch {epoch}); "
                    f"{_restart_hint(run)}, or use --precision fp32."
                )
            state.setdefault("first_loss", step_loss)  # the untrained model's loss, to recognise divergence
            if cfg.max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = cfg.lr * min(1.0, (state["step"] + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["tokens_seen"] += global_tokens
            epoch_nll += step_loss * global_tokens
            epoch_tokens += global_tokens
            elapsed = state["train_seconds"] + time.perf_counter() - epoch_start
            tokens_per_s = state["tokens_seen"] / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{step_loss:.3f}", tok_s=f"{tokens_per_s:.0f}")
            if state["step"] % cfg.log_every_steps == 0:
                run.log(
                    {
                        "kind": "train",
                        "epoch": epoch,
                        "step": state["step"],
                        "loss": step_loss,
                        "lr": lr,
                        "tokens_per_s": tokens_per_s,
                    }
                )
            if cfg.eval_every_steps and state["step"] % cfg.eval_every_steps == 0:
                run_evaluation(epoch, state["step"])
        state["train_seconds"] += time.perf_counter() - epoch_start
        epoch_loss = epoch_nll / max(epoch_tokens, 1)
        check_divergence(epoch_loss, first_loss=state.get("first_loss"), vocab=vocab, epoch=epoch, run=run)
        state["epoch_losses"].append(epoch_loss)
        state["epoch"] = epoch
        run.log({"kind": "epoch", "epoch": epoch, "step": state["step"], "train_loss": epoch_loss})
        converged = cfg.stop_loss is not None and epoch_loss < cfg.stop_loss
        last = converged or epoch == cfg.epochs
        if epoch % cfg.eval_every_epochs == 0 or last:
            run_evaluation(epoch, state["step"])
            last_eval_epoch = epoch
        if epoch % checkpoint_every == 0 or last:
            _save_checkpoint(accelerator, run, state)
        if converged:
            stop_reason = f"train loss {epoch_loss:.4f} < stop_loss {cfg.stop_loss}"
            break
    bar.close()
    if last_eval_epoch != state["epoch"]:  # e.g. resumed a run whose last epoch was already done
        run_evaluation(state["epoch"], state["step"])
    model = evaluation_model(
        model, accelerator
    )  # still sharded under FSDP / ZeRO-3: save with save_full_model
    model.eval()
    return {
        "epochs_done": state["epoch"],
        "steps": state["step"],
        "epoch_losses": state["epoch_losses"],
        "final_train_loss": state["epoch_losses"][-1] if state["epoch_losses"] else None,
        "tokens_seen": state["tokens_seen"],
        "train_seconds": state["train_seconds"],
        "tokens_per_s": state["tokens_seen"] / max(state["train_seconds"], 1e-9),
        "stop_reason": stop_reason,
        "micro_batch_size": micro,
        "accumulation_steps": accumulation,
        "num_processes": world,
        "model": model,
    }
