"""Pretrain the offline image tokenizer and prior from scratch: the "pre-trained" model of the image side.

Reads top to bottom: config → Accelerator and seed → run directory (a finished one with the same settings is
reused, never rebuilt) → photographs cut into patches → colour palette (or VQ-VAE) → codes → prior → the shared
``train()`` → save. ``hyperfit pretrain-image``, ``main(PretrainImageConfig)``; the defaults are sized for 2 CPU cores.
``--seeds 0,1,2`` pretrains one prior per seed into ``OUT/seed_<s>/`` and gives their mean ± sd (``common.seeds``).

Why scikit-image's photographs: the paper's CIFAR-10 needs a 170 MB download, and the offline default must
install from PyPI alone. scikit-image's wheel ships 19 real photographs (faces, animals, coins, textures, text,
microscopy, astronomy), so ``pip install scikit-image`` is the whole data set; cut into 16x16 patches they give
thousands of natural images with edges, textures and flat regions, where an unhyperfitted prior's greedy
completions show the paper's stripes. sklearn's 8x8 digits, the other bundled option, are near-binary
strokes on black: too simple for stripes and textures to mean anything.

Disjointness: each photograph's top rows (1 - ``holdout_fraction``) give the pretraining patches; its bottom
rows are kept out entirely, their left half giving the hyperfitting pool and their right half the held-out pool
(``pools.pt``, read by ``fit-image``). The three sets share no pixel, though they come from the same photographs.

Why a learned VQ-VAE tokenizer by default: it is what a "VQ-token image generator" means (ImageGPT's colour
palette is the other kind, ``--tokenizer palette``), and a 16x16 patch becomes 8x8 = 64 codes instead of 256
palette pixels, so the prior trains and completes on a quarter of the tokens, and its greedy completions still
show the paper's stripes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed

from hyperfit.common.config import RunConfig, TrainConfig, config_dict, run_recipe
from hyperfit.common.evaluate import teacher_forced_stats
from hyperfit.common.runs import HyperfitError, Run, load_saved_ids, read_json, sha256_ids, write_json
from hyperfit.common.seeds import SeedsConfig, for_seed, numbers, parse_seeds, run_recipe_seeds
from hyperfit.common.train import build_accelerator, train
from hyperfit.image.data import POOLS_FILE, SKIMAGE_PHOTOS, load_skimage_patches
from hyperfit.image.metrics import longest_runs, stripe_score
from hyperfit.image.model import (
    MODEL_DIR,
    TOKENIZER_FILE,
    PriorConfig,
    build_prior,
    complete,
    encode_for_model,
    sos_id,
)
from hyperfit.image.tokenizers import describe_tokenizer, fit_palette, load_image_tokenizer, train_vqvae


@dataclass
class PretrainDataConfig:
    """Which patches the prior learns from, which are set aside for fit-image, and how pixels become codes."""

    photos: str = field(
        default="all", metadata={"help": "Comma-separated scikit-image photographs, or all (19 of them)."}
    )
    resize: int = field(default=256, metadata={"help": "Each photograph is resized to N x N first."})
    patch: int = field(default=16, metadata={"help": "Patch side in pixels: images of patch x patch."})
    per_image: int = field(
        default=400, metadata={"help": "Random patches drawn per photograph (before the region split)."}
    )
    holdout_fraction: float = field(
        default=0.25,
        metadata={"help": "Bottom share of each photograph's rows kept out of pretraining for fit-image."},
    )
    n_pretrain_eval: int = field(
        default=64, metadata={"help": "Held-out pool patches scored at each pretraining evaluation."}
    )
    data_seed: int = field(default=0, metadata={"help": "Seed of the patch positions."})
    tokenizer: str = field(
        default="vqvae",
        metadata={
            "help": "vqvae (a learned VQ-VAE, 1 code per vq_downsample² pixels) or palette (k-means colours, "
            "1 token a pixel)."
        },
    )
    vocab: int | None = field(
        default=None,
        metadata={"help": "VQ-VAE codebook size or palette colours; unset = 128 codes or 64 colours."},
    )
    vq_downsample: int = field(default=2, metadata={"help": "VQ-VAE: pixels per token side."})
    vq_epochs: int = field(default=5, metadata={"help": "VQ-VAE training epochs."})

    def __post_init__(self) -> None:
        if self.tokenizer not in ("palette", "vqvae"):
            raise HyperfitError(f"tokenizer {self.tokenizer!r} is unknown; use vqvae or palette.")
        if self.vocab is None:
            self.vocab = 128 if self.tokenizer == "vqvae" else 64
        if not 0.0 < self.holdout_fraction < 1.0:
            raise HyperfitError(
                f"holdout_fraction {self.holdout_fraction} must lie in (0, 1); the default is 0.25."
            )
        if self.patch > self.resize * self.holdout_fraction:
            raise HyperfitError(
                f"a {self.patch}-pixel patch does not fit in the held-out band of {self.resize} x "
                f"{self.holdout_fraction} rows; raise --resize or --holdout_fraction, or lower --patch."
            )
        unknown = set(self.photo_names()) - set(SKIMAGE_PHOTOS)
        if unknown:
            raise HyperfitError(
                f"unknown photograph(s) {sorted(unknown)}; choose from {', '.join(sorted(SKIMAGE_PHOTOS))}."
            )

    def photo_names(self) -> list[str]:
        return list(SKIMAGE_PHOTOS) if self.photos == "all" else [p.strip() for p in self.photos.split(",")]


@dataclass
class PretrainImageConfig:
    """Everything ``hyperfit pretrain-image`` takes; on the command line the fields' own flags."""

    prior: PriorConfig = field(default_factory=PriorConfig, metadata={"help": "The prior's shape."})
    data: PretrainDataConfig = field(
        default_factory=PretrainDataConfig, metadata={"help": "Patches, tokenizer."}
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "How to pretrain."})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "The prior's directory."})
    seeds: SeedsConfig = field(
        default_factory=SeedsConfig, metadata={"help": "Pretrain one prior per training seed."}
    )


PRESETS = {
    # 2 CPU cores (under 2 minutes with the VQ-VAE tokenizer); also the default when no --preset is named. Two
    # epochs over the 5.5k patches reach held-out loss ~1.7 with greedy completions that are stripes (the
    # hyperfitting demo needs a prior that loops, not a perfect one); evaluated before and after only.
    "cpu": dict(
        lr=1e-3,
        batch_size=32,
        epochs=2,
        optimizer="adamw",
        weight_decay=0.01,
        dropout_off=False,  # pretraining uses the prior's --dropout; hyperfitting turns every dropout off
        eval_every_epochs=2,
        log_every_steps=10,
        out="runs/cache/image-prior",
    ),
}
DEFAULT_PRESET = "cpu"
# Settings that do not change what is built: a finished prior is reused whatever they say.
RUN_ONLY = ("out", "overwrite", "resume", "save_model", "allow_changes", "report_to")
# Settings newer than some cached priors: a config.json without them was built with these values.
ADDED_LATER = {"seeds": ""}
# The figures each pretraining evaluation prints, averaged over --seeds.
HEADLINE = ("loss", "perplexity", "entropy", "top1_prob", "target_top1", "stripe_score", "longest_run")
SEED_CONTROLS = (
    "Each seed is the run's --seed: the prior's random initialisation, the order of the patches in every epoch "
    "and the dropout masks; the patches and the tokenizer come from --data_seed, the same for every seed."
)


def split_patches(data_cfg: PretrainDataConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """scikit-image patches → {"pretrain", "train_pool", "eval_pool"} pixels by region, and the manifest."""
    pixels, source = load_skimage_patches(
        patch=data_cfg.patch,
        per_image=data_cfg.per_image,
        resize=data_cfg.resize,
        seed=data_cfg.data_seed,
        photos=data_cfg.photo_names(),
    )
    band = data_cfg.resize - int(data_cfg.resize * data_cfg.holdout_fraction)  # first held-out row
    middle = data_cfg.resize // 2
    regions: dict[str, list[int]] = {"pretrain": [], "train_pool": [], "eval_pool": []}
    for i, crop in enumerate(source["crops"]):
        if crop["y"] + data_cfg.patch <= band:
            regions["pretrain"].append(i)
        elif crop["y"] >= band and crop["x"] + data_cfg.patch <= middle:
            regions["train_pool"].append(i)
        elif crop["y"] >= band and crop["x"] >= middle:
            regions["eval_pool"].append(i)  # patches straddling a border are dropped
    manifest = {
        **{k: v for k, v in source.items() if k != "crops"},
        "regions": {
            "pretrain": f"rows 0..{band - 1}",
            "train_pool": f"rows {band}..{data_cfg.resize - 1}, columns 0..{middle - 1}",
            "eval_pool": f"rows {band}..{data_cfg.resize - 1}, columns {middle}..{data_cfg.resize - 1}",
        },
        "counts": {k: len(v) for k, v in regions.items()},
        "pool_crops": {k: [source["crops"][i] for i in regions[k]] for k in ("train_pool", "eval_pool")},
    }
    for name, index in regions.items():
        if len(index) < 2:
            raise HyperfitError(
                f"only {len(index)} {name} patches; raise --per_image or --resize, or name more --photos."
            )
    return {k: pixels[v] for k, v in regions.items()}, manifest


def build_tokenizer(pixels: torch.Tensor, data_cfg: PretrainDataConfig, *, seed: int):
    if data_cfg.tokenizer == "palette":
        return fit_palette(pixels, n_colors=data_cfg.vocab, seed=seed)
    tokenizer, _ = train_vqvae(
        pixels,
        codebook_size=data_cfg.vocab,
        downsample=data_cfg.vq_downsample,
        epochs=data_cfg.vq_epochs,
        seed=seed,
    )
    return tokenizer


def _settings(cfg: PretrainImageConfig) -> dict:
    return {k: v for k, v in config_dict(cfg).items() if k not in RUN_ONLY}


def _reuse(path: Path, cfg: PretrainImageConfig) -> dict:
    """The summary of a finished prior built with the same settings; one sentence if the settings differ."""
    saved = read_json(path / "config.json")
    wanted = _settings(cfg)
    differ = sorted(k for k, v in wanted.items() if saved.get(k, ADDED_LATER.get(k)) != v)
    if differ:
        raise HyperfitError(
            f"{path} holds a finished prior built with other settings ({', '.join(differ)}); pass --overwrite "
            "to rebuild it there, or choose another --out."
        )
    return read_json(path / "summary.json")


def seed_headline(summary: dict) -> dict[str, dict[str, float]]:
    """What ``--seeds`` averages: the held-out figures of the first and the last evaluation, and the final
    training loss."""
    return {
        "before": numbers(summary["before"], HEADLINE),
        "after": numbers(summary["after"], HEADLINE),
        "train": numbers(summary["train"], ("final_train_loss",)),
    }


def main(cfg: PretrainImageConfig) -> dict:
    seeds = parse_seeds(cfg.seeds.seeds)
    if len(seeds) == 1:
        cfg = for_seed(cfg, seeds[0])
    prior_cfg, data_cfg, train_cfg, run_cfg = cfg.prior, cfg.data, cfg.train, cfg.run
    accelerator = build_accelerator(train_cfg)
    set_seed(train_cfg.seed)
    out = Path(run_cfg.out)
    if (out / "summary.json").exists() and not run_cfg.overwrite:
        summary = _reuse(out, cfg)
        what = f"{len(seeds)} pretrained priors" if len(seeds) > 1 else "pretrained prior"
        accelerator.print(f"reusing the {what} in {out} (same settings; --overwrite rebuilds it)")
        return summary
    if len(seeds) > 1:
        # One prior per seed in OUT/seed_<s>/, each a prior like any other (fit-image --prior OUT/seed_<s>).
        return run_recipe_seeds(
            cfg,
            seeds,
            main,
            command="pretrain-image",
            headline=seed_headline,
            seed_controls=SEED_CONTROLS,
            accelerator=accelerator,
        )
    run = Run.open(
        out,
        overwrite=run_cfg.overwrite,
        resume=run_cfg.resume,
        writer=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        command="pretrain-image",
        config={**config_dict(cfg), "num_processes": accelerator.num_processes},
        allow_changes=run_cfg.allow_changes,
    )

    # Patches, tokenizer and codes are built once by the main process; every process then reads the same files.
    if not (run_cfg.resume and run.file("data.pt").exists()):
        if accelerator.is_main_process:
            pools, manifest = split_patches(data_cfg)
            tokenizer = build_tokenizer(pools["pretrain"], data_cfg, seed=data_cfg.data_seed)
            codes = tokenizer.encode_images(pools["pretrain"])
            tokenizer.save(run.file(TOKENIZER_FILE))
            torch.save({"codes": codes}, run.file("data.pt"))
            torch.save({k: v for k, v in pools.items() if k != "pretrain"}, run.file(POOLS_FILE))
            manifest.update(
                tokenizer=describe_tokenizer(tokenizer),
                tokenizer_info=tokenizer.info,
                codes_sha256=sha256_ids(codes),
            )
            run.write_json("manifest.json", manifest)
            run.write_config({**config_dict(cfg), "num_processes": accelerator.num_processes})
        accelerator.wait_for_everyone()
    tokenizer = load_image_tokenizer(run.file(TOKENIZER_FILE))
    codes = load_saved_ids(run)[0][
        "codes"
    ]  # every process reads the codes back, checked against the manifest
    eval_codes = tokenizer.encode_images(torch.load(run.file(POOLS_FILE))["eval_pool"])
    eval_codes = eval_codes[: data_cfg.n_pretrain_eval]
    model = build_prior(tokenizer.vocab_size, codes.size(1), prior_cfg, seed=train_cfg.seed)
    sos = sos_id(model)
    train_ids = encode_for_model(codes, sos=sos)
    eval_ids = encode_for_model(eval_codes, sos=sos)
    n_context = codes.size(1) // 4
    model.to(accelerator.device)

    def evaluate(model, *, epoch: int, step: int) -> dict:
        held_out = teacher_forced_stats(model, eval_ids, batch_size=64)
        held_out.pop("units")  # per-block parts: metrics.jsonl keeps the figures and their intervals
        greedy = complete(model, eval_codes, n_context=n_context)
        stripes = stripe_score(greedy.codes, grid=tokenizer.grid, n_context=n_context)
        run_length = float(longest_runs(greedy.codes, n_context=n_context).float().mean())
        accelerator.print(
            f"epoch {epoch}: held-out loss {held_out['loss']:.3f}, entropy {held_out['entropy']:.3f}, "
            f"greedy stripe score {stripes:.2f}, longest run {run_length:.0f}"
        )
        return {**held_out, "stripe_score": stripes, "longest_run": run_length}

    result = train(
        model, train_ids, train_cfg, accelerator=accelerator, run=run, evaluate=evaluate, ignore_first=1
    )
    model = result.pop("model")

    if accelerator.is_main_process:
        model.save_pretrained(run.file(MODEL_DIR), safe_serialization=True)
        evals = [r for r in run.metrics() if r.get("kind") == "eval"]
        summary = {
            "modality": "image",
            "kind": "pretraining",
            "model": f"ImageGPT prior, {prior_cfg.layers} layers, width {prior_cfg.width}",
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": describe_tokenizer(tokenizer),
            "n_train": int(codes.size(0)),
            "block_len": int(train_ids.size(1)),
            "n_eval": int(eval_codes.size(0)),
            "before": evals[0],
            "after": evals[-1],
            "train": result,
            "wall_seconds": run.wall_seconds(),
        }
        write_json(run.file("summary.json"), summary)  # written last: its presence marks the prior finished
        accelerator.print(
            f"prior ready in {run.path}: held-out loss {evals[-1]['loss']:.3f}, "
            f"{summary['wall_seconds']:.0f} s"
        )
    accelerator.wait_for_everyone()
    return read_json(run.file("summary.json"))


def cli(argv: list[str] | None = None) -> int:
    return run_recipe(
        main,
        PretrainImageConfig,
        argv,
        presets=PRESETS,
        default_preset=DEFAULT_PRESET,
        prog="hyperfit pretrain-image",
    )


if __name__ == "__main__":
    sys.exit(cli())
