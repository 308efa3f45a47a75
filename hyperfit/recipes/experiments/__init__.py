"""The paper's data experiments (§6) and two ablations its reviewers asked for, as commands.

``hyperfit experiment {data-size,data-order,domain,lr-epochs,early-stop,which-layers} [fit-text options] --out DIR``. Each is a
loop of ordinary fit-text runs (``DIR/runs/<variant>/``, each a complete run directory) plus one aggregate:
``DIR/summary.json`` (one row per variant, facts, notes) and ``DIR/report.md`` / ``report.html``.

One file per experiment (data_size, data_order, domain, lr_epochs, early_stop, which_layers), each with a function
of a ``Context`` returning an ``Outcome`` and a function turning the finished summary into report sections;
shared.py holds the configuration, presets and wiring they share, report.py the page around the sections,
command.py the name → experiment table, the checks, ``main`` and ``cli``.
"""

from hyperfit.recipes.experiments.command import EXPERIMENTS, QUESTIONS, check, cli, main, rewrite_report
from hyperfit.recipes.experiments.data_size import size_epochs
from hyperfit.recipes.experiments.domain import domain_sources
from hyperfit.recipes.experiments.shared import (
    CONFIGS,
    PRESETS,
    Context,
    ExperimentConfig,
    ExperimentRecipeConfig,
    Outcome,
)

__all__ = [
    "CONFIGS",
    "EXPERIMENTS",
    "PRESETS",
    "QUESTIONS",
    "Context",
    "ExperimentConfig",
    "ExperimentRecipeConfig",
    "Outcome",
    "check",
    "cli",
    "domain_sources",
    "main",
    "rewrite_report",
    "size_epochs",
]
