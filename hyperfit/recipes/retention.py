"""`hyperfit retention`: what hyperfitting costs outside its training text (the paper's appendix reports GLUE/MMLU
for instruct models; reviewers asked for knowledge retention).

Reads top to bottom: config → tasks checked (lm-eval importable?) → models → for each bundled corpus the cloze
items and perplexity blocks (documents a named run trained on are left out) → every model scored on each →
paired differences against the first model → optional lm-evaluation-harness tasks → summary.json and report.
Offline by default: ``cloze`` and ``perplexity`` need only the bundled corpora; ``lm-eval:TASK`` needs
``pip install 'hyperfit[retention]'`` and the network (its tasks download their data).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyperfit.common import stats
from hyperfit.common.config import run_recipe
from hyperfit.common.hardware import resolve_precision
from hyperfit.common.report import Cell, Report, Section, Table, Text, write_report_files
from hyperfit.common.runs import HyperfitError, Run, read_json, write_json
from hyperfit.recipes.eval_text import is_run_dir, load_model, parse_models
from hyperfit.text.data import BUNDLED
from hyperfit.text.retention import (
    block_perplexity,
    cloze_source_items,
    domain_blocks,
    perplexity_change,
    score_cloze,
)

OFFLINE_TASKS = ("cloze", "perplexity")


@dataclass
class RetentionConfig:
    """Which models, which probes, how many items."""

    models: str = field(
        default="",
        metadata={
            "help": "Comma list of NAME=SPEC (hub name, directory, .gguf, the offline default, or a fit-text run "
            "directory); differences are taken against the first."
        },
    )
    tasks: str = field(
        default="cloze,perplexity",
        metadata={
            "help": "Comma list: cloze (offline LAMBADA-style probe from the bundled corpora), perplexity "
            "(held-out blocks of every bundled corpus), lm-eval:TASK (lm-evaluation-harness; network)."
        },
    )
    n_items: int = field(default=200, metadata={"help": "Cloze items per bundled corpus."})
    n_blocks: int = field(default=32, metadata={"help": "Perplexity blocks per bundled corpus."})
    block_len: int = field(default=128, metadata={"help": "Tokens per perplexity block."})
    seed: int = field(default=0, metadata={"help": "Seed of the item and block selection."})
    lm_eval_limit: int | None = field(
        default=None, metadata={"help": "lm-eval: examples per task (unset = all)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Items / blocks per forward pass."})
    precision: str = field(
        default="auto",
        metadata={"help": "bf16 (autocast), fp32, or auto: bf16 where the device multiplies bf16 natively."},
    )
    out: str = field(default="runs/retention", metadata={"help": "Output directory."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output directory."})


def parse_tasks(text: str) -> tuple[list[str], list[str]]:
    """(offline tasks, lm-eval task names); an unknown name is one sentence."""
    offline, harness = [], []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        if item in OFFLINE_TASKS:
            offline.append(item)
        elif item.startswith("lm-eval:") and item[len("lm-eval:") :]:
            harness.append(item[len("lm-eval:") :])
        else:
            raise HyperfitError(
                f"--tasks item {item!r} is unknown; use cloze, perplexity or lm-eval:TASK (e.g. lm-eval:hellaswag)."
            )
    if not offline and not harness:
        raise HyperfitError("--tasks is empty; pass e.g. --tasks cloze,perplexity.")
    return offline, harness


def check_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise HyperfitError(
            "lm-eval tasks need lm-evaluation-harness, which is not installed; run `pip install "
            "'hyperfit[retention]'` (its tasks download data, so the machine must be online) or use --tasks "
            "cloze,perplexity."
        ) from err


def trained_documents(specs: dict[str, str]) -> dict[str, set[int]]:
    """``{bundled corpus: document indices}`` that any run directory among the models trained on."""
    exclude: dict[str, set[int]] = {}
    for spec in specs.values():
        if is_run_dir(spec):
            manifest = read_json(Path(spec) / "manifest.json")
            if manifest.get("source") in BUNDLED:
                exclude.setdefault(manifest["source"], set()).update(manifest["train_doc_ids"])
    return exclude


def main(cfg: RetentionConfig) -> dict:
    started = time.perf_counter()
    specs = parse_models(cfg.models)
    offline, harness = parse_tasks(cfg.tasks)
    if harness:
        check_lm_eval()
    out = Run.open(cfg.out, overwrite=cfg.overwrite, resume=False)
    loaded = {name: load_model(spec) for name, spec in specs.items()}
    first, (_, tokenizer, _) = next(iter(loaded.items()))
    for name, (_, other, _) in loaded.items():
        if other.get_vocab() != tokenizer.get_vocab():
            raise HyperfitError(
                f"model {name!r} uses another tokenizer than {first!r}; compare checkpoints of one model family."
            )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg.precision = resolve_precision(cfg.precision, device)  # the results record the precision that ran
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    exclude = trained_documents(specs)

    items = {}
    if "cloze" in offline:
        for source in BUNDLED:
            try:
                items[source] = cloze_source_items(
                    source, n_items=cfg.n_items, seed=cfg.seed, skip_docs=exclude.get(source)
                )
            except HyperfitError:
                continue  # gensim missing: that corpus is left out
    blocks = {}
    if "perplexity" in offline:
        blocks = domain_blocks(
            tokenizer,
            n_blocks=cfg.n_blocks,
            block_len=cfg.block_len,
            seed=cfg.seed,
            exclude={k: sorted(v) for k, v in exclude.items()},
        )
    if offline and not items and not blocks:
        raise HyperfitError("the bundled corpora need gensim; run `pip install gensim` (or `make install`).")

    cloze: dict[str, dict] = {}
    perplexity: dict[str, dict] = {}
    for name, (model, _, _) in loaded.items():
        model.to(device).eval()
        with torch.no_grad(), autocast:
            cloze[name] = {
                s: score_cloze(model, tokenizer, its, batch_size=cfg.batch_size) for s, its in items.items()
            }
            perplexity[name] = {
                s: block_perplexity(model, b["ids"], batch_size=cfg.batch_size) for s, b in blocks.items()
            }
        model.to("cpu")
    for name in list(loaded)[1:]:
        for source, scores in cloze[name].items():
            base = cloze[first][source]
            scores["accuracy_minus_first"] = stats.paired_difference(scores["hits"], base["hits"])
            scores["logprob_minus_first"] = stats.paired_difference(scores["logprobs"], base["logprobs"])
        for source, scores in perplexity[name].items():
            scores["ratio_to_first"] = perplexity_change(perplexity[first][source], scores)

    lm_eval_results = {}
    if harness:
        for name, (model, tok, _) in loaded.items():
            lm_eval_results[name] = run_lm_eval(model.to(device), tok, harness, cfg)
            model.to("cpu")

    summary = {
        "kind": "retention",
        "models": specs,
        "tasks": cfg.tasks,
        "excluded_training_documents": {k: len(v) for k, v in exclude.items()},
        "cloze": cloze,
        "perplexity": perplexity,
        "lm_eval": lm_eval_results,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(out.file("items.json"), items)
    write_retention_report(out.path, summary, cfg)
    write_json(out.file("summary.json"), summary)
    print(f"report: {out.path / 'report.html'}")
    return summary


def run_lm_eval(model, tokenizer, tasks: list[str], cfg: RetentionConfig) -> dict:
    """lm-evaluation-harness on an in-memory model: ``{task: {metric: value, metric_stderr: value}}``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    try:
        results = lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size),
            tasks=tasks,
            limit=cfg.lm_eval_limit,
        )
    except Exception as err:  # the harness raises many kinds; all mean "this task could not run here"
        raise HyperfitError(
            f"lm-eval task(s) {', '.join(tasks)} failed ({type(err).__name__}: {str(err)[:200]}); their data "
            "come from the Hugging Face hub, so check the task names and the network, or use --tasks cloze."
        ) from err
    return {
        task: {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        for task, metrics in results["results"].items()
    }


def _diff(d: dict | None, fmt: str = "{:+.3f}") -> Cell | None:
    if d is None:
        return None
    note = f"p = {d['p']:.3f}" + ("; interval includes 0" if d["ci_includes_zero"] else "")
    return Cell(d["diff"], tuple(d["ci"]), fmt, note)


def write_retention_report(out: Path, summary: dict, cfg: RetentionConfig) -> Path:
    names = list(summary["models"])
    sections = []
    cloze_rows = [
        [
            name,
            source,
            s["n_items"],
            Cell(s["accuracy"], tuple(s["accuracy_ci"])),
            Cell(s["mean_logprob"], tuple(s["mean_logprob_ci"]), "{:.2f}"),
            _diff(s.get("accuracy_minus_first")),
            _diff(s.get("logprob_minus_first"), "{:+.2f}"),
        ]
        for name in names
        for source, s in summary["cloze"].get(name, {}).items()
    ]
    if cloze_rows:
        sections.append(
            Section(
                "Cloze probe (offline)",
                [
                    Table(
                        [
                            "model",
                            "corpus",
                            "items",
                            "accuracy",
                            "mean log-prob (nats)",
                            f"accuracy − {names[0]}",
                            f"log-prob − {names[0]}",
                        ],
                        cloze_rows,
                        caption="Recover a content word that occurred earlier in the passage",
                    ),
                    Text(
                        "Accuracy: every token of the target word is the model's top-1 under teacher forcing (what "
                        "greedy decoding would write). Items are LAMBADA-style, one per document, seeded; documents "
                        "a named run trained on are left out."
                    ),
                ],
            )
        )
    ppl_rows = []
    for name in names:
        for source, s in summary["perplexity"].get(name, {}).items():
            r = s.get("ratio_to_first")
            ratio = None
            if r is not None:
                note = f"p = {r['p']:.3f}" + (
                    "; interval includes 1" if r["ratio_ci"][0] <= 1 <= r["ratio_ci"][1] else ""
                )
                ratio = Cell(r["ratio"], tuple(r["ratio_ci"]), "{:.2f}", note)
            ppl_rows.append([name, source, Cell(s["perplexity"], tuple(s["perplexity_ci"]), "{:.1f}"), ratio])
    if ppl_rows:
        sections.append(
            Section(
                "Held-out perplexity on every bundled corpus",
                [
                    Table(
                        ["model", "corpus", "perplexity", f"ratio to {names[0]}"],
                        ppl_rows,
                        caption=f"{cfg.n_blocks} blocks × {cfg.block_len} tokens per corpus",
                    )
                ],
            )
        )
    lm_rows = [
        [name, task, ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "stderr" not in k)]
        for name, tasks in summary["lm_eval"].items()
        for task, metrics in tasks.items()
    ]
    if lm_rows:
        sections.append(Section("lm-evaluation-harness", [Table(["model", "task", "metrics"], lm_rows)]))
    subtitle = (
        f"Models: {', '.join(f'{k} = {v}' for k, v in summary['models'].items())}. 95 % percentile-bootstrap "
        "intervals over items / blocks; differences against the first model are paired over the same items "
        f"(sign-flip permutation p). Wall {summary['wall_seconds']:.0f} s."
    )
    return write_report_files(Report(f"hyperfit retention — {out}", sections, subtitle=subtitle), out)


def cli(argv: list[str] | None = None) -> int:
    return run_recipe(main, RetentionConfig, argv, prog="hyperfit retention")


if __name__ == "__main__":
    sys.exit(cli())
