"""The one renderer: a ``Report`` -> ``report.md`` and ``report.html`` through jinja2 templates.

The HTML template autoescapes every string it is given (run names, prompts, continuations, captions); only the
SVG charts from ``plot.py`` and the repeat highlighting below are marked safe, and both escape their own text.
Markdown cannot hold the inline SVG, so each chart is also written to ``plots/`` beside the report and linked.
"""

from __future__ import annotations

import math
import re
from html import escape
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from hyperfit.common.report.data import Cell, Figure, Plot, Report, Samples, Table, Text
from hyperfit.common.report.plot import plot_svg
from hyperfit.common.runs import write_text_atomic

MISSING = "–"


def format_value(value, fmt: str = "{:.3f}") -> str:
    """A cell value as text: ``None`` and non-finite numbers as "–", floats through ``fmt``, the rest as str."""
    if value is None or isinstance(value, bool):
        return MISSING if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return MISSING
    if isinstance(value, int | float):
        return fmt.format(value)
    return str(value)


def cell_parts(cell, table_fmt: str) -> tuple[str, str, str]:
    """(value, interval, note) of one table cell as text. A plain int shows as an integer, a plain float through
    the table's ``fmt``; a ``Cell`` formats its value and interval with its own ``fmt``."""
    if isinstance(cell, Cell):
        ci = ""
        if cell.ci is not None:
            ci = f"[{format_value(cell.ci[0], cell.fmt)}, {format_value(cell.ci[1], cell.fmt)}]"
        return format_value(cell.value, cell.fmt), ci, cell.note
    if isinstance(cell, int) and not isinstance(cell, bool):
        return str(cell), "", ""
    return format_value(cell, table_fmt), "", ""


def is_numeric(cell) -> bool:
    """Right-aligned in HTML: numbers and missing values (which stand where a number would)."""
    value = cell.value if isinstance(cell, Cell) else cell
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def repeated_word_mask(words: list[str], *, n: int = 4) -> list[bool]:
    """For each word: does it belong to a word n-gram that occurs at least twice (both occurrences marked)?"""
    first_seen: dict[tuple[str, ...], int] = {}
    marked = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in first_seen:
            for j in (*range(first_seen[gram], first_seen[gram] + n), *range(i, i + n)):
                marked[j] = True
        else:
            first_seen[gram] = i
    return marked


def highlight_repeats(text: str, *, n: int = 4) -> Markup:
    """HTML of ``text`` (escaped) with every word inside a repeated n-word sequence wrapped in ``<mark>``: a
    greedy loop shows as a block of marked words. Words are whitespace-split."""
    words = text.split()
    marked = repeated_word_mask(words, n=n)
    return Markup(
        " ".join(f"<mark>{escape(w)}</mark>" if m else escape(w) for w, m in zip(words, marked, strict=True))
    )


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_SAFE_URL = re.compile(r"^(https?://|[^:]*$)")  # web links or relative paths; no javascript: and the like


def _inline_html(escaped: str) -> str:
    """Inline Markdown on already escaped text: links, ``code``, **bold**, *emphasis*."""

    def link(match: re.Match) -> str:
        label, url = match.group(1), match.group(2)
        return f'<a href="{url}">{label}</a>' if _SAFE_URL.match(url) else match.group(0)

    escaped = _LINK.sub(link, escaped)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", escaped)


def markdown_html(markdown: str) -> Markup:
    """The small Markdown subset of ``Text`` as HTML: paragraphs, ``- `` lists, inline marks; everything escaped
    before any tag is added."""
    out = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines and all(line.startswith("- ") for line in lines):
            items = "".join(f"<li>{_inline_html(escape(line[2:]))}</li>" for line in lines)
            out.append(f"<ul>{items}</ul>")
        elif lines:
            out.append(f"<p>{_inline_html(escape(' '.join(lines)))}</p>")
    return Markup("".join(out))


def markdown_escape(text: str) -> str:
    """Text for a Markdown file: raw HTML in it would be live in most Markdown viewers, so every ``<`` becomes
    ``&lt;`` (displayed as "<"); without it no tag can open."""
    return str(text).replace("<", "&lt;")


def markdown_cell(text: str) -> str:
    """A table cell for Markdown: escaped, ``|`` escaped, on one line."""
    return " ".join(markdown_escape(text).replace("|", "\\|").split())


def _cell_markdown(cell, table_fmt: str) -> str:
    value, ci, note = cell_parts(cell, table_fmt)
    return markdown_cell(" ".join(part for part in (value, ci, f"({note})" if note else "") if part))


def _cell_html(cell, table_fmt: str) -> Markup:
    value, ci, note = cell_parts(cell, table_fmt)
    html = escape(value)
    if ci:
        html += f' <span class="ci">{escape(ci)}</span>'
    if note:
        html += f' <span class="note">{escape(note)}</span>'
    return Markup(html)


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "plot"


def _blocks(report: Report) -> list[tuple[str, list[tuple[str, object]]]]:
    """(section title, [(kind, block)]) for the templates; unknown block types are refused here."""
    kinds = {Table: "table", Plot: "plot", Samples: "samples", Figure: "figure", Text: "text"}
    sections = []
    for section in report.sections:
        blocks = []
        for block in section.blocks:
            kind = kinds.get(type(block))
            if kind is None:
                raise TypeError(
                    f"section {section.title!r} holds a {type(block).__name__}; a block is a Table, Plot, Samples, "
                    "Figure or Text."
                )
            if kind == "figure" and (Path(block.path).is_absolute() or not _SAFE_URL.match(block.path)):
                raise ValueError(f"figure path {block.path!r} must be relative to the report's directory.")
            blocks.append((kind, block))
        sections.append((section.title, blocks))
    return sections


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("hyperfit.common.report", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        cell_html=_cell_html,
        cell_md=_cell_markdown,
        md=markdown_escape,
        md_cell=markdown_cell,
        md_line=lambda text: " ".join(markdown_escape(text).split()),
        markdown_html=markdown_html,
        highlight=highlight_repeats,
        numeric=is_numeric,
        svg=lambda plot: Markup(plot_svg(plot)),
    )
    return env


def render(
    report: Report, *, plot_dir: str = "plots", stem: str = "report"
) -> tuple[str, str, dict[str, str]]:
    """(Markdown, HTML, {relative path: SVG}) of ``report``; nothing is written."""
    sections = _blocks(report)
    plot_files: dict[str, str] = {}
    plot_paths: dict[int, str] = {}
    for _, blocks in sections:
        for kind, block in blocks:
            if kind == "plot":
                svg = plot_svg(block)
                if svg:
                    name = f"{plot_dir}/{'' if stem == 'report' else stem + '-'}{slug(block.title)}.svg"
                    while name in plot_files:
                        name = name[: -len(".svg")] + "-2.svg"
                    plot_files[name] = svg
                    plot_paths[id(block)] = name
    env = environment()
    context = dict(report=report, sections=sections, plot_paths=plot_paths, id=id)
    # The template's block tags leave runs of blank lines; Markdown needs exactly one between blocks.
    markdown = re.sub(r"\n{3,}", "\n\n", env.get_template("report.md").render(**context)).lstrip()
    html = env.get_template("report.html").render(**context)
    return markdown, html, plot_files


def write_report_files(report: Report, out_dir: str | Path, *, stem: str = "report") -> Path:
    """Write ``out_dir/<stem>.md`` and ``out_dir/<stem>.html`` (and each chart as ``plots/*.svg`` for the
    Markdown) atomically; return the HTML path. Both pages are rendered before anything is written, so a
    failure leaves the earlier report as it was."""
    out_dir = Path(out_dir)
    markdown, html, plot_files = render(report, stem=stem)
    for name, svg in plot_files.items():
        write_text_atomic(out_dir / name, svg + "\n")
    write_text_atomic(out_dir / f"{stem}.md", markdown)
    write_text_atomic(out_dir / f"{stem}.html", html)
    return out_dir / f"{stem}.html"
