"""Several training seeds of one run: each seed is a normal, resumable run directory ``OUT/seed_<s>/``, then
``OUT/summary.json`` and the report give every headline figure's mean ± sd across seeds and each seed's row.

Modality-free: a recipe hands over a per-seed callable (its own ``main`` with ``--seed s --out OUT/seed_<s>``) and
how to read the headline figures off one summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hyperfit.common.config import config_dict
from hyperfit.common.report import Cell, Report, Section, Table, Text, write_report_files
from hyperfit.common.runs import FINISHED_MARKER, STARTED_MARKER, HyperfitError, Run, read_json, write_json
from hyperfit.common.stats import mean_sd

Headline = dict[str, dict[str, float]]
"""A run's headline figures by group: ``{"after": {"ttr": 0.6, ...}, ...}``."""

SEEDS_KIND = "seeds"


@dataclass
class SeedsConfig:
    """Repeat a run over several training seeds."""

    seeds: str = field(
        default="",
        metadata={
            "help": "Comma list of training seeds (e.g. 0,1,2): each runs as --seed into OUT/seed_<s>/ (a normal, "
            "resumable run), then OUT/summary.json and OUT/report.html give mean ± sd across seeds and every "
            "seed's row. Unset or one seed: one run in OUT, as without the flag."
        },
    )


def parse_seeds(text: str) -> list[int]:
    """The seeds of ``--seeds``: distinct integers in the given order (empty for an empty text)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    seeds = []
    for item in items:
        try:
            seeds.append(int(item))
        except ValueError:
            raise HyperfitError(
                f"--seeds item {item!r} is not an integer; pass a comma list of whole numbers such as --seeds 0,1,2."
            ) from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise HyperfitError(
            f"--seeds names seed {repeated[0]} more than once, which would run the same training twice into one "
            "directory; list each seed once, e.g. --seeds 0,1,2."
        )
    return seeds


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) / f"seed_{seed}"


def for_seed(cfg, seed: int, out: str | Path | None = None):
    """A recipe's configuration (with ``train``, ``run`` and ``seeds`` parts) for one seed: ``--seed seed``,
    ``--seeds`` unset and, with ``out``, that run directory (a seed's directory is new after an --overwrite of
    the whole, so it is never overwritten itself)."""
    run = cfg.run if out is None else replace(cfg.run, out=str(out), overwrite=False)
    return replace(cfg, train=replace(cfg.train, seed=seed), run=run, seeds=SeedsConfig())


def numbers(record: dict, keys=None) -> dict[str, float]:
    """The finite plain numbers of ``record`` (those named in ``keys``, if given): what can be averaged."""
    return {
        k: float(v)
        for k, v in record.items()
        if (keys is None or k in keys)
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


def run_seeds(
    seeds: list[int],
    run_one: Callable[[int, Path], dict],
    *,
    out: str | Path,
    headline: Callable[[dict], Headline],
    command: str,
    config: dict,
    seed_controls: str,
    overwrite: bool = False,
    resume: bool = False,
    writer: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> dict:
    """Run ``run_one(seed, OUT/seed_<seed>)`` for every seed, then write ``OUT/summary.json`` and the report.

    ``OUT`` is opened like any run (``--overwrite`` / ``--resume`` as usual; a resumed one resumes or re-reports
    each seed's run), recorded as ``<command> --seeds`` so that no single run resumes into it. The summary holds
    ``mean_sd`` (``{group: {figure: stats.mean_sd over seeds}}``, for the figures every seed reports) and
    ``per_seed`` (each seed's headline); ``seed_controls`` says in words what the seed changes. Only the writer
    process writes; the others return ``{}``."""
    run = Run.open(
        out,
        overwrite=overwrite,
        resume=resume,
        writer=writer,
        barrier=barrier,
        command=f"{command} --seeds",
        config={**config, "seeds": ",".join(map(str, seeds))},
    )
    run.write_config({**config, "seeds": ",".join(map(str, seeds))})
    summaries = {seed: run_one(seed, seed_dir(out, seed)) for seed in seeds}
    barrier()
    if not writer:
        return {}
    per_seed = {seed: headline(summary) for seed, summary in summaries.items()}
    summary = {
        "kind": SEEDS_KIND,
        "command": command,
        "seeds": seeds,
        "seed_runs": {str(seed): seed_dir(out, seed).name for seed in seeds},
        "seed_controls": seed_controls,
        "mean_sd": spread(per_seed),
        "per_seed": {str(seed): figures for seed, figures in per_seed.items()},
        "wall_seconds": run.wall_seconds(),
    }
    write_report_files(seeds_report(out, summary), out)
    write_json(run.file("summary.json"), summary)  # written last: its presence marks the seeds finished
    print(f"{len(seeds)} seeds: report {Path(out) / 'report.html'}")
    return summary


def run_recipe_seeds(
    cfg,
    seeds: list[int],
    main: Callable,
    *,
    command: str,
    headline: Callable[[dict], Headline],
    seed_controls: str,
    config: dict | None = None,
    accelerator=None,
) -> dict:
    """:func:`run_seeds` for a recipe whose configuration has ``train``, ``run`` and ``seeds`` parts: each seed
    is ``main(for_seed(cfg, seed, OUT/seed_<s>))``; OUT, ``--overwrite`` and ``--resume`` come from ``cfg.run``,
    the recorded configuration from ``cfg`` unless ``config`` is given, and with an ``accelerator`` only its main
    process writes."""
    return run_seeds(
        seeds,
        lambda seed, out: main(for_seed(cfg, seed, out)),
        out=cfg.run.out,
        headline=headline,
        command=command,
        config=config_dict(cfg) if config is None else config,
        seed_controls=seed_controls,
        overwrite=cfg.run.overwrite,
        resume=cfg.run.resume,
        writer=True if accelerator is None else accelerator.is_main_process,
        barrier=(lambda: None) if accelerator is None else accelerator.wait_for_everyone,
    )


def is_seeds_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a run made with ``--seeds``, finished (its summary says so) or not (its
    ``config.json`` records ``<command> --seeds``)."""
    path = Path(path)
    if (path / FINISHED_MARKER).exists():
        return read_json(path / FINISHED_MARKER).get("kind") == SEEDS_KIND
    if (path / STARTED_MARKER).exists():
        return str(read_json(path / STARTED_MARKER).get("command", "")).endswith(" --seeds")
    return False


def seeds_of(path: str | Path) -> list[int]:
    """The seeds a ``--seeds`` directory was asked for, from its summary or, before it finished, its config."""
    path = Path(path)
    if (path / FINISHED_MARKER).exists():
        return [int(s) for s in read_json(path / FINISHED_MARKER)["seeds"]]
    return parse_seeds(str(read_json(path / STARTED_MARKER).get("seeds", "")))


def finished_seed_runs(path: str | Path) -> dict[int, Path]:
    """``{seed: OUT/seed_<s>}`` for the seeds of the ``--seeds`` directory ``path`` whose runs have finished, in
    ``--seeds`` order (an interrupted directory gives the seeds done so far)."""
    return {s: seed_dir(path, s) for s in seeds_of(path) if (seed_dir(path, s) / FINISHED_MARKER).exists()}


def spread(per_seed: dict[int, Headline]) -> dict[str, dict[str, dict]]:
    """``{group: {figure: mean_sd}}`` over seeds, for every figure that every seed reports, in first-seed order."""
    first = next(iter(per_seed.values()))
    return {
        group: {
            name: mean_sd([per_seed[s][group][name] for s in per_seed])
            for name in figures
            if all(name in per_seed[s].get(group, {}) for s in per_seed)
        }
        for group, figures in first.items()
    }


def seed_page(out: str | Path, seed_run: str) -> str:
    """The link to one seed's run: its report, or its summary where the command writes no report (a prior)."""
    return (
        f"{seed_run}/report.html"
        if (Path(out) / seed_run / "report.html").exists()
        else f"{seed_run}/summary.json"
    )


def seeds_report(out: str | Path, summary: dict) -> Report:
    """One table per group: each figure's mean ± sd over seeds, its range and every seed's value; links to the
    seed runs' own reports (or summaries)."""
    seeds = [str(s) for s in summary["seeds"]]
    tables = []
    for group, figures in summary["mean_sd"].items():
        rows = [
            [
                name,
                f"{s['mean']:.4g} ± {s['sd']:.2g}",
                Cell(s["min"], fmt="{:.4g}"),
                Cell(s["max"], fmt="{:.4g}"),
                *(Cell(summary["per_seed"][seed][group].get(name), fmt="{:.4g}") for seed in seeds),
            ]
            for name, s in figures.items()
        ]
        if rows:
            columns = ["figure", "mean ± sd", "min", "max", *(f"seed {seed}" for seed in seeds)]
            tables.append(Table(columns, rows, caption=group))
    links = "\n".join(f"- [seed {s}]({seed_page(out, summary['seed_runs'][s])})" for s in seeds)
    n = len(seeds)
    sections = [
        Section(
            f"Mean ± sd over {n} seeds",
            [
                Text(f"sd is the sample standard deviation over the {n} seeds. {summary['seed_controls']}"),
                *tables,
            ],
        ),
        Section("Seed runs", [Text(links)]),
    ]
    subtitle = (
        f"hyperfit {summary['command']} · seeds {', '.join(seeds)} · wall {summary['wall_seconds']:.0f} s"
    )
    return Report(f"hyperfit {summary['command']}, {n} seeds — {out}", sections, subtitle=subtitle)
