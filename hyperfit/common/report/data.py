"""Report data: what a recipe hands to the renderer (tables, plots, samples, figures, text), never HTML or Markdown.

A ``Report`` is a title and a list of ``Section``s; each section is a list of blocks. ``render.write_report_files``
turns one ``Report`` into ``report.md`` and ``report.html``; the blocks carry numbers and strings only, so every
page is escaped and drawn in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cell:
    """A table cell with an optional 95 % interval and note.

    ``fmt`` is applied to ``value`` and to both ends of ``ci`` when they are numbers; ``None`` or a non-finite
    number shows as "–".
    """

    value: float | int | str | None
    ci: tuple[float, float] | None = None
    fmt: str = "{:.3f}"
    note: str = ""  # e.g. "interval includes 0"


@dataclass
class Table:
    """Rows of cells: ``str``, ``int``, ``float`` (formatted with ``fmt``), ``None`` (shown "–") or ``Cell``."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    fmt: str = "{:.3f}"  # default format of plain floats


@dataclass
class Series:
    """One named line (numeric ``x``) or one group of bars (category labels in ``x``).

    ``low`` / ``high`` are interval bounds drawn as error bars, one per ``y``.
    """

    name: str
    x: list[float | str]
    y: list[float]
    low: list[float] | None = None
    high: list[float] | None = None


@dataclass
class Plot:
    """A chart: ``kind`` "line" (points joined per series) or "bar" (grouped bars per category).

    ``references`` are labelled dashed horizontal lines (e.g. the original model's value).
    """

    title: str
    series: list[Series]
    kind: str = "line"
    x_label: str = ""
    y_label: str = ""
    log_x: bool = False
    references: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Sample:
    """One prompt and its continuations side by side: ``columns[name] = text`` (escaped by the renderer).

    With ``highlight_repeats`` every word inside a repeated 4-word sequence is marked in the HTML page.
    """

    title: str
    columns: dict[str, str]
    highlight_repeats: bool = True
    prompt: str = ""  # the shared context, shown above the columns


@dataclass
class Samples:
    items: list[Sample]
    caption: str = ""


@dataclass
class Figure:
    """A picture file (PNG, SVG, ...) inside the output directory; ``path`` is relative to it."""

    path: str
    caption: str = ""


@dataclass
class Text:
    """Short paragraphs in a small Markdown subset: blank lines between paragraphs, ``- `` list items,
    ``**bold**``, ``*emphasis*``, ```code``` and ``[label](relative/link)``. Written as is (escaped) into the
    .md and converted, after escaping, in the .html."""

    markdown: str


Block = Table | Plot | Samples | Figure | Text


@dataclass
class Section:
    title: str
    blocks: list[Block]


@dataclass
class Report:
    title: str
    sections: list[Section]
    subtitle: str = ""
