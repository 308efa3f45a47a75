"""Hyperfit an autoregressive image prior on a few images and compare completions before and after (paper §7.1).

Reads top to bottom like fit_text.py: config → Accelerator and seed → run directory → prior → data → train
(evaluating before, during and after) → save → summary, grid and report. ``accelerate launch
scripts/fit_image.py`` runs the ``cpu-demo`` preset (PAPER.md §13b) unless another ``--preset`` is named; it
needs the prior that ``hyperfit pretrain-image`` builds once. Held-out images are completed greedily from their
first 25 % of tokens (the paper's setting).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from hyperfit.common.blocker import CitationBlocker
from hyperfit.common.config import RunConfig, TrainConfig, config_dict, run_recipe
from hyperfit.common.evaluate import teacher_forced_stats
from hyperfit.common.layers import finish_trainable, prepare_trainable
from hyperfit.common.report import write_report
from hyperfit.common.runs import (
    MAY_CHANGE_ON_RESUME,
    HyperfitError,
    Run,
    fingerprint_files,
    read_json,
    read_jsonl,
    sha256_ids,
    write_json,
)
from hyperfit.common.shard import every_rank_evaluates, save_full_model
from hyperfit.common.train import build_accelerator, train
from hyperfit.image.data import ImageDataConfig, ImageSplits, build_image_splits, save_splits
from hyperfit.image.metrics import add_fid_kid, completion_report
from hyperfit.image.model import (
    DEFAULT_PRIOR,
    TOKENIZER_FILE,
    ImageModelConfig,
    complete,
    describe_tokenizer,
    encode_for_model,
    load_prior,
    model_block_len,
    sos_id,
)
from hyperfit.image.render import save_codes_grid


@dataclass
class ImageEvalConfig:
    """What every evaluation measures, and the decodings of the final grid."""

    context_fraction: float = field(
        default=0.25, metadata={"help": "Share of an image's tokens given as context (paper: 0.25)."}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Images per forward pass in evaluation."})
    grid_rows: int = field(default=16, metadata={"help": "Held-out images shown in the grids (rows)."})
    grid_scale: int = field(default=6, metadata={"help": "Pixels per image pixel in the grid PNGs."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampled column: temperature (paper's Top-P baseline: 0.7)."}
    )
    top_k: int = field(default=50, metadata={"help": "Sampled column: top-k (paper: 50)."})
    top_p: float = field(default=0.9, metadata={"help": "Sampled column: top-p (paper: 0.9)."})
    blocker_n: int = field(
        default=5,
        metadata={"help": "Citation blocker: forbid every training n-gram of image codes (paper: 5)."},
    )
    copy_mse: float = field(
        default=1e-3, metadata={"help": "A completion within this MSE of a training image counts as a copy."}
    )
    fid_model: str | None = field(
        default=None,
        metadata={"help": "timm model for FID/KID of every decoding (e.g. inception_v3); unset = none."},
    )
    fid_pretrained: bool = field(
        default=True, metadata={"help": "Use the timm model's pretrained weights (cache or network)."}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.context_fraction < 1.0:
            raise HyperfitError(
                f"context_fraction {self.context_fraction} must lie in (0, 1); the paper uses 0.25."
            )


CONFIGS = (ImageModelConfig, ImageDataConfig, TrainConfig, ImageEvalConfig, RunConfig)

PRESETS = {
    # The paper's setting (PAPER.md §8) for a GPU with network: ImageGPT-Large, 2,000 CIFAR-10 images.
    "paper": dict(
        prior="openai/imagegpt-large",
        data="cifar10",
        n_train=2000,
        n_eval=64,
        epochs=20,
        batch_size=8,
        lr=1e-6,
        weight_decay=0.0,
        optimizer="adam",
        eval_every_epochs=1,
        grid_scale=3,
        out="runs/paper/image",
    ),
    # The same, named after its model: ImageGPT-Large (1.36B parameters) on 2,000 CIFAR-10 images, one GPU.
    "paper-imagegpt": {},
    # The offline default on 2 CPU cores (PAPER.md §13b): the pretrain-image prior on 32 held-in patches.
    "cpu-demo": dict(
        prior=DEFAULT_PRIOR,
        data="prior",
        n_train=32,
        n_eval=64,
        epochs=200,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        optimizer="adam",
        eval_every_epochs=25,
        log_every_steps=4,
        out="runs/demo/image",
    ),
}
PRESETS["paper-imagegpt"] = {**PRESETS["paper"], "out": "runs/paper/imagegpt"}
DEFAULT_PRESET = "cpu-demo"  # TrainConfig's own defaults (lr 1e-6) are for billion-parameter models
# Settings that only change the final grid and report, so a resumed run may change them (--allow_changes).
REPORT_ONLY = {
    "grid_rows",
    "grid_scale",
    "copy_mse",
    "fid_model",
    "fid_pretrained",
}


def sampling_processors(eval_cfg: ImageEvalConfig) -> list:
    """The paper's Top-P baseline as processors in ``generate``'s order: temperature, then top-k, then top-p."""
    return [
        TemperatureLogitsWarper(eval_cfg.temperature),
        TopKLogitsWarper(eval_cfg.top_k),
        TopPLogitsWarper(eval_cfg.top_p),
    ]


def main(configs: tuple) -> dict:
    model_cfg, data_cfg, train_cfg, eval_cfg, run_cfg = configs
    accelerator = build_accelerator(train_cfg)
    set_seed(train_cfg.seed)
    prior = Path(model_cfg.prior)
    recorded = {
        **config_dict(*configs),
        "prior_fingerprint": f"files:{fingerprint_files(prior)}" if prior.exists() else f"hub:{prior}",
        "num_processes": accelerator.num_processes,
    }
    run = Run.open(
        run_cfg.out,
        overwrite=run_cfg.overwrite,
        resume=run_cfg.resume,
        writer=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        command="fit-image",
        config=recorded,
        allow_changes=run_cfg.allow_changes,
        may_change=MAY_CHANGE_ON_RESUME | REPORT_ONLY,
    )
    if run.is_finished:
        accelerator.print(f"{run.path} is already finished; its report is {run.path / 'report.html'}")
        write_report(run.path)
        return read_json(run.file("summary.json"))

    # Prior, then images encoded once with its tokenizer (a resumed run reloads the exact saved codes).
    model, tokenizer, model_description = load_prior(model_cfg.prior)
    if run_cfg.resume and run.file("data.pt").exists():
        saved = torch.load(run.file("data.pt"))
        manifest = read_json(run.file("manifest.json"))
        if sha256_ids(saved["train_codes"]) != manifest["train_codes_sha256"]:
            raise HyperfitError(f"{run.file('data.pt')} does not match its manifest; rerun with --overwrite.")
        splits = ImageSplits(saved["train_codes"], saved["eval_codes"], manifest)
    else:
        splits = build_image_splits(data_cfg, tokenizer, prior=model_cfg.prior)
        if accelerator.is_main_process:
            save_splits(splits, run.path)
            tokenizer.save(run.file(TOKENIZER_FILE))
            run.write_json("manifest.json", splits.manifest)
            run.write_config({**recorded, "model_description": model_description})
    n_tokens = splits.eval_codes.size(1)
    n_context = round(eval_cfg.context_fraction * n_tokens)
    block_len = model_block_len(model, n_tokens)  # 1 + t: SOS, then every code
    sos = sos_id(model)
    train_ids = encode_for_model(splits.train_codes, sos=sos)[:, :block_len]
    eval_ids = encode_for_model(splits.eval_codes, sos=sos)[:, :block_len]
    shown = slice(0, eval_cfg.grid_rows)
    # Decided once, before any process could write the file: a sharded model needs every process to sample.
    sample_original = not run.file("generations/original_sampled.jsonl").exists()

    def evaluate(model, *, epoch: int, step: int) -> dict:
        if epoch == 0 and sample_original:
            # The sampled column needs the original weights: drawn at the evaluation before the first update.
            sampled = complete(
                model,
                splits.eval_codes,
                n_context=n_context,
                logits_processors=sampling_processors(eval_cfg),
                temperature=1.0,  # the temperature is the first processor, as in generate
                generator=torch.Generator(accelerator.device).manual_seed(train_cfg.seed),
                batch_size=eval_cfg.eval_batch_size,
            )
            _write_codes(run, "generations/original_sampled.jsonl", sampled.codes)
        greedy = complete(model, splits.eval_codes, n_context=n_context, batch_size=eval_cfg.eval_batch_size)
        held_out = teacher_forced_stats(model, eval_ids, batch_size=eval_cfg.eval_batch_size)
        image = completion_report(
            greedy.codes,
            splits.eval_codes,
            tokenizer=tokenizer,
            n_context=n_context,
            train_codes=splits.train_codes,
            copy_mse=eval_cfg.copy_mse,
        )
        _write_codes(run, f"generations/epoch_{epoch:03d}.jsonl", greedy.codes)
        columns = {"context": splits.eval_codes[shown], f"epoch {epoch}": greedy.codes[shown]}
        columns["truth"] = splits.eval_codes[shown]
        if accelerator.is_main_process:  # a sharded model is evaluated by every process; one writes
            save_codes_grid(
                run.file(f"grids/epoch_{epoch:03d}.png"),
                columns,
                tokenizer,
                n_context=n_context,
                scale=eval_cfg.grid_scale,
            )
        accelerator.print(
            f"epoch {epoch}: token TTR {image['ttr']:.3f}, stripes {image['stripe_score']:.2f}, "
            f"held-out loss {held_out['loss']:.3f}, entropy {held_out['entropy']:.3f}, "
            f"top-1 {held_out['top1_prob']:.3f}, nearest-training MSE {image['nn_distance']:.4f}"
        )
        return {
            **image,
            "gen_entropy": float(greedy.entropy.mean()),
            "gen_top1_prob": float(greedy.top1_prob.mean()),
            **held_out,
        }

    model, trainable = prepare_trainable(model, train_cfg)
    result = train(
        model, train_ids, train_cfg, accelerator=accelerator, run=run, evaluate=evaluate, ignore_first=1
    )
    model = finish_trainable(
        result.pop("model")
    )  # under FSDP / ZeRO-3 still sharded: every process decodes and saves with it
    accelerator.free_memory()  # drop the optimizer (Adam state)

    blocker = CitationBlocker(splits.train_codes, n=eval_cfg.blocker_n)
    if every_rank_evaluates(accelerator) or accelerator.is_main_process:
        blocked = complete(
            model,
            splits.eval_codes,
            n_context=n_context,
            logits_processors=[blocker],
            batch_size=eval_cfg.eval_batch_size,
        )
        _write_codes(run, "generations/hyperfitted_blocked.jsonl", blocked.codes)
    if run_cfg.save_model:
        save_full_model(model, run.file("model"), accelerator)

    if accelerator.is_main_process:
        evals = [r for r in run.metrics() if r.get("kind") == "eval"]
        completions = {
            "original greedy": _read_codes(run, f"generations/epoch_{evals[0]['epoch']:03d}.jsonl"),
            "original top-p": _read_codes(run, "generations/original_sampled.jsonl"),
            "hyperfitted greedy": _read_codes(run, f"generations/epoch_{evals[-1]['epoch']:03d}.jsonl"),
            "hyperfitted + blocker": blocked.codes,
        }
        # The truth measured like a completion: the level a faithful completion would reach.
        reference = {"held-out truth": splits.eval_codes}
        columns = {
            name: completion_report(
                codes,
                splits.eval_codes,
                tokenizer=tokenizer,
                n_context=n_context,
                train_codes=splits.train_codes,
                copy_mse=eval_cfg.copy_mse,
            )
            for name, codes in {**completions, **reference}.items()
        }
        if eval_cfg.fid_model:
            add_fid_kid(
                columns,
                completions,
                splits.eval_codes,
                tokenizer=tokenizer,
                fid_model=eval_cfg.fid_model,
                pretrained=eval_cfg.fid_pretrained,
                device=accelerator.device,
            )
        grid = {"context": splits.eval_codes[shown]}
        grid.update({name: codes[shown] for name, codes in completions.items()})
        grid["truth"] = splits.eval_codes[shown]
        save_codes_grid(run.file("grid.png"), grid, tokenizer, n_context=n_context, scale=eval_cfg.grid_scale)
        summary = {
            "modality": "image",
            "model": model_description,
            "tokenizer": describe_tokenizer(tokenizer),
            "data": splits.manifest["source"],
            "n_train": int(splits.train_codes.size(0)),
            "block_len": int(train_ids.size(1)),
            "n_eval": int(splits.eval_codes.size(0)),
            "n_context": n_context,
            "before": _headline(evals[0]),
            "after": _headline(evals[-1]),
            "columns": columns,
            "blocker": {
                "n": eval_cfg.blocker_n,
                "fired": blocker.fired,
                "changed": blocker.changed,
                "blocked_tokens": blocker.blocked_tokens,
            },
            "grid": "grid.png",
            "grid_caption": "rows: held-out images; columns: " + " | ".join(grid),
            "train": {k: v for k, v in result.items() if k != "epoch_losses"},
            "trainable": trainable,
            "epoch_losses": result["epoch_losses"],
            "wall_seconds": run.wall_seconds(),
        }
        write_report(run.path, summary=summary)
        write_json(run.file("summary.json"), summary)  # written last: its presence marks the run finished
        accelerator.print(_one_line(summary))
        accelerator.print(f"report: {run.path / 'report.html'}")
    accelerator.wait_for_everyone()
    return summary if accelerator.is_main_process else {}


def _headline(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "kind"}


def _write_codes(run: Run, name: str, codes: torch.Tensor) -> None:
    run.write_jsonl(name, [{"index": i, "codes": row} for i, row in enumerate(codes.tolist())])


def _read_codes(run: Run, name: str) -> torch.Tensor:
    return torch.tensor([record["codes"] for record in read_jsonl(run.file(name))], dtype=torch.long)


def _one_line(summary: dict) -> str:
    b, a = summary["before"], summary["after"]
    return (
        f"before → after: token TTR {b['ttr']:.3f} → {a['ttr']:.3f}, stripes {b['stripe_score']:.2f} → "
        f"{a['stripe_score']:.2f}, entropy {b['entropy']:.2f} → {a['entropy']:.2f} nats, top-1 "
        f"{b['top1_prob']:.3f} → {a['top1_prob']:.3f}, nearest-training MSE {b['nn_distance']:.4f} → "
        f"{a['nn_distance']:.4f}; {summary['wall_seconds']:.0f} s"
    )


def cli(argv: list[str] | None = None) -> int:
    return run_recipe(
        main, CONFIGS, argv, presets=PRESETS, default_preset=DEFAULT_PRESET, prog="hyperfit fit-image"
    )


if __name__ == "__main__":
    sys.exit(cli())
