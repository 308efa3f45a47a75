"""Hyperfit a causal LM on a few text blocks and compare greedy continuations before and after (paper §3–5).

Reads top to bottom: config → Accelerator and seed → run directory → model → data → train (evaluating before,
during and after) → save → the original model read again, both decoded with every strategy → summary and report.
``main(FitTextConfig)``; ``accelerate launch scripts/fit_text.py --preset cpu-demo``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from hyperfit.common.compare import (
    compare_sharpness,
    decoding_table,
    generation_metrics,
    strategy_differences,
)
from hyperfit.common.config import EvalConfig, RunConfig, TrainConfig, config_dict, run_recipe
from hyperfit.common.evaluate import (
    average_over_domains,
    collect_token_stats,
    figure_differences,
    figure_intervals,
    generation_stats,
    sequence_units,
    summarise_token_stats,
)
from hyperfit.common.hardware import machine
from hyperfit.common.layers import finish_trainable, prepare_trainable
from hyperfit.common.report import write_report_files
from hyperfit.common.runs import HyperfitError, Run, finished_summary, load_saved_ids, read_jsonl, write_json
from hyperfit.common.seeds import SeedsConfig, for_seed, numbers, parse_seeds, run_recipe_seeds
from hyperfit.common.shard import every_rank_evaluates, prepare_for_inference, save_full_model, sharding
from hyperfit.common.tracking import start_tracking, stop_tracking
from hyperfit.common.train import build_accelerator, train
from hyperfit.text.data import TextDataConfig, TextSplits, build_text_splits, check_source, save_splits
from hyperfit.text.eval_sets import domain_rows, parse_eval_data, with_eval_sets
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
from hyperfit.text.retention import (
    domain_perplexities,
    perplexity_from_nll,
    retention_summary,
    run_domain_blocks,
)


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
    seeds: SeedsConfig = field(default_factory=SeedsConfig, metadata={"help": "Repeat over training seeds."})


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
    # The paper's recipe with the paper's models (README "GPUs": memory from `hyperfit plan`, launch commands).
    # Pass --data with the training corpus (the paper: 2,000 Fiction-Stories texts) and, for the paper's held-out
    # protocol, --eval_data with its three domains (fiction, WikiText-103, BBC News; 100 texts each).
    "paper-tinyllama": {"model": "TinyLlama/TinyLlama_v1.1", "out": "runs/paper/tinyllama"},  # one GPU
    "paper-llama3-8b": {"model": "meta-llama/Llama-3.1-8B", "out": "runs/paper/llama3-8b"},  # FSDP
    "paper-deepseek-7b": {
        "model": "deepseek-ai/deepseek-llm-7b-base",
        "out": "runs/paper/deepseek-7b",
    },  # FSDP
    # The offline default on 2 CPU cores: SmolLM2-135M on 16 Lee news blocks of 64 tokens, batch 2, lr 1e-4 for 6
    # epochs = 48 updates (6,048 training tokens) to train loss ~0.2, evaluated before and after only, on 32
    # held-out prompts: enough for the before → after TTR gain's interval to clear zero. Fewer blocks or a higher
    # lr reach the loss sooner but copy more training text into the continuations (8 blocks: a quarter of them
    # share a >10-token span). Greedy only: each further strategy decodes every prompt twice more
    # (--strategies greedy,top_p,greedy_blocked,entropy_matched gives the whole table).
    "cpu-demo": dict(
        model=DEFAULT_MODEL,
        data="lee",
        n_train=16,
        block_len=64,
        n_eval=32,
        epochs=6,
        batch_size=2,
        lr=1e-4,
        weight_decay=0.0,
        optimizer="adam",
        eval_every_epochs=6,
        max_new_tokens=96,
        eval_batch_size=32,
        strategies="greedy",
        out="runs/demo/text",
    ),
}


for _name in ("paper-tinyllama", "paper-llama3-8b", "paper-deepseek-7b"):
    PRESETS[_name] = {**PRESETS["paper"], **PRESETS[_name]}


def decode_texts(tokenizer, sequences: list[list[int]]) -> list[str]:
    return tokenizer.batch_decode(sequences, skip_special_tokens=True)


def write_report(run_dir, summary: dict | None = None):
    return write_report_files(fit_report(run_dir, summary), run_dir)


SEED_CONTROLS = (
    "Each seed is the run's --seed: the order of the training blocks in every epoch, the sampling strategies' "
    "draws and the initialisation of any weight the checkpoint lacks; the training and held-out texts are chosen "
    "by --data_seed, the same for every seed."
)


def main(cfg: FitTextConfig) -> dict:
    seeds = parse_seeds(cfg.seeds.seeds)
    if len(seeds) == 1:
        cfg = for_seed(cfg, seeds[0])
    accelerator = build_accelerator(cfg.train)
    set_seed(cfg.train.seed)
    check_source(cfg.data)  # every input is checked before the run directory is touched
    parse_eval_data(cfg.data.eval_data)
    if len(seeds) > 1:
        return run_recipe_seeds(
            cfg,
            seeds,
            main,
            command="fit-text",
            headline=seed_headline,
            seed_controls=SEED_CONTROLS,
            accelerator=accelerator,
        )
    recorded = {
        **config_dict(cfg),
        "model_fingerprint": model_fingerprint(cfg.model),
        "num_processes": accelerator.num_processes,
        "sharding": sharding(accelerator),
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
    domains = domain_rows(splits.manifest, splits.eval_ids.size(0))
    stop_ids = eos_ids(model, tokenizer)
    # Knowledge retention: teacher-forced perplexity on every bundled domain, of the original (read again after
    # training) and of the hyperfitted model.
    retention_blocks = run_domain_blocks(
        tokenizer, source=cfg.data.data, eval_ids=splits.eval_ids, domains=cfg.data.retention_domain_names()
    )
    model, trainable = prepare_trainable(model, cfg.train)
    # The per-position statistics of each evaluation, by epoch: the first one's are the original model's and the
    # last one's the hyperfitted model's, which the comparison after training needs again (not recomputed).
    token_stats: dict[int, dict[str, torch.Tensor]] = {}

    def evaluate(model, *, epoch: int, step: int) -> dict:
        metrics, sequences, units, stats = evaluate_domains(model, splits, domains, cfg=cfg, eos_id=stop_ids)
        for kept in [e for e in token_stats if e != min(token_stats)]:  # keep the first and the latest only
            del token_stats[kept]
        token_stats[epoch] = stats
        name = f"generations/epoch_{epoch:03d}.jsonl"
        write_generations(run, name, tokenizer, splits, sequences, units=units, cfg=cfg)
        accelerator.print(
            f"epoch {epoch}: TTR {metrics['ttr']:.3f}, held-out loss {metrics['loss']:.3f}, "
            f"entropy {metrics['entropy']:.3f}, top-1 {metrics['top1_prob']:.3f}"
            + (f" (mean of {', '.join(domains)})" if len(domains) > 1 else "")
        )
        return metrics

    result = train(model, splits.train_ids, cfg.train, accelerator=accelerator, run=run, evaluate=evaluate)
    model = finish_trainable(result.pop("model"))  # under FSDP / ZeRO-3 still sharded: every process saves
    stop_tracking(accelerator, run)
    accelerator.free_memory()  # drop the optimizer (Adam state) before the original model is read again

    if cfg.run.save_model:
        save_full_model(model, run.path / "model", accelerator)
        if accelerator.is_main_process:
            tokenizer.save_pretrained(run.path / "model")
    comparison = {}
    if every_rank_evaluates(accelerator) or accelerator.is_main_process:
        comparison = compare_original(
            model,
            retention_blocks,
            token_stats=token_stats,
            splits=splits,
            tokenizer=tokenizer,
            cfg=cfg,
            run=run,
            accelerator=accelerator,
        )

    if accelerator.is_main_process:
        evals = [r for r in run.metrics() if r.get("kind") == "eval"]
        differences = {  # each stated difference, paired over the held-out prompts
            "after_minus_before": before_after_differences(run, evals, strata=prompt_strata(splits)),
            **comparison.pop("differences", {}),
        }
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
            "epoch_losses": result["epoch_losses"],
            "samples_shown": cfg.eval.samples_shown,
            **comparison,
            "differences": differences,
            "machine": machine(accelerator.device, mixed_precision=accelerator.mixed_precision),
            "wall_seconds": run.wall_seconds(),
        }
        write_report(run.path, summary)
        write_json(run.file("summary.json"), summary)  # written last: its presence marks the run finished
        accelerator.print(_one_line(summary))
        accelerator.print(f"report: {run.path / 'report.html'}")
    accelerator.wait_for_everyone()
    return summary if accelerator.is_main_process else {}


def evaluate_domains(model, splits: TextSplits, domains: dict[str, slice], *, cfg: FitTextConfig, eos_id):
    """(metrics, greedy continuations, per-prompt parts, per-position statistics): greedy generation and
    teacher-forced statistics on the held-out blocks (prompt i is the start of block i, so each prompt's parts
    hold both), per held-out domain; with several domains every figure is the mean over domains and its interval
    is stratified by domain. The per-position statistics are :func:`collect_token_stats` of all held-out blocks."""
    by_domain, sequences, units, token = {}, [], [], []
    for name, rows in domains.items():
        gen_metrics, domain_sequences = generation_stats(
            model,
            splits.eval_ids[rows, : cfg.eval.prompt_tokens],
            max_new_tokens=cfg.eval.max_new_tokens,
            min_new_tokens=cfg.eval.min_new_tokens,
            ttr_window=cfg.eval.ttr_window,
            batch_size=cfg.eval.eval_batch_size,
            eos_id=eos_id,
        )
        blocks = splits.eval_ids[rows]
        token.append(collect_token_stats(model, blocks, batch_size=cfg.eval.eval_batch_size))
        held_out = summarise_token_stats(token[-1], blocks)
        units += [{**g, **h} for g, h in zip(gen_metrics.pop("units"), held_out.pop("units"), strict=True)]
        by_domain[name] = {**gen_metrics, **held_out}
        sequences += domain_sequences
    stats = {key: torch.cat([part[key] for part in token]) for key in token[0]}  # domains are in row order
    if len(by_domain) == 1:
        return next(iter(by_domain.values())), sequences, units, stats
    intervals = figure_intervals(units, strata=prompt_strata(splits), names=HEADLINE)
    return {**average_over_domains(by_domain), **intervals}, sequences, units, stats


def prompt_strata(splits: TextSplits) -> list[str] | None:
    """The held-out domain of every prompt when there are several (intervals resample within each), else None."""
    domains = domain_rows(splits.manifest, splits.eval_ids.size(0))
    if len(domains) < 2:
        return None
    return [name for name, rows in domains.items() for _ in range(rows.start, rows.stop)]


def before_after_differences(run: Run, evals: list[dict], *, strata) -> dict:
    """After minus before of every headline figure, paired over the held-out prompts (each prompt's parts are
    in its generation record); empty for a run made before records held them."""
    units = [
        [r.get("units") for r in read_jsonl(run.file(f"generations/epoch_{record['epoch']:03d}.jsonl"))]
        for record in (evals[0], evals[-1])
    ]
    if any(u is None for side in units for u in side):
        return {}
    return figure_differences(units[1], units[0], strata=strata, names=HEADLINE)


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
    """The training and held-out ids (with --eval_data's held-out sets): built and recorded (data.pt, manifest,
    then config.json, which marks the run started) by a new run, read back and checked by a resumed one."""
    saved = load_saved_ids(run) if cfg.run.resume else None
    if saved:
        return TextSplits(saved[0]["train_ids"], saved[0]["eval_ids"], saved[1])
    splits = build_text_splits(cfg.data, tokenizer, tokenizer_name=recorded["model_description"])
    if cfg.data.eval_data:
        splits = with_eval_sets(splits, cfg.data, tokenizer)
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
    run: Run, name: str, tokenizer, splits: TextSplits, sequences, *, units: list[dict], cfg: FitTextConfig
) -> None:
    """Every held-out prompt with its domain, continuation, the human reference, the generated ids and its parts
    of the headline figures (``units``: what intervals and paired differences are computed from)."""
    prompt_ids, reference_ids = splits.eval_ids.split(
        [cfg.eval.prompt_tokens, splits.eval_ids.size(1) - cfg.eval.prompt_tokens], 1
    )
    texts, prompts, references = (
        decode_texts(tokenizer, ids) for ids in (sequences, prompt_ids.tolist(), reference_ids.tolist())
    )
    domains = domain_rows(splits.manifest, splits.eval_ids.size(0))
    domain_of = [name for name, rows in domains.items() for _ in range(rows.start, rows.stop)]
    records = [
        {"index": i, "domain": d, "prompt": p, "continuation": c, "reference": r, "ids": s, "units": u}
        for i, (d, p, c, r, s, u) in enumerate(
            zip(domain_of, prompts, texts, references, sequences, units, strict=True)
        )
    ]
    run.write_jsonl(name, records)


def compare_original(
    hyperfitted: torch.nn.Module,
    retention_blocks: dict[str, dict],
    *,
    token_stats: dict[int, dict[str, torch.Tensor]],
    splits: TextSplits,
    tokenizer,
    cfg: FitTextConfig,
    run: Run,
    accelerator: Accelerator,
) -> dict:
    """The original model, read again and placed (or sharded) like the hyperfitted one, against it: retention
    (perplexity on every bundled domain), every decoding strategy on the held-out prompts, sharpness and reference
    ranks. Read again rather than kept through training: a second full copy would double a 7B model's memory.
    ``token_stats`` holds the per-position statistics of evaluations by epoch: those of the first and the last
    evaluation are exactly these two models' on the held-out blocks, so they are used instead of recomputed.

    With several held-out domains every decoding figure is the mean over domains, and the sharpness comparison
    is given per domain as well as over all positions (equal-sized domains, so its means are the domain means)."""
    original = prepare_for_inference(load_causal_lm(cfg.model)[0].eval(), accelerator)
    batch = cfg.eval.eval_batch_size
    evals = [r for r in run.metrics() if r.get("kind") == "eval"]
    own, *_ = retention_blocks  # the run's own held-out blocks: splits.eval_ids
    others = {name: blocks for name, blocks in retention_blocks.items() if name != own}
    with torch.no_grad(), accelerator.autocast():
        # A resumed run may lack an evaluation's statistics (kept in memory only): those are computed here.
        stats = [
            token_stats.get(record["epoch"]) or collect_token_stats(m, splits.eval_ids, batch_size=batch)
            for m, record in ((original, evals[0]), (hyperfitted, evals[-1]))
        ]
        retention = retention_summary(
            {own: perplexity_from_nll(stats[0]["nll"], splits.eval_ids)}
            | domain_perplexities(original, others, batch_size=batch),
            {own: perplexity_from_nll(stats[1]["nll"], splits.eval_ids)}
            | domain_perplexities(hyperfitted, others, batch_size=batch),
            trained_on=own,
        )
    if not cfg.eval.strategy_names():
        return {"retention": retention}
    # The greedy continuations of the first and last evaluation were decoded by exactly these models: reuse them.
    precomputed = {
        (name, "greedy"): [
            r["ids"] for r in read_jsonl(run.file(f"generations/epoch_{record['epoch']:03d}.jsonl"))
        ]
        for name, record in (("original", evals[0]), ("hyperfitted", evals[-1]))
    }
    with torch.no_grad(), accelerator.autocast():
        table, generations = decoding_table(
            {"original": original, "hyperfitted": hyperfitted},
            splits.eval_ids[:, : cfg.eval.prompt_tokens],
            cfg.eval.strategy_names(),
            max_new_tokens=cfg.eval.max_new_tokens,
            min_new_tokens=cfg.eval.min_new_tokens,
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
    del original
    sharpness = compare_sharpness(*stats)
    strata = prompt_strata(splits)
    units = {
        key: sequence_units(sequences, ttr_window=cfg.eval.ttr_window, max_new_tokens=cfg.eval.max_new_tokens)
        for key, sequences in generations.items()
    }
    domains = domain_rows(splits.manifest, splits.eval_ids.size(0))
    if len(domains) > 1:
        positions = splits.eval_ids.size(1) - 1  # collect_token_stats flattens blocks in order
        sharpness["domains"] = {
            name: compare_sharpness(
                *({k: v[rows.start * positions : rows.stop * positions] for k, v in s.items()} for s in stats)
            )
            for name, rows in domains.items()
        }
        train_seqs = splits.train_ids.tolist()
        for (model_name, strategy), sequences in generations.items():
            by_domain = {
                name: generation_metrics(
                    sequences[rows],
                    train_seqs=train_seqs,
                    ttr_window=cfg.eval.ttr_window,
                    max_new_tokens=cfg.eval.max_new_tokens,
                )
                for name, rows in domains.items()
            }
            table[model_name][strategy].update(average_over_domains(by_domain))
            # The pooled intervals of generation_metrics, replaced by ones of the mean over domains.
            table[model_name][strategy].update(figure_intervals(units[(model_name, strategy)], strata=strata))
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
    differences = strategy_differences(units, model="hyperfitted", baseline="original", strata=strata)
    return {"retention": retention, "decoding": table, "sharpness": sharpness, "differences": differences}


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
    "short_share",
    "short_length",
)


def _headline(record: dict) -> dict:
    """An evaluation's headline figures, each with its 95 % interval ``<name>_ci`` when recorded."""
    return {
        "epoch": record["epoch"],
        "step": record["step"],
        **{k: record[k] for name in HEADLINE for k in (name, f"{name}_ci") if k in record},
    }


def seed_headline(summary: dict) -> dict[str, dict[str, float]]:
    """What ``--seeds`` averages: the headline figures before and after, after − before, and the hyperfitted
    model's greedy TTR minus the original's with each strategy."""
    differences = summary.get("differences", {})
    return {
        "before": numbers(summary["before"], HEADLINE),
        "after": numbers(summary["after"], HEADLINE),
        "after_minus_before": {k: d["diff"] for k, d in differences.get("after_minus_before", {}).items()},
        "hyperfitted_greedy_minus_original_ttr": {
            strategy: d["ttr"]["diff"]
            for strategy, d in differences.get("hyperfitted_greedy_minus_original", {}).items()
            if "ttr" in d
        },
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
