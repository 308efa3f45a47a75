"""Hyperfit a causal LM on a few text blocks and compare greedy continuations before and after (paper §3–5).

Reads top to bottom: config → Accelerator and seed → run directory → model → data → train (evaluating before,
during and after) → save → summary and report. ``accelerate launch scripts/fit_text.py --preset cpu-demo``.
"""

from __future__ import annotations

import sys

import torch
from accelerate.utils import set_seed

from hyperfit.common.compare import compare_sharpness, decoding_table, generation_metrics
from hyperfit.common.config import EvalConfig, RunConfig, TrainConfig, config_dict, run_recipe
from hyperfit.common.evaluate import (
    average_over_domains,
    collect_token_stats,
    generation_stats,
    teacher_forced_stats,
)
from hyperfit.common.layers import finish_trainable, prepare_trainable
from hyperfit.common.report import write_report
from hyperfit.common.runs import HyperfitError, Run, read_json, read_jsonl, sha256_ids, write_json
from hyperfit.common.shard import every_rank_evaluates, prepare_for_inference, save_full_model, sharding
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
from hyperfit.text.retention import domain_perplexities, retention_summary, run_domain_blocks

CONFIGS = (ModelConfig, TextDataConfig, TrainConfig, EvalConfig, RunConfig)

PRESETS = {
    # The paper's recipe (§1 of PAPER.md) for a GPU; --data/--model name the corpus and model to use.
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
    # The offline default on 2 CPU cores (PAPER.md §13): SmolLM2-135M on 32 Lee news blocks of 128 tokens.
    # lr 8e-5 × 16 epochs (64 updates) reaches train loss ~0.08, as lr 4e-5 × 20 reaches ~0.13, in 20 % less time.
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


for _name in ("paper-tinyllama", "paper-llama3-8b", "paper-deepseek-7b"):
    PRESETS[_name] = {**PRESETS["paper"], **PRESETS[_name]}


def decode_texts(tokenizer, sequences: list[list[int]]) -> list[str]:
    return tokenizer.batch_decode(sequences, skip_special_tokens=True)


def main(configs: tuple) -> dict:
    model_cfg, data_cfg, train_cfg, eval_cfg, run_cfg = configs
    accelerator = build_accelerator(train_cfg)
    set_seed(train_cfg.seed)
    check_source(data_cfg)  # every input is checked before the run directory is touched
    parse_eval_data(data_cfg.eval_data)
    recorded = {
        **config_dict(*configs),
        "model_fingerprint": model_fingerprint(model_cfg),
        "num_processes": accelerator.num_processes,
        "sharding": sharding(accelerator),
    }
    run = Run.open(
        run_cfg.out,
        overwrite=run_cfg.overwrite,
        resume=run_cfg.resume,
        writer=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        command="fit-text",
        config=recorded,
        allow_changes=run_cfg.allow_changes,
    )
    if run.is_finished:
        accelerator.print(f"{run.path} is already finished; its report is {run.path / 'report.html'}")
        write_report(run.path)
        return read_json(run.file("summary.json"))

    # Model, then data tokenised once with its tokenizer (a resumed run reloads the exact saved ids).
    model, tokenizer, model_description = load_causal_lm(model_cfg)
    check_positions(
        model,
        lengths={
            "--block_len": data_cfg.block_len,
            "--eval_len": data_cfg.eval_len or data_cfg.block_len,
            "--prompt_tokens + --max_new_tokens": eval_cfg.prompt_tokens + eval_cfg.max_new_tokens,
        },
        description=model_description,
    )
    if run_cfg.resume and run.file("data.pt").exists():
        saved = torch.load(run.file("data.pt"))
        manifest = read_json(run.file("manifest.json"))
        if sha256_ids(saved["train_ids"]) != manifest["train_ids_sha256"]:
            raise HyperfitError(f"{run.file('data.pt')} does not match its manifest; rerun with --overwrite.")
        splits = TextSplits(saved["train_ids"], saved["eval_ids"], manifest)
    else:
        splits = build_text_splits(data_cfg, tokenizer, tokenizer_name=model_description)
        if data_cfg.eval_data:
            splits = with_eval_sets(splits, data_cfg, tokenizer)
        if splits.eval_ids.size(1) <= eval_cfg.prompt_tokens:
            raise HyperfitError(
                f"held-out blocks have {splits.eval_ids.size(1)} tokens, not more than the {eval_cfg.prompt_tokens}"
                "-token prompt; raise --eval_len or lower --prompt_tokens."
            )
        if accelerator.is_main_process:
            save_splits(splits, run.path)
            run.write_json("manifest.json", splits.manifest)
            run.write_config({**recorded, "model_description": model_description})
    prompts = splits.eval_ids[:, : eval_cfg.prompt_tokens]
    domains = domain_rows(splits.manifest, splits.eval_ids.size(0))
    stop_ids = eos_ids(model, tokenizer)
    # Knowledge retention: teacher-forced perplexity on every bundled domain, of the original (reloaded after
    # training) and of the hyperfitted model.
    retention_blocks = run_domain_blocks(
        tokenizer,
        source=data_cfg.data,
        eval_ids=splits.eval_ids,
        domains=data_cfg.retention_domain_names(),
    )
    model, trainable = prepare_trainable(model, train_cfg)

    def evaluate(model, *, epoch: int, step: int) -> dict:
        by_domain, sequences = {}, []
        for name, rows in domains.items():
            gen_metrics, domain_sequences = generation_stats(
                model,
                prompts[rows],
                max_new_tokens=eval_cfg.max_new_tokens,
                min_new_tokens=eval_cfg.min_new_tokens,
                ttr_window=eval_cfg.ttr_window,
                batch_size=eval_cfg.eval_batch_size,
                eos_id=stop_ids,
            )
            held_out = teacher_forced_stats(model, splits.eval_ids[rows], batch_size=eval_cfg.eval_batch_size)
            by_domain[name] = {**gen_metrics, **held_out}
            sequences += domain_sequences
        metrics = next(iter(by_domain.values())) if len(by_domain) == 1 else average_over_domains(by_domain)
        texts = decode_texts(tokenizer, sequences)
        prompt_texts = decode_texts(tokenizer, prompts.tolist())
        references = decode_texts(tokenizer, splits.eval_ids[:, eval_cfg.prompt_tokens :].tolist())
        domain_of = [name for name, rows in domains.items() for _ in range(rows.start, rows.stop)]
        records = [
            {"index": i, "domain": d, "prompt": p, "continuation": c, "reference": r, "ids": s}
            for i, (d, p, c, r, s) in enumerate(
                zip(domain_of, prompt_texts, texts, references, sequences, strict=True)
            )
        ]
        run.write_jsonl(f"generations/epoch_{epoch:03d}.jsonl", records)
        accelerator.print(
            f"epoch {epoch}: TTR {metrics['ttr']:.3f}, held-out loss {metrics['loss']:.3f}, "
            f"entropy {metrics['entropy']:.3f}, top-1 {metrics['top1_prob']:.3f}"
            + (f" (mean of {', '.join(domains)})" if len(domains) > 1 else "")
        )
        return metrics

    result = train(model, splits.train_ids, train_cfg, accelerator=accelerator, run=run, evaluate=evaluate)
    model = finish_trainable(result.pop("model"))  # under FSDP / ZeRO-3 still sharded: every process saves
    accelerator.free_memory()  # drop the optimizer (Adam state) before the original model is read again

    if run_cfg.save_model:
        save_full_model(model, run.path / "model", accelerator)
        if accelerator.is_main_process:
            tokenizer.save_pretrained(run.path / "model")
    evals = [r for r in run.metrics() if r.get("kind") == "eval"]
    comparison, retention = {}, {}
    if every_rank_evaluates(accelerator) or accelerator.is_main_process:
        # The original is read again from its source rather than kept through training: a second full copy
        # would double the memory of a 7B model. It is placed (or sharded) like the hyperfitted model, and gives
        # the "before" side of the retention table as well as the decoding comparison.
        original = prepare_for_inference(load_causal_lm(model_cfg)[0].eval(), accelerator)
        with torch.no_grad(), accelerator.autocast():
            retention = retention_summary(
                domain_perplexities(original, retention_blocks, batch_size=eval_cfg.eval_batch_size),
                domain_perplexities(model, retention_blocks, batch_size=eval_cfg.eval_batch_size),
                trained_on=next(iter(retention_blocks)),
            )
        if eval_cfg.strategy_names():
            comparison = compare_original(
                original,
                model,
                splits,
                prompts,
                evals,
                tokenizer,
                eval_cfg,
                train_cfg,
                accelerator,
                run,
                stop_ids,
                domains,
            )
        del original

    if accelerator.is_main_process:
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
            "retention": retention,
            "epoch_losses": result["epoch_losses"],
            "samples_shown": eval_cfg.samples_shown,
            **comparison,
            "wall_seconds": run.wall_seconds(),
        }
        write_report(run.path, summary=summary)
        write_json(run.file("summary.json"), summary)  # written last: its presence marks the run finished
        accelerator.print(_one_line(summary))
        accelerator.print(f"report: {run.path / 'report.html'}")
    accelerator.wait_for_everyone()
    return summary if accelerator.is_main_process else {}


def compare_original(
    original,
    hyperfitted,
    splits,
    prompts,
    evals,
    tokenizer,
    eval_cfg,
    train_cfg,
    accelerator,
    run,
    stop_ids,
    domains,
) -> dict:
    """Decode both models with every strategy on the held-out prompts; compare sharpness and reference ranks.

    With several domains every decoding figure is the mean over domains (``domains`` holds each one's), and the
    sharpness comparison is given per domain as well as over all positions (equal-sized domains, so its means
    equal the means over domains)."""
    models = {"original": original, "hyperfitted": hyperfitted}
    # The greedy continuations of the first and last evaluation were decoded by exactly these models: reuse them.
    precomputed = {
        (name, "greedy"): [
            r["ids"] for r in read_jsonl(run.file(f"generations/epoch_{record['epoch']:03d}.jsonl"))
        ]
        for name, record in (("original", evals[0]), ("hyperfitted", evals[-1]))
    }
    with torch.no_grad(), accelerator.autocast():
        table, generations = decoding_table(
            models,
            prompts,
            eval_cfg.strategy_names(),
            max_new_tokens=eval_cfg.max_new_tokens,
            min_new_tokens=eval_cfg.min_new_tokens,
            train_ids=splits.train_ids,
            eval_blocks=splits.eval_ids,
            target_entropy=evals[-1]["entropy"],
            eos_id=stop_ids,
            batch_size=eval_cfg.eval_batch_size,
            seed=train_cfg.seed,
            ttr_window=eval_cfg.ttr_window,
            word_start_ids=word_start_ids(tokenizer) if eval_cfg.word_finish else None,
            blocker_n=eval_cfg.blocker_n,
            blocker_include_prompt=eval_cfg.blocker_include_prompt,
            precomputed=precomputed,
        )
        stats = [
            collect_token_stats(m, splits.eval_ids, batch_size=eval_cfg.eval_batch_size)
            for m in (original, hyperfitted)
        ]
    sharpness = compare_sharpness(*stats)
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
                    ttr_window=eval_cfg.ttr_window,
                    max_new_tokens=eval_cfg.max_new_tokens,
                )
                for name, rows in domains.items()
            }
            table[model_name][strategy].update(average_over_domains(by_domain))
    for (model_name, strategy), sequences in generations.items():
        texts = decode_texts(tokenizer, sequences)
        table[model_name][strategy].update(word_metrics(texts, ttr_window=eval_cfg.ttr_window))
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
    "short_share",
    "short_length",
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
    return run_recipe(main, CONFIGS, argv, presets=PRESETS, prog="hyperfit fit-text")


if __name__ == "__main__":
    sys.exit(cli())
