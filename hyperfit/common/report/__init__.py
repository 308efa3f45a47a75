"""Reports as data, rendered once: recipes build a ``Report`` (sections of tables, plots, samples, figures and
text) and ``write_report_files`` writes ``report.md`` and ``report.html`` through jinja2 templates (autoescaped),
one stylesheet and one plotting module. ``sections`` holds the blocks every run report shares.
"""

from hyperfit.common.report.data import (
    Block,
    Cell,
    Figure,
    Plot,
    Report,
    Sample,
    Samples,
    Section,
    Series,
    Table,
    Text,
)
from hyperfit.common.report.plot import plot_svg
from hyperfit.common.report.render import highlight_repeats, render, write_report_files

__all__ = [
    "Block",
    "Cell",
    "Figure",
    "Plot",
    "Report",
    "Sample",
    "Samples",
    "Section",
    "Series",
    "Table",
    "Text",
    "highlight_repeats",
    "plot_svg",
    "render",
    "write_report_files",
]
