"""``hyperfit compare RUN_DIR... --out DIR``: finished runs side by side, e.g. the text and the image demo.

One table of sharpness and repetition before and after hyperfitting (paper Tables 1-3 and §7.1 in one place), two
charts of it, and each image run's completion grid. Two single runs of one modality are also checked against each
other (:func:`agreement`): whether each figure's intervals overlap, and how their configurations and machines
differ — the check for one configuration run on two machines. A run repeated over ``--seeds`` (its ``--out``) counts as one
run: each figure as its mean ± sd over the seeds that finished, and a table of every seed's own values with their
intervals. Writes ``DIR/comparison.md``, ``DIR/comparison.html`` and ``DIR/comparison.json`` (the figures shown).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hyperfit.common.hardware import describe_machine
from hyperfit.common.report import Cell, Figure, Report, Section, Table, Text, write_report_files
from hyperfit.common.report.sections import CROSS_RUN_ROWS, cross_run_plots, cross_run_table, per_seed_table
from hyperfit.common.runs import FINISHED_MARKER, HyperfitError, read_json, write_json
from hyperfit.common.seeds import finished_seed_runs, is_seeds_dir, numbers, seeds_of, spread
from hyperfit.image.report import CROSS_RUN_IMAGE_ROWS

ROWS = (*CROSS_RUN_ROWS, *CROSS_RUN_IMAGE_ROWS)
SHARE_KEYS = ("ttr", "top1_prob", "rep_4", "loop_share", "stripe_score")
FIGURES = tuple(key for key, _, _ in ROWS)
SEEDS_NOTE = (
    'A run repeated over seeds ("N seeds") shows each figure as its mean ± sample sd over the seeds whose runs '
    "finished (the charts: the means); each seed's own values, with their 95 % intervals, follow below. A single "
    "run shows each value with its 95 % bootstrap interval over its held-out prompts or images."
)


def seed_figures(summary: dict) -> dict[str, dict[str, float]]:
    """What the comparison averages over seeds: the figures it shows before, after and after − before."""
    changes = summary.get("differences", {}).get("after_minus_before", {})
    return {
        "before": numbers(summary.get("before", {}), FIGURES),
        "after": numbers(summary.get("after", {}), FIGURES),
        "after_minus_before": {k: d["diff"] for k, d in changes.items() if k in FIGURES},
    }


def read_compared(run_dir: Path) -> dict:
    """One compared directory: a finished run's summary as it is, or for a ``--seeds`` directory a summary of
    the seeds that finished (``mean_sd`` and ``per_seed`` of :func:`seed_figures`, the means as
    ``before``/``after`` for the charts, and each seed's own summary under ``seed_summaries``)."""
    if is_seeds_dir(run_dir):
        runs = finished_seed_runs(run_dir)
        if not runs:
            raise HyperfitError(
                f"{run_dir} is a --seeds directory in which no seed's run has finished (no seed_<s>/summary.json); "
                "finish it by rerunning its command with --resume, or pass a finished run."
            )
        summaries = {seed: read_json(path / FINISHED_MARKER) for seed, path in runs.items()}
        per_seed = {seed: seed_figures(summary) for seed, summary in summaries.items()}
        mean_sd = spread(per_seed)
        first = next(iter(summaries.values()))
        return {
            "kind": "seeds",
            "modality": first.get("modality"),
            "seeds": list(runs),
            "missing_seeds": [s for s in seeds_of(run_dir) if s not in runs],
            "mean_sd": mean_sd,
            "per_seed": {str(seed): figures for seed, figures in per_seed.items()},
            **{
                side: {k: v["mean"] for k, v in mean_sd.get(side, {}).items()} for side in ("before", "after")
            },
            "grid": f"{runs[next(iter(runs))].name}/{first['grid']}" if first.get("grid") else None,
            "seed_summaries": summaries,
        }
    if not (run_dir / FINISHED_MARKER).exists():
        raise HyperfitError(
            f"{run_dir} is neither a finished run (no summary.json) nor a --seeds directory; pass the --out of a "
            "finished fit-text or fit-image run, with or without --seeds."
        )
    return read_json(run_dir / FINISHED_MARKER)


def read_all(run_dirs: list[str | Path]) -> dict[str, tuple[Path, dict]]:
    """Every compared directory by name: its modality, "(N seeds)" for a seeds directory, and the directory's
    name when two would share one."""
    compared: dict[str, tuple[Path, dict]] = {}
    for run_dir in map(Path, run_dirs):
        summary = read_compared(run_dir)
        name = summary.get("modality") or run_dir.name
        if summary.get("kind") == "seeds":
            n = len(summary["seeds"])
            missing = f", {len(summary['missing_seeds'])} unfinished" if summary["missing_seeds"] else ""
            name = f"{name} ({n} seed{'s' if n != 1 else ''}{missing})"
        name = name if name not in compared else f"{name} ({run_dir.name})"
        compared[name] = (run_dir, summary)
    return compared


# Settings that name where a run is written or how it was started, not what it computes.
NOT_COMPARED = {"out", "overwrite", "resume", "allow_changes", "seeds", "report_to", "command"}


def agreement(compared: dict[str, tuple[Path, dict]]) -> list[dict]:
    """Every two single runs of one modality, figure by figure (before, after and after − before of each figure
    the comparison shows): both values with their 95 % intervals, whether the intervals overlap, and the settings
    and machine facts in which the runs differ. For one configuration run twice or on two machines, "agree"
    means every interval overlaps its counterpart; greedy decoding is exact only on one machine."""
    singles = [(name, run_dir, s) for name, (run_dir, s) in compared.items() if s.get("kind") != "seeds"]
    pairs = []
    for i, (a_name, a_dir, a) in enumerate(singles):
        for b_name, b_dir, b in singles[i + 1 :]:
            if a.get("modality") != b.get("modality"):
                continue
            rows = []
            for side in ("before", "after", "after_minus_before"):
                for key in FIGURES:
                    fa, fb = _figure(a, side, key), _figure(b, side, key)
                    if fa is None or fb is None:
                        continue
                    (va, ca), (vb, cb) = fa, fb
                    overlap = ca[0] <= cb[1] and cb[0] <= ca[1]
                    rows.append(
                        {
                            "side": side,
                            "figure": key,
                            "a": va,
                            "a_ci": ca,
                            "b": vb,
                            "b_ci": cb,
                            "overlap": overlap,
                        }
                    )
            pairs.append(
                {
                    "a": a_name,
                    "b": b_name,
                    "rows": rows,
                    "agree": all(r["overlap"] for r in rows),
                    "settings_differ": _differing(_config(a_dir), _config(b_dir), NOT_COMPARED),
                    "machines_differ": _differing(a.get("machine") or {}, b.get("machine") or {}, set()),
                    "machines": [describe_machine(a.get("machine")), describe_machine(b.get("machine"))],
                }
            )
    return pairs


def _figure(summary: dict, side: str, key: str) -> tuple[float, list[float]] | None:
    """(value, 95 % interval) of one figure of a run, or None where it has no interval."""
    if side == "after_minus_before":
        d = summary.get("differences", {}).get("after_minus_before", {}).get(key)
        return None if d is None else (d["diff"], list(d["ci"]))
    figures = summary.get(side, {})
    if figures.get(key) is None or figures.get(f"{key}_ci") is None:
        return None
    return figures[key], list(figures[f"{key}_ci"])


def _config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    return read_json(path) if path.exists() else {}


def _differing(a: dict, b: dict, skip: set) -> dict[str, list]:
    """``{key: [value in a, value in b]}`` for every key whose values differ (a missing key counts as None)."""
    return {
        k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)
    }


def agreement_sections(pairs: list[dict]) -> list[Section]:
    """One section per compared pair: each figure of both runs with its interval, and what differs."""
    sections = []
    labels = {"before": "before", "after": "after", "after_minus_before": "after − before"}
    for pair in pairs:
        disjoint = [f"{labels[r['side']]} {r['figure']}" for r in pair["rows"] if not r["overlap"]]
        verdict = (
            f"All {len(pair['rows'])} figures agree within their 95 % intervals."
            if pair["agree"]
            else f"{len(disjoint)} of {len(pair['rows'])} figures have disjoint intervals: {', '.join(disjoint)}."
        )
        settings = ", ".join(f"{k} {v[0]!r} vs {v[1]!r}" for k, v in pair["settings_differ"].items())
        table = Table(
            ["figure", pair["a"], pair["b"], "intervals overlap"],
            [
                [
                    f"{labels[r['side']]} {r['figure']}",
                    Cell(r["a"], ci=tuple(r["a_ci"]), fmt="{:.4g}"),
                    Cell(r["b"], ci=tuple(r["b_ci"]), fmt="{:.4g}"),
                    "yes" if r["overlap"] else "no",
                ]
                for r in pair["rows"]
            ],
        )
        facts = Text(
            f"{verdict} Settings that differ: {settings or 'none'}. Machines: {pair['a']} on "
            f"{pair['machines'][0]}; {pair['b']} on {pair['machines'][1]}."
        )
        sections.append(Section(f"Do {pair['a']} and {pair['b']} agree?", [facts, table]))
    return sections


def comparison_report(run_dirs: list[str | Path], out_dir: str | Path) -> Report:
    """Runs are named by their modality (or ``modality (directory)`` when two share one)."""
    return _report(read_all(run_dirs), Path(out_dir))


def _report(compared: dict[str, tuple[Path, dict]], out_dir: Path) -> Report:
    summaries = {name: summary for name, (_, summary) in compared.items()}
    grids = [
        Figure(
            os.path.relpath(run_dir / summary["grid"], out_dir),
            caption=f"{name}, seed {summary['seeds'][0]}" if summary.get("kind") == "seeds" else name,
        )
        for name, (run_dir, summary) in compared.items()
        if summary.get("grid")
    ]
    repeated = any(summary.get("kind") == "seeds" for summary in summaries.values())
    blocks = [
        cross_run_table(summaries, ROWS),
        Text(SEEDS_NOTE) if repeated else None,
        *cross_run_plots(summaries, ROWS, share_keys=SHARE_KEYS),
    ]
    sections = [Section("Sharpness and repetition, before and after", [b for b in blocks if b is not None])]
    seed_tables = [
        per_seed_table(name, summary["seed_summaries"], ROWS, summary["mean_sd"])
        for name, summary in summaries.items()
        if summary.get("kind") == "seeds"
    ]
    if any(seed_tables):
        sections.append(Section("Runs repeated over seeds, seed by seed", [t for t in seed_tables if t]))
    sections += agreement_sections(agreement(compared))
    if grids:
        sections.append(Section("Completions", grids))
    return Report("hyperfit: original vs hyperfitted, across modalities", sections)


def comparison_json(compared: dict[str, tuple[Path, dict]]) -> dict:
    """The figures the comparison shows, by run: a single run's values with their intervals and after − before;
    a seeds directory's mean ± sd and per-seed values."""
    runs = {}
    for name, (run_dir, summary) in compared.items():
        if summary.get("kind") == "seeds":
            keep = ("seeds", "missing_seeds", "mean_sd", "per_seed")
            runs[name] = {"path": str(run_dir), "kind": "seeds", **{k: summary[k] for k in keep}}
            continue
        shown = {f"{key}{end}" for key in FIGURES for end in ("", "_ci")}
        runs[name] = {
            "path": str(run_dir),
            "kind": "run",
            **{
                side: {k: v for k, v in summary.get(side, {}).items() if k in shown}
                for side in ("before", "after")
            },
            "after_minus_before": {
                k: d
                for k, d in summary.get("differences", {}).get("after_minus_before", {}).items()
                if k in FIGURES
            },
        }
    return {"runs": runs, "agreement": agreement(compared)}


def write_comparison(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write ``comparison.md`` / ``comparison.html`` / ``comparison.json`` into ``out_dir``; return the HTML
    path. Every directory is read (and refused in one sentence if it is not a run) before anything is written."""
    compared = read_all(run_dirs)
    page = write_report_files(_report(compared, Path(out_dir)), out_dir, stem="comparison")
    write_json(Path(out_dir) / "comparison.json", comparison_json(compared))
    return page


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hyperfit compare",
        description="Finished runs side by side (e.g. the text and the image demo): one table of sharpness and "
        "repetition before and after hyperfitting, two charts, and each image run's grid; a run made with --seeds "
        "shows each figure as mean ± sd over its seeds.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="Finished run directories; a run's --out made with --seeds shows mean ± sd over its seeds.",
    )
    parser.add_argument("--out", required=True, help="Directory for comparison.md and comparison.html.")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse exits 0 for --help and 2 for bad arguments
        return int(exit.code or 0)
    try:
        print(write_comparison(args.runs, args.out))
    except HyperfitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
