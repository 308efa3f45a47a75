"""`hyperfit eval`: any set of causal LMs × any set of decoding strategies on the same prompts (paper §2, §4).

Models are named ``NAME=SPEC`` where SPEC is a hub name, a local directory, a .gguf file, the offline default, or a
finished fit-text run directory (its saved ``model/``). Prompts come from a run's held-out split or a
``--prompts file.jsonl`` (one ``{"text": ...}`` per line: the first ``--prompt_tokens`` tokens are the prompt,
the rest the human reference). Writes generations, the metrics table and a report into ``--out``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyperfit.common.analysis import mean_ttr
from hyperfit.common.compare import compare_sharpness, decoding_table, generation_metrics
from hyperfit.common.config import EvalConfig, RunConfig, run_recipe
from hyperfit.common.evaluate import collect_token_stats
from hyperfit.common.hardware import resolve_precision
from hyperfit.common.report import write_report
from hyperfit.common.runs import HyperfitError, Run, write_json
from hyperfit.text.model import ModelConfig, eos_ids, load_causal_lm, word_start_ids


@dataclass
class EvalTextConfig:
    """Which models, prompts and training data (for the blocker and copy analysis) to evaluate."""

    models: str = field(
        default="", metadata={"help": "Comma list of NAME=SPEC (hub name, directory, .gguf, run directory)."}
    )
    prompts: str | None = field(
        default=None, metadata={"help": "JSONL file of {'text': ...}; unset = a run's held-out."}
    )
    train_from: str | None = field(
        default=None,
        metadata={"help": "Run directory whose training ids feed the blocker and copy analysis."},
    )
    lengths: str = field(
        default="",
        metadata={
            "help": "Also score the first L generated tokens of every continuation, for each L in this comma list "
            "(each < max_new_tokens; e.g. 96,128 with --max_new_tokens 256, the paper's three lengths)."
        },
    )
    eval_seed: int = field(default=0, metadata={"help": "Seed of the sampling strategies."})
    precision: str = field(
        default="auto",
        metadata={"help": "bf16 (autocast), fp32, or auto: bf16 where the device multiplies bf16 natively."},
    )


def parse_models(spec: str) -> dict[str, str]:
    models = {}
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise HyperfitError(
                f"--models item {item!r} is not NAME=SPEC; write e.g. original=smollm2-135m-gguf."
            )
        models[name] = target
    if not models:
        raise HyperfitError("no models given; pass --models original=SPEC,hyperfitted=RUN_DIR.")
    return models


def is_run_dir(path: str) -> bool:
    return (Path(path) / "manifest.json").exists() and (Path(path) / "data.pt").exists()


def load_model(spec: str):
    if is_run_dir(spec):
        if not (Path(spec) / "model").exists():
            raise HyperfitError(
                f"run directory {spec} has no saved model/; rerun fit-text with --save_model."
            )
        spec = str(Path(spec) / "model")
    return load_causal_lm(ModelConfig(model=spec))


def read_prompt_file(path: Path, tokenizer, *, prompt_tokens: int) -> tuple[torch.Tensor, list[str], int]:
    """(prompts[n, prompt_tokens], references, skipped): texts shorter than prompt_tokens + 1 tokens are skipped."""
    if not path.is_file():
        raise HyperfitError(
            f"prompts file {path} does not exist; pass a JSONL file with one {{'text': ...}} per line."
        )
    prompts, references, skipped = [], [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise HyperfitError(
                f"{path} line {number} is not a JSON object with a 'text' field; fix it."
            ) from err
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) <= prompt_tokens:
            skipped += 1
            continue
        prompts.append(ids[:prompt_tokens])
        references.append(tokenizer.decode(ids[prompt_tokens:], skip_special_tokens=True))
    if not prompts:
        raise HyperfitError(
            f"{path} has no text longer than {prompt_tokens} tokens ({skipped} skipped); add longer texts or "
            "lower --prompt_tokens."
        )
    return torch.tensor(prompts), references, skipped


def parse_lengths(text: str, *, max_new_tokens: int) -> list[int]:
    """The extra scoring lengths of ``--lengths``, each a positive integer below ``max_new_tokens``."""
    lengths = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        if not item.isdigit() or not 0 < int(item) < max_new_tokens:
            raise HyperfitError(
                f"--lengths item {item!r} is not a whole number between 1 and --max_new_tokens - 1 "
                f"({max_new_tokens - 1}); raise --max_new_tokens or drop it."
            )
        lengths.append(int(item))
    return sorted(set(lengths))


def score_prefixes(
    generations: dict[tuple[str, str], list[list[int]]], lengths: list[int], *, train_ids, ttr_window: int
) -> dict[str, dict[str, dict[str, dict]]]:
    """``{L: {model: {strategy: metrics}}}`` of the first L generated tokens (a prefix of a longer greedy or
    sampled continuation is the continuation that length would have produced)."""
    train_seqs = None if train_ids is None else train_ids.tolist()
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for length in lengths:
        by_model = table.setdefault(str(length), {})
        for (model_name, strategy), sequences in generations.items():
            by_model.setdefault(model_name, {})[strategy] = generation_metrics(
                [s[:length] for s in sequences], train_seqs=train_seqs, ttr_window=ttr_window
            )
    return table


def main(configs: tuple) -> dict:
    cfg, eval_cfg, run_cfg = configs
    started = time.perf_counter()
    specs = parse_models(cfg.models)
    lengths = parse_lengths(cfg.lengths, max_new_tokens=eval_cfg.max_new_tokens)
    if cfg.prompts is not None and not Path(cfg.prompts).is_file():
        raise HyperfitError(
            f"prompts file {cfg.prompts} does not exist; pass a JSONL file of {{'text': ...}} lines."
        )
    run = Run.open(run_cfg.out, overwrite=run_cfg.overwrite, resume=False)
    loaded = {name: load_model(spec) for name, spec in specs.items()}
    first_name, (_, tokenizer, _) = next(iter(loaded.items()))
    for name, (_, other, _) in loaded.items():
        if other.get_vocab() != tokenizer.get_vocab():
            raise HyperfitError(
                f"model {name!r} uses another tokenizer than {first_name!r}; compare only checkpoints of one "
                "model family (same tokenizer), or evaluate them in separate runs."
            )
    run_dirs = [spec for spec in specs.values() if is_run_dir(spec)]
    train_from = cfg.train_from or (run_dirs[0] if run_dirs else None)
    train_ids = torch.load(Path(train_from) / "data.pt")["train_ids"] if train_from else None
    eval_blocks, skipped = None, 0
    if cfg.prompts:
        prompts, references, skipped = read_prompt_file(
            Path(cfg.prompts), tokenizer, prompt_tokens=eval_cfg.prompt_tokens
        )
    elif run_dirs:
        eval_blocks = torch.load(Path(run_dirs[0]) / "data.pt")["eval_ids"]
        prompts = eval_blocks[:, : eval_cfg.prompt_tokens]
        references = tokenizer.batch_decode(
            eval_blocks[:, eval_cfg.prompt_tokens :], skip_special_tokens=True
        )
    else:
        raise HyperfitError(
            "no prompts: pass --prompts file.jsonl or name a fit-text run directory in --models."
        )
    if skipped:
        print(f"skipped {skipped} texts shorter than {eval_cfg.prompt_tokens + 1} tokens in {cfg.prompts}")
    strategies = eval_cfg.strategy_names()
    if ("greedy_blocked" in strategies) and train_ids is None:
        raise HyperfitError(
            "greedy_blocked needs training ids; pass --train_from RUN_DIR or drop it from --strategies."
        )
    models = {name: model.eval() for name, (model, _, _) in loaded.items()}
    last = list(models)[-1]
    target_entropy = None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg.precision = resolve_precision(cfg.precision, device)  # the results record the precision that ran
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    for model in models.values():
        model.to(device)
    with torch.no_grad(), autocast:
        sharpness = {}
        if eval_blocks is not None:
            stats = {
                name: collect_token_stats(m, eval_blocks, batch_size=eval_cfg.eval_batch_size)
                for name, m in models.items()
            }
            target_entropy = float(stats[last]["entropy"].mean())
            sharpness = {
                f"{first_name}_vs_{name}": compare_sharpness(stats[first_name], stats[name])
                for name in list(models)[1:]
            }
        elif "entropy_matched" in strategies:
            raise HyperfitError(
                "entropy_matched needs held-out blocks; name a fit-text run directory in --models."
            )
        table, generations = decoding_table(
            models,
            prompts,
            strategies,
            max_new_tokens=eval_cfg.max_new_tokens,
            train_ids=train_ids,
            eval_blocks=eval_blocks,
            target_entropy=target_entropy,
            eos_id=eos_ids(models[first_name], tokenizer),
            batch_size=eval_cfg.eval_batch_size,
            seed=cfg.eval_seed,
            ttr_window=eval_cfg.ttr_window,
            word_start_ids=word_start_ids(tokenizer) if eval_cfg.word_finish else None,
            blocker_n=eval_cfg.blocker_n,
        )
    prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    for (model_name, strategy), sequences in generations.items():
        texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
        table[model_name][strategy]["word_ttr"] = mean_ttr(
            [t.split() for t in texts], window=eval_cfg.ttr_window
        )
        records = [
            {"index": i, "prompt": p, "continuation": t, "reference": r, "ids": s}
            for i, (p, t, r, s) in enumerate(zip(prompt_texts, texts, references, sequences, strict=True))
        ]
        run.write_jsonl(f"generations/decoding/{model_name}_{strategy}.jsonl", records)
    summary = {
        "modality": "text",
        "kind": "eval",
        "models": specs,
        "prompts": cfg.prompts or f"held-out of {run_dirs[0]}",
        "n_prompts": int(prompts.size(0)),
        "prompts_skipped": skipped,
        "train_from": train_from,
        "max_new_tokens": eval_cfg.max_new_tokens,
        "decoding": table,
        "decoding_by_length": score_prefixes(
            generations, lengths, train_ids=train_ids, ttr_window=eval_cfg.ttr_window
        ),
        "samples_shown": eval_cfg.samples_shown,
        "wall_seconds": time.perf_counter() - started,
    }
    if len(sharpness) == 1:
        summary["sharpness"] = next(iter(sharpness.values()))
    elif sharpness:
        summary["sharpness_pairs"] = sharpness
    run.write_json("config.json", {**vars(cfg), **vars(eval_cfg)})
    write_report(run.path, summary=summary)
    write_json(run.file("summary.json"), summary)
    print(f"report: {run.path / 'report.html'}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    return run_recipe(main, (EvalTextConfig, EvalConfig, RunConfig), argv, prog="hyperfit eval")


if __name__ == "__main__":
    sys.exit(cli())
