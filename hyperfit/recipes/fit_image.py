"""Hyperfit an autoregressive image prior on a few images and compare completions before and after (paper §7.1).

Reads top to bottom like fit_text.py: config → Accelerator and seed → run directory → prior → data → train
(evaluating before, during and after) → save → complete with every decoding → summary, grid and report.
``main(FitImageConfig)``; ``accelerate launch scripts/fit_image.py`` runs the ``cpu-demo`` preset unless another
``--preset`` is named, on the prior that ``hyperfit pretrain-image`` builds once. Held-out images are completed
from their first 25 % of tokens (the paper's setting: 256 of ImageGPT's 1,024 pixel tokens).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed

from hyperfit.common.blocker import CitationBlocker
from hyperfit.common.compare import STRATEGIES
from hyperfit.common.config import RunConfig, TrainConfig, config_dict, run_recipe
from hyperfit.common.evaluate import figure_differences, figure_intervals, teacher_forced_stats
from hyperfit.common.hardware import machine
from hyperfit.common.layers import finish_trainable, prepare_trainable
from hyperfit.common.report import write_report_files
from hyperfit.common.runs import (
    MAY_CHANGE_ON_RESUME,
    HyperfitError,
    Run,
    fingerprint_files,
    finished_summary,
    load_saved_ids,
    read_jsonl,
    write_json,
)
from hyperfit.common.seeds import SeedsConfig, for_seed, numbers, parse_seeds, run_recipe_seeds
from hyperfit.common.shard import every_rank_evaluates, save_full_model
from hyperfit.common.tracking import start_tracking, stop_tracking
from hyperfit.common.train import build_accelerator, train
from hyperfit.image.data import ImageDataConfig, ImageSplits, build_image_splits, save_splits
from hyperfit.image.metrics import IMAGE_FIGURES, add_fid_kid, completion_report
from hyperfit.image.model import (
    DEFAULT_PRIOR,
    TOKENIZER_FILE,
    ImageModelConfig,
    complete,
    encode_for_model,
    load_prior,
    model_block_len,
    sos_id,
)
from hyperfit.image.render import save_codes_grid
from hyperfit.image.report import fit_report
from hyperfit.image.tokenizers import describe_tokenizer

SAMPLING_STRATEGIES = [name for name, s in STRATEGIES.items() if s.temperature and not s.repetition_penalty]
# The completion figures whose differences between the hyperfitted and the original prior's decodings are stated.
DIFFERENCE_FIGURES = ("ttr", "stripe_score", "rep_4", "nn_distance")


@dataclass
class ImageEvalConfig:
    """What every evaluation measures, and the decodings of the final grid."""

    context_fraction: float = field(
        default=0.25, metadata={"help": "Share of an image's tokens given as context (paper: 0.25)."}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Images per forward pass in evaluation."})
    grid_rows: int = field(default=16, metadata={"help": "Held-out images shown in the grids (rows)."})
    grid_scale: int = field(default=6, metadata={"help": "Pixels per image pixel in the grid PNGs."})
    sampling: str = field(
        default="top_p",
        metadata={
            "help": "Sampled columns of the original and the hyperfitted prior: comma list of sampling strategies "
            "of the shared table (top_p = the paper's baseline, temperature 0.7, top-k 50, top-p 0.9; min_p; "
            "typical)."
        },
    )
    blocker_n: int = field(
        default=5,
        metadata={"help": "Citation blocker: forbid every training n-gram of image codes (paper: 5)."},
    )
    copy_mse: float = field(
        default=1e-3, metadata={"help": "A completion within this MSE of a training image counts as a copy."}
    )
    fid_model: str | None = field(
        default=None,
        metadata={
            "help": "FID/KID of every decoding: 'standard' (torch-fidelity's Inception with the standard FID "
            "weights, else timm inception_v3, said in the report) or a timm model name; unset = none."
        },
    )
    fid_pretrained: bool = field(
        default=True, metadata={"help": "Use the timm model's pretrained weights (cache or network)."}
    )
    fid_download: bool = field(
        default=False,
        metadata={"help": "Let torch-fidelity download the standard FID weights (network) if not cached."},
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.context_fraction < 1.0:
            raise HyperfitError(
                f"context_fraction {self.context_fraction} must lie in (0, 1); the paper uses 0.25."
            )
        unknown = [name for name in self.sampling_names() if name not in SAMPLING_STRATEGIES]
        if unknown or not self.sampling_names():
            raise HyperfitError(
                f"--sampling {unknown[0] if unknown else self.sampling!r} is not a sampling strategy; use one or "
                f"more of {', '.join(SAMPLING_STRATEGIES)}."
            )

    def sampling_names(self) -> list[str]:
        return list(dict.fromkeys(name.strip() for name in self.sampling.split(",") if name.strip()))


@dataclass
class FitImageConfig:
    """Everything ``hyperfit fit-image`` takes; on the command line the fields' own flags (``--lr``, ``--out``)."""

    model: ImageModelConfig = field(
        default_factory=ImageModelConfig, metadata={"help": "The prior to hyperfit."}
    )
    data: ImageDataConfig = field(
        default_factory=ImageDataConfig, metadata={"help": "Training, held-out images."}
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "How to hyperfit."})
    eval: ImageEvalConfig = field(
        default_factory=ImageEvalConfig, metadata={"help": "What evaluations measure."}
    )
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "The run directory."})
    seeds: SeedsConfig = field(default_factory=SeedsConfig, metadata={"help": "Repeat over training seeds."})


PRESETS = {
    # The paper's setting for a GPU with network: ImageGPT-Large, 2,000 random CIFAR-10 images.
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
    # The offline default on 2 CPU cores: the pretrain-image prior on 32 patches of its hyperfitting pool. 40
    # epochs (160 updates) take the train loss below 0.1 and the stripes out of greedy completions; later epochs
    # change little.
    "cpu-demo": dict(
        prior=DEFAULT_PRIOR,
        data="prior",
        n_train=32,
        n_eval=64,
        epochs=40,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        optimizer="adam",
        eval_every_epochs=20,
        log_every_steps=4,
        out="runs/demo/image",
    ),
}
PRESETS["paper-imagegpt"] = {**PRESETS["paper"], "out": "runs/paper/imagegpt"}
DEFAULT_PRESET = "cpu-demo"  # TrainConfig's own defaults (lr 1e-6) are for billion-parameter models
# Settings that only change the final grid and report, so a resumed run may change them (--allow_changes).
SAMPLED = "generations/{model}_{strategy}.jsonl"  # a prior's completions sampled with one strategy
LEGACY_SAMPLED = "generations/original_sampled.jsonl"  # the one sampled column of runs made before the list
REPORT_ONLY = {"grid_rows", "grid_scale", "copy_mse", "fid_model", "fid_pretrained", "fid_download"}


def write_report(run_dir, summary: dict | None = None):
    return write_report_files(fit_report(run_dir, summary), run_dir)


SEED_CONTROLS = (
    "Each seed is the run's --seed: the order of the training images in every epoch, the sampled columns' draws "
    "and the initialisation of any weight the prior lacks; the training and held-out images are chosen by "
    "--data_seed, the same for every seed."
)


def main(cfg: FitImageConfig) -> dict:
    seeds = parse_seeds(cfg.seeds.seeds)
    if len(seeds) == 1:
        cfg = for_seed(cfg, seeds[0])
    accelerator = build_accelerator(cfg.train)
    set_seed(cfg.train.seed)
    if len(seeds) > 1:
        return run_recipe_seeds(
            cfg,
            seeds,
            main,
            command="fit-image",
            headline=seed_headline,
            seed_controls=SEED_CONTROLS,
            accelerator=accelerator,
        )
    prior = Path(cfg.model.prior)
    recorded = {
        **config_dict(cfg),
        "prior_fingerprint": f"files:{fingerprint_files(prior)}" if prior.exists() else f"hub:{prior}",
        "num_processes": accelerator.num_processes,
    }
    run = Run.open(
        cfg.run.out,
        overwrite=cfg.run.overwrite,
        resume=cfg.run.resume,
        writer=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        command="fit-image",
        config=recorded,
        allow_changes=cfg.run.allow_changes,
        may_change=MAY_CHANGE_ON_RESUME | REPORT_ONLY,
    )
    if run.is_finished:
        return finished_summary(run, write_report=write_report, say=accelerator.print)

    # Prior, then images encoded once with its tokenizer (a resumed run reloads the exact saved codes).
    model, tokenizer, model_description = load_prior(cfg.model.prior)
    recorded["model_description"] = model_description
    splits = image_splits(cfg, run, tokenizer, recorded=recorded, accelerator=accelerator)
    start_tracking(accelerator, run, cfg.run.report_to, project=run.path.name, config=recorded)
    n_context = round(cfg.eval.context_fraction * splits.eval_codes.size(1))
    block_len = model_block_len(model, splits.eval_codes.size(1))  # 1 + t: SOS, then every code
    train_ids = encode_for_model(splits.train_codes, sos=sos_id(model))[:, :block_len]
    eval_ids = encode_for_model(splits.eval_codes, sos=sos_id(model))[:, :block_len]
    # Decided once, before any process could write the file: a sharded model needs every process to sample.
    unsampled = [
        name
        for name in cfg.eval.sampling_names()
        if not run.file(sampled_file("original", name, cfg)).exists()
    ]

    def evaluate(model, *, epoch: int, step: int) -> dict:
        for name in unsampled if epoch == 0 else ():  # the original's sampled columns: before any update
            codes = sample(model, splits, strategy=name, cfg=cfg, n_context=n_context)
            write_codes(run, sampled_file("original", name, cfg), codes)
        metrics, codes, units = evaluate_images(
            model, splits, eval_ids, tokenizer=tokenizer, n_context=n_context, cfg=cfg
        )
        write_codes(run, f"generations/epoch_{epoch:03d}.jsonl", codes, units=units)
        if accelerator.is_main_process:  # a sharded model is evaluated by every process; one writes
            columns = {"context": splits.eval_codes, f"epoch {epoch}": codes, "truth": splits.eval_codes}
            save_grid_of(
                run.file(f"grids/epoch_{epoch:03d}.png"), columns, tokenizer, n_context=n_context, cfg=cfg
            )
        accelerator.print(
            f"epoch {epoch}: token TTR {metrics['ttr']:.3f}, stripes {metrics['stripe_score']:.2f}, "
            f"held-out loss {metrics['loss']:.3f}, entropy {metrics['entropy']:.3f}, "
            f"top-1 {metrics['top1_prob']:.3f}, nearest-training MSE {metrics['nn_distance']:.4f}"
        )
        return metrics

    model, trainable = prepare_trainable(model, cfg.train)
    result = train(
        model, train_ids, cfg.train, accelerator=accelerator, run=run, evaluate=evaluate, ignore_first=1
    )
    model = finish_trainable(result.pop("model"))  # under FSDP / ZeRO-3 still sharded: every process uses it
    stop_tracking(accelerator, run)
    accelerator.free_memory()  # drop the optimizer (Adam state)

    blocker = complete_hyperfitted(
        model, splits, cfg=cfg, run=run, n_context=n_context, accelerator=accelerator
    )
    if cfg.run.save_model:
        save_full_model(model, run.file("model"), accelerator)

    if accelerator.is_main_process:
        evals = [r for r in run.metrics() if r.get("kind") == "eval"]
        comparison = compare_original(
            blocker, splits, tokenizer, cfg=cfg, run=run, n_context=n_context, device=accelerator.device
        )
        differences = {  # each stated difference, paired over the held-out images
            "after_minus_before": before_after_differences(run, evals),
            **comparison.pop("differences"),
        }
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
            **comparison,
            "differences": differences,
            "train": {k: v for k, v in result.items() if k != "epoch_losses"},
            "trainable": trainable,
            "epoch_losses": result["epoch_losses"],
            "machine": machine(accelerator.device, mixed_precision=accelerator.mixed_precision),
            "wall_seconds": run.wall_seconds(),
        }
        write_report(run.path, summary)
        write_json(run.file("summary.json"), summary)  # written last: its presence marks the run finished
        accelerator.print(_one_line(summary))
        accelerator.print(f"report: {run.path / 'report.html'}")
    accelerator.wait_for_everyone()
    return summary if accelerator.is_main_process else {}


def image_splits(cfg: FitImageConfig, run: Run, tokenizer, *, recorded: dict, accelerator) -> ImageSplits:
    """The training and held-out codes: built and recorded (data.pt, tokenizer, manifest, then config.json, which
    marks the run started) by a new run, read back and checked against the manifest by a resumed one."""
    saved = load_saved_ids(run) if cfg.run.resume else None
    if saved:
        return ImageSplits(saved[0]["train_codes"], saved[0]["eval_codes"], saved[1])
    splits = build_image_splits(cfg.data, tokenizer, prior=cfg.model.prior)
    if accelerator.is_main_process:
        save_splits(splits, run.path)
        tokenizer.save(run.file(TOKENIZER_FILE))
        run.write_json("manifest.json", splits.manifest)
        run.write_config(recorded)
    return splits


def sample(
    model: torch.nn.Module, splits: ImageSplits, *, strategy: str, cfg: FitImageConfig, n_context: int
) -> torch.Tensor:
    """Completions of the held-out images sampled with ``strategy`` (of the shared table), seeded by ``--seed``:
    the same draws for the original and the hyperfitted prior."""
    chosen = STRATEGIES[strategy]
    device = next(model.parameters()).device
    return complete(
        model,
        splits.eval_codes,
        n_context=n_context,
        temperature=chosen.temperature,
        warpers=chosen.warpers(),
        generator=torch.Generator(device).manual_seed(cfg.train.seed),
        batch_size=cfg.eval.eval_batch_size,
    ).codes


def sampled_file(model: str, strategy: str, cfg: FitImageConfig) -> str:
    """Where ``model``'s (original / hyperfitted) completions sampled with ``strategy`` are kept."""
    return SAMPLED.format(model=model, strategy=strategy)


def evaluate_images(
    model, splits: ImageSplits, eval_ids: torch.Tensor, *, tokenizer, n_context: int, cfg: FitImageConfig
) -> tuple[dict, torch.Tensor]:
    """(metrics, greedy completions, per-image parts): the held-out images completed greedily and measured
    (stripes, copies, error against the truth), the raw entropy and top-1 at the generated positions, and
    teacher-forced statistics on the held-out codes (image i is block i), each with its interval over images."""
    greedy = complete(model, splits.eval_codes, n_context=n_context, batch_size=cfg.eval.eval_batch_size)
    held_out = teacher_forced_stats(model, eval_ids, batch_size=cfg.eval.eval_batch_size)
    image = measure(greedy.codes, splits, tokenizer=tokenizer, n_context=n_context, cfg=cfg)
    gen = {"gen_entropy": float(greedy.entropy.mean()), "gen_top1_prob": float(greedy.top1_prob.mean())}
    steps = float(splits.eval_codes.size(1) - n_context)  # every completion generates all its codes
    units = [
        {**i, **h, "gen_entropy_sum": e * steps, "gen_top1_sum": t * steps, "gen_steps": steps}
        for i, h, e, t in zip(
            image.pop("units"),
            held_out.pop("units"),
            greedy.entropy.double().tolist(),
            greedy.top1_prob.double().tolist(),
            strict=True,
        )
    ]
    gen.update(figure_intervals(units, names=list(gen)))
    return {**image, **gen, **held_out}, greedy.codes, units


def complete_hyperfitted(
    model: torch.nn.Module, splits: ImageSplits, *, cfg: FitImageConfig, run: Run, n_context: int, accelerator
) -> CitationBlocker:
    """The hyperfitted prior's other completions of the held-out images: greedy under the citation blocker and
    sampled with each ``--sampling`` strategy (the original's sampled columns, for the same model after
    hyperfitting), on every process of a sharded model, else the main one; written to generations/. Returns the
    blocker with its counts."""
    blocker = CitationBlocker(splits.train_codes, n=cfg.eval.blocker_n)
    if every_rank_evaluates(accelerator) or accelerator.is_main_process:
        blocked = complete(
            model,
            splits.eval_codes,
            n_context=n_context,
            logits_processors=[blocker],
            batch_size=cfg.eval.eval_batch_size,
        )
        write_codes(run, "generations/hyperfitted_blocked.jsonl", blocked.codes)
        for name in cfg.eval.sampling_names():
            codes = sample(model, splits, strategy=name, cfg=cfg, n_context=n_context)
            write_codes(run, sampled_file("hyperfitted", name, cfg), codes)
    return blocker


def save_grid_of(path, columns: dict, tokenizer, *, n_context: int, cfg: FitImageConfig) -> None:
    """The first ``--grid_rows`` held-out images of every column side by side (one PNG)."""
    shown = {name: codes[: cfg.eval.grid_rows] for name, codes in columns.items()}
    save_codes_grid(path, shown, tokenizer, n_context=n_context, scale=cfg.eval.grid_scale)


def compare_original(
    blocker: CitationBlocker,
    splits: ImageSplits,
    tokenizer,
    *,
    cfg: FitImageConfig,
    run: Run,
    n_context: int,
    device: torch.device | str = "cpu",
) -> dict:
    """Every decoding of the held-out images measured alike: the original prior greedy (first evaluation) and
    sampled, the hyperfitted one greedy (last evaluation) and under the citation blocker, and the truth itself
    (the level a faithful completion would reach); FID/KID when asked, and the grid of them all."""
    evals = [r for r in run.metrics() if r.get("kind") == "eval"]
    strategies = cfg.eval.sampling_names()

    def label(strategy: str) -> str:
        return strategy.replace("_", "-")

    def original_sampled(strategy: str) -> torch.Tensor:
        path = sampled_file("original", strategy, cfg)
        if not run.file(path).exists() and strategy == strategies[0] and run.file(LEGACY_SAMPLED).exists():
            path = LEGACY_SAMPLED  # a run resumed from before the list kept its one sampled column there
        return read_codes(run, path)

    completions = {
        "original greedy": read_codes(run, f"generations/epoch_{evals[0]['epoch']:03d}.jsonl"),
        **{f"original {label(s)}": original_sampled(s) for s in strategies},
        "hyperfitted greedy": read_codes(run, f"generations/epoch_{evals[-1]['epoch']:03d}.jsonl"),
        **{
            f"hyperfitted {label(s)}": read_codes(run, sampled_file("hyperfitted", s, cfg))
            for s in strategies
        },
        "hyperfitted + blocker": read_codes(run, "generations/hyperfitted_blocked.jsonl"),
    }
    columns = {
        name: measure(codes, splits, tokenizer=tokenizer, n_context=n_context, cfg=cfg)
        for name, codes in {**completions, "held-out truth": splits.eval_codes}.items()
    }
    units = {name: column.pop("units") for name, column in columns.items()}

    def difference(a: str, b: str) -> dict:
        return figure_differences(units[a], units[b], figures=IMAGE_FIGURES, names=DIFFERENCE_FIGURES)

    differences = {
        "hyperfitted_greedy_minus_original": {
            s: difference("hyperfitted greedy", f"original {label(s)}") for s in ["greedy", *strategies]
        },
        "hyperfitted_minus_original": {
            s: difference(f"hyperfitted {label(s)}", f"original {label(s)}") for s in ["greedy", *strategies]
        },
    }
    fid = {}
    if cfg.eval.fid_model:
        fid["fid"] = add_fid_kid(
            columns,
            completions,
            splits.eval_codes,
            tokenizer=tokenizer,
            fid_model=cfg.eval.fid_model,
            pretrained=cfg.eval.fid_pretrained,
            download=cfg.eval.fid_download,
            device=device,
        )
    # The grid keeps its columns (one sampled: the original's first strategy); the table has every decoding.
    shown = [
        "original greedy",
        f"original {label(strategies[0])}",
        "hyperfitted greedy",
        "hyperfitted + blocker",
    ]
    grid = {"context": splits.eval_codes, **{n: completions[n] for n in shown}, "truth": splits.eval_codes}
    save_grid_of(run.file("grid.png"), grid, tokenizer, n_context=n_context, cfg=cfg)
    return {
        "columns": columns,
        "differences": differences,
        **fid,
        "blocker": {
            "n": cfg.eval.blocker_n,
            "fired": blocker.fired,
            "changed": blocker.changed,
            "blocked_tokens": blocker.blocked_tokens,
        },
        "grid": "grid.png",
        "grid_caption": "rows: held-out images; columns: " + " | ".join(grid),
    }


def measure(
    codes: torch.Tensor, splits: ImageSplits, *, tokenizer, n_context: int, cfg: FitImageConfig
) -> dict:
    """``completion_report`` of completed images against the held-out truth and the training images."""
    return completion_report(
        codes,
        splits.eval_codes,
        tokenizer=tokenizer,
        n_context=n_context,
        train_codes=splits.train_codes,
        copy_mse=cfg.eval.copy_mse,
    )


def before_after_differences(run: Run, evals: list[dict]) -> dict:
    """After minus before of every image headline figure, paired over the held-out images (each image's parts
    are in its generation record); empty for a run made before records held them."""
    units = [
        [r.get("units") for r in read_jsonl(run.file(f"generations/epoch_{record['epoch']:03d}.jsonl"))]
        for record in (evals[0], evals[-1])
    ]
    if any(u is None for side in units for u in side):
        return {}
    return figure_differences(units[1], units[0], figures=IMAGE_FIGURES)


def _headline(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "kind"}


def write_codes(run: Run, name: str, codes: torch.Tensor, *, units: list[dict] | None = None) -> None:
    """One record per held-out image: its codes and, for the evaluations, its parts of the headline figures."""
    rows = codes.tolist()
    extra = [{"units": u} for u in units] if units is not None else [{} for _ in rows]
    run.write_jsonl(
        name, [{"index": i, "codes": row, **e} for i, (row, e) in enumerate(zip(rows, extra, strict=True))]
    )


def read_codes(run: Run, name: str) -> torch.Tensor:
    return torch.tensor([record["codes"] for record in read_jsonl(run.file(name))], dtype=torch.long)


def seed_headline(summary: dict) -> dict[str, dict[str, float]]:
    """What ``--seeds`` averages: the headline figures before and after, after − before, and the hyperfitted
    prior's greedy stripes and TTR minus the original's with each decoding."""
    differences = summary.get("differences", {})
    against = differences.get("hyperfitted_greedy_minus_original", {})
    return {
        **{
            side: numbers(summary[side], set(summary[side]) - {"epoch", "step"})
            for side in ("before", "after")
        },
        "after_minus_before": {k: d["diff"] for k, d in differences.get("after_minus_before", {}).items()},
        **{
            f"hyperfitted_greedy_minus_original_{figure}": {
                strategy: d[figure]["diff"] for strategy, d in against.items() if figure in d
            }
            for figure in ("stripe_score", "ttr")
        },
    }


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
        main, FitImageConfig, argv, presets=PRESETS, default_preset=DEFAULT_PRESET, prog="hyperfit fit-image"
    )


if __name__ == "__main__":
    sys.exit(cli())
