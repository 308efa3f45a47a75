"""`hyperfit eval`: any set of causal LMs × any set of decoding strategies on the same prompts (paper §2, §4).

Models are named ``NAME=SPEC`` where SPEC is a hub name, a local directory, a .gguf file, the offline default, or a
finished fit-text run directory (its saved ``model/``). Prompts come from a run's held-out split or a
``--prompts file.jsonl`` (one ``{"text": ...}`` per line: the first ``--prompt_tokens`` tokens are the prompt,
the rest the human reference). Writes generations, the metrics table and a report into ``--out``;
``main(EvalTextConfig)``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyperfit.common.analysis import dataset_bleu, ttr_by_position
from hyperfit.common.compare import (
    compare_sharpness,
    decoding_table,
    generation_metrics,
    strategy_differences,
)
from hyperfit.common.config import EvalConfig, RunConfig, config_dict, run_recipe
from hyperfit.common.evaluate import collect_token_stats, sequence_units
from hyperfit.common.hardware import resolve_precision
from hyperfit.common.report import write_report_files
from hyperfit.common.runs import HyperfitError, Run, write_json
from hyperfit.common.stats import mean_ci
from hyperfit.text.data import read_text_file, vocab_fingerprint
from hyperfit.text.metrics import word_metrics
from hyperfit.text.model import (
    ModelConfig,
    check_positions,
    eos_ids,
    load_causal_lm,
    resolve_model,
    word_start_ids,
)
from hyperfit.text.report import eval_report


@dataclass
class EvalInputsConfig:
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


@dataclass
class EvalTextConfig:
    """Everything ``hyperfit eval`` takes; on the command line the fields' own flags (``--models``, ``--out``)."""

    inputs: EvalInputsConfig = field(
        default_factory=EvalInputsConfig, metadata={"help": "Models and prompts."}
    )
    eval: EvalConfig = field(
        default_factory=EvalConfig, metadata={"help": "Decoding strategies and lengths."}
    )
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "The output directory."})


def parse_models(spec: str) -> dict[str, str]:
    models = {}
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise HyperfitError(
                f"--models item {item!r} is not NAME=SPEC; write e.g. original=smollm2-135m-gguf."
            )
        if name in models:
            raise HyperfitError(
                f"--models names {name!r} twice ({models[name]} and {target}); give every model its own name."
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


def check_same_tokenizer(run_dir: str, tokenizer, model_name: str) -> None:
    """Refuse a run whose ids come from another tokenizer than the evaluated models' (its ids would be foreign)."""
    recorded = json.loads((Path(run_dir) / "manifest.json").read_text()).get("tokenizer_vocab_sha256")
    if recorded is None and (Path(run_dir) / "model" / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        recorded = vocab_fingerprint(AutoTokenizer.from_pretrained(Path(run_dir) / "model"))
    if recorded is not None and recorded != vocab_fingerprint(tokenizer):
        raise HyperfitError(
            f"{run_dir} was tokenised with another tokenizer than model {model_name!r}, so its training ids mean "
            "other tokens; pass --train_from a run of the same model family."
        )


def read_prompt_file(path: Path, tokenizer, *, prompt_tokens: int) -> tuple[torch.Tensor, list[str], int]:
    """(prompts[n, prompt_tokens], references, skipped): texts shorter than prompt_tokens + 1 tokens are skipped."""
    if not path.is_file():
        raise HyperfitError(
            f"prompts file {path} does not exist; pass a JSONL file with one {{'text': ...}} per line."
        )
    prompts, references, skipped = [], [], 0
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise HyperfitError(
                f"{path} line {number} is not a JSON object with a 'text' field; fix it."
            ) from err
        if not isinstance(text, str):
            raise HyperfitError(
                f"{path} line {number}: 'text' is a {type(text).__name__}, not a string; write the text as one "
                "JSON string."
            )
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


def check_inputs(inputs: EvalInputsConfig, specs: dict[str, str]) -> None:
    """The prompts file, every model and --train_from exist, each refusal one sentence."""
    if inputs.prompts is not None and not Path(inputs.prompts).is_file():
        raise HyperfitError(
            f"prompts file {inputs.prompts} does not exist; pass a JSONL file of {{'text': ...}} lines."
        )
    for spec in specs.values():
        if not is_run_dir(spec):
            resolve_model(ModelConfig(model=spec))  # a missing path stops here
    if inputs.train_from is not None and not is_run_dir(inputs.train_from):
        raise HyperfitError(
            f"--train_from {inputs.train_from} is not a fit-text run directory (no manifest.json and data.pt); "
            "pass the --out of a fit-text run."
        )


def load_models(specs: dict[str, str], *, positions: int) -> tuple[dict[str, torch.nn.Module], object]:
    """({name: model}, the shared tokenizer); models of another tokenizer, or with fewer than ``positions``
    positions (prompt + generated tokens), are refused."""
    loaded = {name: load_model(spec) for name, spec in specs.items()}
    first_name, (_, tokenizer, _) = next(iter(loaded.items()))
    for name, (model, other, description) in loaded.items():
        if other.get_vocab() != tokenizer.get_vocab():
            raise HyperfitError(
                f"model {name!r} uses another tokenizer than {first_name!r}; compare only checkpoints of one "
                "model family (same tokenizer), or evaluate them in separate runs."
            )
        check_positions(
            model,
            lengths={"--prompt_tokens + --max_new_tokens": positions},
            description=f"model {name!r} ({description})",
        )
    return {name: model.eval() for name, (model, _, _) in loaded.items()}, tokenizer


def load_prompts(cfg: EvalTextConfig, tokenizer, run_dirs: list[str]):
    """(prompts[n, p], human references, held-out blocks or None, texts skipped) from --prompts or a run."""
    if cfg.inputs.prompts:
        prompts, references, skipped = read_prompt_file(
            Path(cfg.inputs.prompts), tokenizer, prompt_tokens=cfg.eval.prompt_tokens
        )
        if skipped:
            print(
                f"skipped {skipped} texts shorter than {cfg.eval.prompt_tokens + 1} tokens in {cfg.inputs.prompts}"
            )
        return prompts, references, None, skipped
    if not run_dirs:
        raise HyperfitError(
            "no prompts: pass --prompts file.jsonl or name a fit-text run directory in --models."
        )
    eval_blocks = torch.load(Path(run_dirs[0]) / "data.pt")["eval_ids"]
    references = tokenizer.batch_decode(eval_blocks[:, cfg.eval.prompt_tokens :], skip_special_tokens=True)
    return eval_blocks[:, : cfg.eval.prompt_tokens], references, eval_blocks, 0


def score_texts(
    run: Run,
    generations: dict,
    table: dict,
    tokenizer,
    prompts,
    references,
    train_ids,
    *,
    cfg: EvalTextConfig,
) -> dict[str, dict[str, dict]]:
    """Decode every model × strategy's continuations, add the text measures to ``table`` (word TTR / rep-4 /
    diversity; Dataset BLEU against the training ids), write the generation files, and return the TTR of a
    sliding window by position (``{model: {strategy: curve}}``) when more tokens than the window were generated."""
    prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    by_position: dict[str, dict[str, dict]] = {}
    for (model_name, strategy), sequences in generations.items():
        texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
        table[model_name][strategy].update(word_metrics(texts, ttr_window=cfg.eval.ttr_window))
        if train_ids is not None:  # paper Table 2: closeness to the training set, per continuation
            bleu = dataset_bleu(sequences, train_ids.tolist())
            table[model_name][strategy]["dataset_bleu"] = sum(bleu) / len(bleu)
            table[model_name][strategy]["dataset_bleu_ci"] = list(mean_ci(bleu))
        if cfg.eval.max_new_tokens > cfg.eval.ttr_window:  # appendix Fig. 9: TTR of a sliding window
            curve = ttr_by_position(sequences, window=cfg.eval.ttr_window)
            by_position.setdefault(model_name, {})[strategy] = {
                k: curve[k] for k in ("position", "mean", "n")
            }
            run.write_json(f"generations/ttr_by_position/{model_name}_{strategy}.json", curve)
        records = [
            {"index": i, "prompt": p, "continuation": t, "reference": r, "ids": s}
            for i, (p, t, r, s) in enumerate(zip(prompt_texts, texts, references, sequences, strict=True))
        ]
        run.write_jsonl(f"generations/decoding/{model_name}_{strategy}.jsonl", records)
    return by_position


def main(cfg: EvalTextConfig) -> dict:
    started = time.perf_counter()
    specs = parse_models(cfg.inputs.models)
    lengths = parse_lengths(cfg.inputs.lengths, max_new_tokens=cfg.eval.max_new_tokens)
    strategies = cfg.eval.strategy_names()
    check_inputs(cfg.inputs, specs)  # before --out is touched
    run = Run.open(cfg.run.out, overwrite=cfg.run.overwrite, resume=False, command="eval", resumable=False)
    models, tokenizer = load_models(specs, positions=cfg.eval.prompt_tokens + cfg.eval.max_new_tokens)
    run_dirs = [spec for spec in specs.values() if is_run_dir(spec)]
    train_from = cfg.inputs.train_from or (run_dirs[0] if run_dirs else None)
    if train_from:
        check_same_tokenizer(train_from, tokenizer, next(iter(models)))
    train_ids = torch.load(Path(train_from) / "data.pt")["train_ids"] if train_from else None
    prompts, references, eval_blocks, skipped = load_prompts(cfg, tokenizer, run_dirs)
    if "greedy_blocked" in strategies and train_ids is None:
        raise HyperfitError(
            "greedy_blocked needs training ids; pass --train_from RUN_DIR or drop it from --strategies."
        )
    if "entropy_matched" in strategies and eval_blocks is None:
        raise HyperfitError(
            "entropy_matched needs held-out blocks; name a fit-text run directory in --models."
        )
    first, last = list(models)[0], list(models)[-1]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # The results record the precision that ran (auto: bf16 where the device multiplies bf16 natively).
    cfg.inputs.precision = resolve_precision(cfg.inputs.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.inputs.precision == "bf16")
    for model in models.values():
        model.to(device)
    with torch.no_grad(), autocast:
        sharpness, target_entropy = {}, None
        if eval_blocks is not None:
            batch = cfg.eval.eval_batch_size
            stats = {
                name: collect_token_stats(m, eval_blocks, batch_size=batch) for name, m in models.items()
            }
            target_entropy = float(stats[last]["entropy"].mean())
            sharpness = {
                f"{first}_vs_{name}": compare_sharpness(stats[first], stats[name])
                for name in list(models)[1:]
            }
        table, generations = decoding_table(
            models,
            prompts,
            strategies,
            max_new_tokens=cfg.eval.max_new_tokens,
            min_new_tokens=cfg.eval.min_new_tokens,
            train_ids=train_ids,
            eval_blocks=eval_blocks,
            target_entropy=target_entropy,
            eos_id=eos_ids(models[first], tokenizer),
            batch_size=cfg.eval.eval_batch_size,
            seed=cfg.inputs.eval_seed,
            ttr_window=cfg.eval.ttr_window,
            word_start_ids=word_start_ids(tokenizer) if cfg.eval.word_finish else None,
            blocker_n=cfg.eval.blocker_n,
            blocker_include_prompt=cfg.eval.blocker_include_prompt,
        )
    by_position = score_texts(run, generations, table, tokenizer, prompts, references, train_ids, cfg=cfg)
    # Every other model against the first, paired over the prompts: the same strategy, and its greedy decoding
    # against each of the first model's strategies.
    units = {
        key: sequence_units(sequences, ttr_window=cfg.eval.ttr_window, max_new_tokens=cfg.eval.max_new_tokens)
        for key, sequences in generations.items()
    }
    differences = {}
    for name in list(models)[1:]:
        differences.update(strategy_differences(units, model=name, baseline=first))
    summary = {
        "modality": "text",
        "kind": "eval",
        "models": specs,
        "prompts": cfg.inputs.prompts or f"held-out of {run_dirs[0]}",
        "n_prompts": int(prompts.size(0)),
        "prompts_skipped": skipped,
        "train_from": train_from,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "decoding": table,
        "differences": differences,
        "decoding_by_length": score_prefixes(
            generations, lengths, train_ids=train_ids, ttr_window=cfg.eval.ttr_window
        ),
        "ttr_by_position": by_position,
        "samples_shown": cfg.eval.samples_shown,
        "wall_seconds": time.perf_counter() - started,
    }
    if len(sharpness) == 1:
        summary["sharpness"] = next(iter(sharpness.values()))
    elif sharpness:
        summary["sharpness_pairs"] = sharpness
    run.write_config(config_dict(cfg))
    write_report_files(eval_report(run.path, summary), run.path)
    write_json(run.file("summary.json"), summary)
    print(f"report: {run.path / 'report.html'}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    return run_recipe(main, EvalTextConfig, argv, prog="hyperfit eval")


if __name__ == "__main__":
    sys.exit(cli())
