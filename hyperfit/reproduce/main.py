"""`hyperfit reproduce --scale cpu|paper --out DIR`: run the plan's tasks in order under one progress bar with an
ETA, skip those whose output exists (``--resume``), then measure, decide the claims and write the report.

``main(ReproduceConfig)`` reads top to bottom: resolve the scale → open the directory → plan → run → results →
claims → report.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from hyperfit.common.claims import claims_summary
from hyperfit.common.config import config_dict, run_recipe
from hyperfit.common.hardware import machine
from hyperfit.common.report import write_report_files
from hyperfit.common.runs import HyperfitError, Run, read_json, read_jsonl, write_json
from hyperfit.reproduce import claims as paper_claims
from hyperfit.reproduce.config import ReproduceConfig, resolve
from hyperfit.reproduce.figures import (
    ID_FIGURES,
    WORD_FIGURES,
    continuation_units,
    domain_figures,
    paired,
    sliding_ttr,
)
from hyperfit.reproduce.text import Task, TextPlan, check_inputs, text_tasks


def image_tasks(cfg: ReproduceConfig, out: Path) -> list[Task]:
    """The image side (§7.1): the offline prior (built once, shared cache) and fit-image into OUT/image."""
    if not cfg.image:
        return []
    from hyperfit.recipes import fit_image, pretrain_image

    def run_image() -> None:
        for cli, argv in (
            (pretrain_image.cli, ["--resume"]),
            (fit_image.cli, ["--out", str(out / "image"), "--resume", "--seed", str(cfg.seed)]),
        ):
            if cli(argv) != 0:
                raise HyperfitError(
                    "the image step failed (see above); rerun with --resume once it is fixed."
                )

    return [Task("image prior", out / "image" / "summary.json", 3.0, run_image)]


def run_tasks(tasks: list[Task], *, say=print) -> dict[str, float]:
    """Run every task not yet done, in order; one bar over the plan's total cost, whose rate (and so ETA) is
    measured on the tasks this process ran. Returns the seconds each task took."""
    seconds: dict[str, float] = {}
    done = [t for t in tasks if t.done()]
    bar = tqdm(total=round(sum(t.cost for t in tasks), 2), desc="reproduce", unit="step", mininterval=0)
    bar.update(round(sum(t.cost for t in done), 2))
    bar.unit, bar.unit_scale = "", False
    for task in tasks:
        if task.done():
            continue
        bar.set_postfix_str(task.name)
        started = time.perf_counter()
        task.run()
        seconds[task.name] = time.perf_counter() - started
        bar.update(round(task.cost, 2))
    bar.close()
    return seconds


def text_results(plan: TextPlan) -> dict:
    """Every decoding's figures per domain and averaged, the paired differences the claims read, the tuning
    record, copying and the deep-tail histogram."""
    cfg = plan.cfg
    train_seqs = plan.ids["train_ids"].tolist()
    held = plan.held_out_domains()
    decodings: dict[str, list[dict]] = {}
    for path in sorted((plan.out / "decodes").glob("*/*.jsonl")):
        decodings[f"{path.parent.name}/{path.stem}"] = read_jsonl(path)
    rows, domains = plan.split("test")
    references = plan.ids["eval_ids"][rows, cfg.prompt_tokens :].tolist()
    tokenizer = plan._tokenizer()
    decodings["human/reference"] = [
        {"ids": r, "text": t, "domain": d}
        for r, t, d in zip(
            references, tokenizer.batch_decode(references, skip_special_tokens=True), domains, strict=False
        )
    ]
    units, figures, curves = {}, {}, {}
    for key, records in decodings.items():
        same_family = not key.startswith("larger/")
        units[key] = continuation_units(
            [r["ids"] for r in records],
            [r["text"] for r in records],
            train_seqs=train_seqs if same_family else None,
        )
        names = (ID_FIGURES + WORD_FIGURES) if same_family else WORD_FIGURES
        figures[key] = domain_figures(units[key], [r["domain"] for r in records], held_out=held, names=names)
        if same_family:
            curves[key] = sliding_ttr([r["ids"] for r in records])
    greedy = "hyperfitted/greedy"
    differences = {}
    for key in decodings:
        if key != greedy:
            names = (ID_FIGURES + WORD_FIGURES) if not key.startswith("larger/") else WORD_FIGURES
            differences[f"{greedy} - {key}"] = paired(
                units[greedy], units[key], domains, held_out=held, names=names
            )
    if "hyperfitted/greedy_blocked" in units:
        differences["hyperfitted/greedy_blocked - hyperfitted/greedy"] = paired(
            units["hyperfitted/greedy_blocked"], units[greedy], domains, held_out=held, names=ID_FIGURES
        )
    tuned = {f: f"tuned_{f}" for f in [s for s in (cfg.samplers or "").split(",") if s]}
    tuning = {
        f"{key}/{family}": plan.chosen(key, family)
        for key, families in (("original", tuned), ("hyperfitted", {cfg.hyperfitted_sampler: None}))
        for family in families
        if family
    }
    spans = [u["copy_gt10"] for u in units[greedy]]
    tail_path = plan.out / "analysis" / "tail.json"
    return {
        "domains": list(dict.fromkeys(domains)),
        "trained_on": plan.trained_on(),
        "not_trained_on": held,
        "n_test_per_domain": cfg.n_test,
        "n_dev_per_domain": cfg.n_dev,
        "figures": figures,
        "differences": differences,
        "sliding_ttr": curves,
        "tuning": tuning,
        "tuned": tuned,
        "copies": {"hits": int(sum(spans)), "n": len(spans)},
        "tail": read_json(tail_path) if tail_path.exists() else None,
        "fit": plan.summary,
        "larger_name": cfg.larger or "",
    }


def main(cfg: ReproduceConfig) -> dict:
    cfg = resolve(cfg)
    check_inputs(cfg)
    out = Path(cfg.out)
    recorded = config_dict(cfg)
    run = Run.open(out, overwrite=cfg.overwrite, resume=cfg.resume, command="reproduce", config=recorded)
    run.write_config(recorded)
    plan = TextPlan(cfg, out)
    tasks = text_tasks(plan) + image_tasks(cfg, out)
    write_json(
        out / "plan.json",
        [{"name": t.name, "output": str(t.output.relative_to(out)), "cost": t.cost} for t in tasks],
    )
    seconds = run_tasks(tasks)
    results = text_results(plan)
    image = read_json(out / "image" / "summary.json") if cfg.image else None
    claims = (
        paper_claims.text_claims(results)
        + paper_claims.image_claims(image)
        + paper_claims.experiment_claims({})
    )
    table = claims_summary(claims)
    write_json(out / "claims.json", table)
    summary = {
        "kind": "reproduce",
        "scale": cfg.scale,
        "text": results,
        "image": image and {k: image.get(k) for k in ("before", "after", "differences")},
        "claims": table,
        "task_seconds": seconds,
        "machine": machine(plan.device, mixed_precision="bf16" if plan.precision == "bf16" else "no"),
        "wall_seconds": run.wall_seconds(),
    }
    from hyperfit.reproduce.report import reproduce_report

    write_report_files(reproduce_report(summary, cfg), out)
    write_json(out / "summary.json", summary)
    print(f"claims: {table['counts']}; report: {out / 'report.html'}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    return run_recipe(main, ReproduceConfig, argv, prog="hyperfit reproduce")


if __name__ == "__main__":
    sys.exit(cli())
