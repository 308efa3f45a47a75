"""Reports as data, rendered once: recipes build a ``Report`` (sections of tables, plots, samples, figures and
text) and ``write_report_files`` writes ``report.md`` and ``report.html`` through jinja2 templates (autoescaped),
one stylesheet and one plotting module.

The run-report functions of the earlier single module (``write_report``, ``write_comparison``, ...) are still
importable from here while the recipes move onto the data API.
"""

from hyperfit.common.report.data import (
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
from hyperfit.common.report.legacy import (
    CROSS_MODAL_ROWS,
    DECODING_COLUMNS,
    ROWS,
    before_after_rows,
    cross_modal_rows,
    decoding_rows,
    length_table,
    rank_chart,
    sharpness_charts,
    sharpness_rows,
    svg_bar_chart,
    svg_line_plot,
    write_comparison,
    write_report,
)
from hyperfit.common.report.plot import plot_svg
from hyperfit.common.report.render import highlight_repeats, render, write_report_files

__all__ = [
    "CROSS_MODAL_ROWS",
    "DECODING_COLUMNS",
    "ROWS",
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
    "before_after_rows",
    "cross_modal_rows",
    "decoding_rows",
    "highlight_repeats",
    "length_table",
    "plot_svg",
    "rank_chart",
    "render",
    "sharpness_charts",
    "sharpness_rows",
    "svg_bar_chart",
    "svg_line_plot",
    "write_comparison",
    "write_report",
    "write_report_files",
]
