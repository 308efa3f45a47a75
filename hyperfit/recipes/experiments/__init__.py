"""The paper's data experiments (§6; PAPER.md §3.4, §3.5, §5) and two reviewer ablations (PAPER.md §10) as commands.

``hyperfit experiment {data-size,data-order,domain,lr-epochs,early-stop,which-layers} [fit-text options] --out DIR``. Each is a
loop of ordinary fit-text runs (``DIR/runs/<variant>/``, each a complete run directory) plus one aggregate:
``DIR/summary.json`` (one row per variant), ``DIR/report.md`` / ``report.html`` (tables, inline SVG plot).

One file per experiment (data_size, data_order, domain, lr_epochs, early_stop, which_layers), each a function of a
``Context`` returning an ``Outcome``; shared.py holds the configs, presets and wiring they share, report.py the
report and plots, command.py the name → function table, the checks, ``main`` and ``cli``.
"""

from hyperfit.recipes.experiments.command import EXPERIMENTS, QUESTIONS, check, cli, main, rewrite_report
from hyperfit.recipes.experiments.data_size import size_epochs
from hyperfit.recipes.experiments.domain import domain_sources
from hyperfit.recipes.experiments.shared import CONFIGS, PRESETS, Context, ExperimentConfig, Outcome

__all__ = [
    "CONFIGS",
    "EXPERIMENTS",
    "PRESETS",
    "QUESTIONS",
    "Context",
    "ExperimentConfig",
    "Outcome",
    "check",
    "cli",
    "domain_sources",
    "main",
    "rewrite_report",
    "size_epochs",
]
