"""Hyperfit a causal LM on a few text blocks and compare greedy continuations before and after (paper §3–5).

Reads top to bottom: config → Accelerator and seed → run directory → model → data → train (evaluating before,
during and after) → save → decode both models with every strategy → summary and report. ``main(FitTextConfig)``;
``accelerate launch scripts/fit_text.py --preset cpu-demo``.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from hyperfit.common.compare import compare_sharpness, decoding_table
from hyperfit.common.config import EvalConfig, RunConfig, TrainConfig, config_dict, run_recipe
from hyperfit.common.evaluate import collect_token_stats, generation_stats, teacher_forced_stats
from hyperfit.common.layers import finish_trainable, prepare_trainable
from hyperfit.common.report import write_report_files
from hyperfit.common.runs import (
    HyperfitError,
    Run,
    finished_summary,
    load_saved_ids,
    read_jsonl,
    write_json,
)
from hyperfit.common.tracking import start_tracking, stop_tracking
from hyperfit.common.train import build_accelerator, train
from hyperfit.text.data import TextDataConfig, TextSplits, build_text_splits, check_source, save_splits
from hyperfit.text.metrics import word_metrics
from hyperfit.text.model import (
    DEFAULT_MODEL,
    ModelConfig,
    check_positions,
    eos_ids,
    load_causal_lm,
    model_fingerprint,
    word_start_ids,
)
from hyperfit.text.report import fit_report
from hyperfit.text.retention import domain_perplexities, retention_summary, run_domain_blocks


@dataclass
class FitTextConfig:
    """Everything ``hyperfit fit-text`` takes; on the command line the fields' own flags (``--lr``, ``--out``)."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The model to hyperfit."})
    data: TextDataConfig = field(
        default_factory=TextDataConfig, metadata={"help": "Training and held-out text."}
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "How to hyperfit."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "What every evaluation measures."})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "The run directory."})


PRESETS = {
    # The paper's recipe for a GPU (2,000 blocks of 256 tokens, 20 epochs, batch 8, Adam lr 1e-6, no weight decay,
    # 300 held-out texts); --data/--model name the corpus and model to use.
    "paper": dict(
        n_train=2000,
        block_len=256,
        n_eval=300,
        epochs=20,
        batch_size=8,
        lr=1e-6,
        weight_decay=0.0,
        optimizer="adam",
        eval_every_epochs=1,
        max_new_tokens=96,
        out="runs/paper/text",
    ),
    # The offline default on 2 CPU cores: SmolLM2-135M on 32 Lee news blocks of 128 tokens. lr 8e-5 × 16 epochs
    # (64 updates) reaches train loss ~0.08, as lr 4e-5 × 20 epochs reaches ~0.13, with 20 % fewer updates.
    "cpu-demo": dict(
        model=DEFAULT_MODEL,
        data="lee",
        n_train=32,
        block_len=128,
        n_eval=16,
        epochs=16,
        batch_size=8,
        lr=8e-5,
        weight_decay=0.0,
        optimizer="adam",
        eval_every_epochs=8,
        max_new_tokens=96,
        out="runs/demo/text",
    ),
}


def decode_texts(tokenizer, sequences: list[list[int]]) -> list[str]:
    return tokenizer.batch_decode(sequences, skip_special_tokens=True)


def write_report(run_dir, summary: dict | None = None):
    return write_report_files(fit_report(run_dir, summary), run_dir)


def main(cfg: FitTextConfig) -> dict:
    accelerator = build_accelerator(cfg.train)
    set_seed(cfg.train.seed)
    check_source(cfg.data)  # every input is checked before the run directory is touched
    recorded = {
        **config_dict(cfg),
        "model_fingerprint": model_fingerprint(cfg.model),
        "num_processes": accelerator.num_processes,
    }
    run = Run.open(
        cfg.run.out,
        overwrite=cfg.run.overwrite,
        resume=cfg.run.resume,
        writer=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        command="fit-text",
        config=recorded,
        allow_changes=cfg.run.allow_changes,
    )
    if run.is_finished:
        return finished_summary(run, write_report=write_report, say=accelerator.print)

    # Model, then data tokenised once with its tokenizer (a resumed run reloads the exact saved ids).
    model, tokenizer, model_description = load_causal_lm(cfg.model)
    check_lengths(model, cfg, model_description=model_description)
    recorded["model_description"] = model_description
    splits = text_splits(cfg, run, tokenizer, recorded=recorded, accelerator=accelerator)
    start_tracking(accelerator, run, cfg.run.report_to, project=run.path.name, config=recorded)
    prompts = splits.eval_ids[:, : cfg.eval.prompt_tokens]
    stop_ids = eos_ids(model, tokenizer)
    # The original model, kept on the CPU, is decoded beside the hyperfitted one at the end.
    original = copy.deepcopy(model) if cfg.eval.strategy_names() and accelerator.is_main_process else None
    model.to(accelerator.device)
    # Knowledge retention: teacher-forced perplexity on every bundled domain, before training and after.
    domains = retention_domains(cfg, tokenizer, splits) if accelerator.is_main_process else {}
    retention_before = domain_perplexities_under(accelerator, model, domains, cfg)
    model, trainable = prepare_trainable(model, cfg.train)

    def evaluate(model, *, epoch: int, step: int) -> dict:
        batch = cfg.eval.eval_batch_size
        gen_metrics, sequences = generation_stats(
            model,
            prompts,
            max_new_tokens=cfg.eval.max_new_tokens,
            ttr_window=cfg.eval.ttr_window,
            batch_size=batch,
            eos_id=stop_ids,
        )
        held_out = teacher_forced_stats(model, splits.eval_ids, batch_size=batch)
        write_generations(run, f"generations/epoch_{epoch:03d}.jsonl", tokenizer, splits, sequences, cfg=cfg)
        accelerator.print(
            f"epoch {epoch}: TTR {gen_metrics['ttr']:.3f}, held-out loss {held_out['loss']:.3f}, "
            f"entropy {held_out['entropy']:.3f}, top-1 {held_out['top1_prob']:.3f}"
        )
        return {**gen_metrics, **held_out}

    result = train(model, splits.train_ids, cfg.train, accelerator=accelerator, run=run, evaluate=evaluate)
    model = finish_trainable(result.pop("model"))
    stop_tracking(accelerator, run)

    if accelerator.is_main_process:
        retention_after = domain_perplexities_under(accelerator, model, domains, cfg)
        if cfg.run.save_model:
            model.save_pretrained(run.path / "model", safe_serialization=True)
            tokenizer.save_pretrained(run.path / "model")
        evals = [r for r in run.metrics() if r.get("kind") == "eval"]
        comparison = {}
        if original is not None:
            comparison = compare_original(
                original.to(accelerator.device),
                model,
                splits=splits,
                tokenizer=tokenizer,
                cfg=cfg,
                run=run,
                accelerator=accelerator,
            )
        summary = {
            "modality": "text",
            "model": model_description,
            "data": splits.manifest["source"],
            "n_train": int(splits.train_ids.size(0)),
            "block_len": int(splits.train_ids.size(1)),
            "n_eval": int(splits.eval_ids.size(0)),
            "before": _headline(evals[0]),
            "after": _headline(evals[-1]),
            "train": {k: v for k, v in result.items() if k != "epoch_losses"},
            "trainable": trainable,
            "retention": retention_summary(retention_before, retention_after, trained_on=next(iter(domains))),
            "epoch_losses": result["epoch_losses"],
            "samples_shown": cfg.eval.samples_shown,
            **comparison,
            "wall_seconds": run.wall_seconds(),
        }
        write_report(run.path, summary)
        write_json(run.file("summary.json"), summary)  # written last: its presence marks the run finished
        accelerator.print(_one_line(summary))
        accelerator.print(f"report: {run.path / 'report.html'}")
    accelerator.wait_for_everyone()
    return summary if accelerator.is_main_process else {}


def check_lengths(model, cfg: FitTextConfig, *, model_description: str) -> None:
    """Every length the run feeds the model fits its positions (one sentence naming the flag otherwise)."""
    check_positions(
        model,
        lengths={
            "--block_len": cfg.data.block_len,
            "--eval_len": cfg.data.eval_len or cfg.data.block_len,
            "--prompt_tokens + --max_new_tokens": cfg.eval.prompt_tokens + cfg.eval.max_new_tokens,
        },
        description=model_description,
    )


def text_splits(cfg: FitTextConfig, run: Run, tokenizer, *, recorded: dict, accelerator) -> TextSplits:
    """The training and held-out ids: built and recorded (data.pt, manifest, then config.json, which marks the
    run started) by a new run, read back and checked against the manifest by a resumed one."""
    saved = load_saved_ids(run) if cfg.run.resume else None
    if saved:
        return TextSplits(saved[0]["train_ids"], saved[0]["eval_ids"], saved[1])
    splits = build_text_splits(cfg.data, tokenizer, tokenizer_name=recorded["model_description"])
    if splits.eval_ids.size(1) <= cfg.eval.prompt_tokens:
        raise HyperfitError(
            f"held-out blocks have {splits.eval_ids.size(1)} tokens, not more than the {cfg.eval.prompt_tokens}"
            "-token prompt; raise --eval_len or lower --prompt_tokens."
        )
    if accelerator.is_main_process:
        save_splits(splits, run.path)
        run.write_json("manifest.json", splits.manifest)
        run.write_config(recorded)
    return splits


def write_generations(
    run: Run, name: str, tokenizer, splits: TextSplits, sequences, *, cfg: FitTextConfig
) -> None:
    """Every held-out prompt with its continuation, the human reference and the generated ids, decoded."""
    prompt_ids, reference_ids = splits.eval_ids.split(
        [cfg.eval.prompt_tokens, splits.eval_ids.size(1) - cfg.eval.prompt_tokens], 1
    )
    texts, prompts, references = (
        decode_texts(tokenizer, ids) for ids in (sequences, prompt_ids.tolist(), reference_ids.tolist())
    )
    records = [
        {"index": i, "prompt": p, "continuation": c, "reference": r, "ids": s}
        for i, (p, c, r, s) in enumerate(zip(prompts, texts, references, sequences, strict=True))
    ]
    run.write_jsonl(name, records)


def retention_domains(cfg: FitTextConfig, tokenizer, splits: TextSplits) -> dict[str, dict]:
    """Held-out blocks of every bundled domain (the run's own held-out blocks for its training domain)."""
    return run_domain_blocks(
        tokenizer, source=cfg.data.data, eval_ids=splits.eval_ids, domains=cfg.data.retention_domain_names()
    )


def domain_perplexities_under(accelerator, model, domains: dict[str, dict], cfg: FitTextConfig) -> dict:
    """``domain_perplexities`` under the run's precision ({} when there are no domains: other processes)."""
    with torch.no_grad(), accelerator.autocast():
        return domain_perplexities(model, domains, batch_size=cfg.eval.eval_batch_size) if domains else {}


def compare_original(
    original: torch.nn.Module,
    hyperfitted: torch.nn.Module,
    *,
    splits: TextSplits,
    tokenizer,
    cfg: FitTextConfig,
    run: Run,
    accelerator: Accelerator,
) -> dict:
    """Decode both models with every strategy on the held-out prompts; compare sharpness and reference ranks."""
    evals = [r for r in run.metrics() if r.get("kind") == "eval"]
    models = {"original": original, "hyperfitted": hyperfitted}
    # The greedy continuations of the first and last evaluation were decoded by exactly these models: reuse them.
    precomputed = {
        (name, "greedy"): [
            r["ids"] for r in read_jsonl(run.file(f"generations/epoch_{record['epoch']:03d}.jsonl"))
        ]
        for name, record in (("original", evals[0]), ("hyperfitted", evals[-1]))
    }
    batch = cfg.eval.eval_batch_size
    with torch.no_grad(), accelerator.autocast():
        table, generations = decoding_table(
            models,
            splits.eval_ids[:, : cfg.eval.prompt_tokens],
            cfg.eval.strategy_names(),
            max_new_tokens=cfg.eval.max_new_tokens,
            train_ids=splits.train_ids,
            eval_blocks=splits.eval_ids,
            target_entropy=evals[-1]["entropy"],
            eos_id=eos_ids(hyperfitted, tokenizer),
            batch_size=batch,
            seed=cfg.train.seed,
            ttr_window=cfg.eval.ttr_window,
            word_start_ids=word_start_ids(tokenizer) if cfg.eval.word_finish else None,
            blocker_n=cfg.eval.blocker_n,
            blocker_include_prompt=cfg.eval.blocker_include_prompt,
            precomputed=precomputed,
        )
        sharpness = compare_sharpness(
            collect_token_stats(original, splits.eval_ids, batch_size=batch),
            collect_token_stats(hyperfitted, splits.eval_ids, batch_size=batch),
        )
    for (model_name, strategy), sequences in generations.items():
        texts = decode_texts(tokenizer, sequences)
        table[model_name][strategy].update(word_metrics(texts, ttr_window=cfg.eval.ttr_window))
        run.write_jsonl(
            f"generations/decoding/{model_name}_{strategy}.jsonl",
            [
                {"index": i, "continuation": t, "ids": s}
                for i, (t, s) in enumerate(zip(texts, sequences, strict=True))
            ],
        )
    return {"decoding": table, "sharpness": sharpness}


HEADLINE = (
    "ttr",
    "entropy",
    "top1_prob",
    "perplexity",
    "loss",
    "target_top1",
    "gen_entropy",
    "gen_top1_prob",
    "gen_length",
    "seq_perplexity",
    "rep_4",
    "loop_share",
)


def _headline(record: dict) -> dict:
    return {
        "epoch": record["epoch"],
        "step": record["step"],
        **{k: record[k] for k in HEADLINE if k in record},
    }


def _one_line(summary: dict) -> str:
    b, a = summary["before"], summary["after"]
    return (
        f"before → after: TTR {b['ttr']:.3f} → {a['ttr']:.3f}, entropy {b['entropy']:.2f} → {a['entropy']:.2f} "
        f"nats, top-1 {b['top1_prob']:.3f} → {a['top1_prob']:.3f}, perplexity {b['perplexity']:.1f} → "
        f"{a['perplexity']:.1f}; {summary['wall_seconds']:.0f} s"
    )


def cli(argv: list[str] | None = None) -> int:
    return run_recipe(main, FitTextConfig, argv, presets=PRESETS, prog="hyperfit fit-text")


if __name__ == "__main__":
    sys.exit(cli())
