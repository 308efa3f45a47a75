"""The one renderer: report data -> Markdown + HTML (escaped), SVG charts with axes and error bars, atomic writes."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from hyperfit.common.report import (
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
    highlight_repeats,
    plot_svg,
    render,
    write_report_files,
)
from hyperfit.common.report.plot import nice_ticks

EVIL = '<script>alert("x")</script>'
SVG = "{http://www.w3.org/2000/svg}"


def evil_report() -> Report:
    """A report with the same hostile string in every text field the data API has."""
    return Report(
        title=EVIL,
        subtitle=EVIL,
        sections=[
            Section(
                EVIL,
                [
                    Table(
                        [EVIL, "value"],
                        [[EVIL, 1.0], ["cell", Cell(0.5, ci=(0.4, 0.6), note=EVIL)], [Cell(EVIL), None]],
                        caption=EVIL,
                    ),
                    Plot(EVIL, [Series(EVIL, [0, 1], [0.1, 0.2])], x_label=EVIL, y_label=EVIL),
                    Plot(
                        EVIL, [Series(EVIL, [EVIL, "b"], [0.1, 0.2])], kind="bar", references=[(EVIL, 0.15)]
                    ),
                    Samples([Sample(EVIL, {EVIL: EVIL + " " + EVIL}, prompt=EVIL)], caption=EVIL),
                    Figure('grid.png" onerror="alert(1)', caption=EVIL),
                    Text(f"{EVIL}\n\n- {EVIL}\n- [{EVIL}](x.html)"),
                ],
            )
        ],
    )


class ElementCounter(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


def test_no_text_field_can_inject_markup_into_either_page():
    markdown, html, plots = render(evil_report())
    parsed = ElementCounter()
    parsed.feed(html)
    assert "script" not in parsed.tags and "onerror" not in parsed.attributes
    assert "<script" not in html and "<script" not in markdown
    assert "&lt;script&gt;" in html and "&lt;script>" in markdown  # shown, as text
    for svg in plots.values():
        assert "<script" not in svg
        ET.fromstring(svg)  # well-formed: every label was escaped


def test_both_pages_are_written_with_the_same_numbers(tmp_path):
    report = Report(
        "run",
        [
            Section(
                "before and after",
                [
                    Table(
                        ["metric", "before", "after"],
                        [
                            ["TTR", 0.398, 0.62],
                            ["perplexity", Cell(32.54, fmt="{:.1f}"), Cell(122.2, fmt="{:.1f}")],
                        ],
                    ),
                    Plot("TTR per epoch", [Series("TTR", [0, 8, 16], [0.398, 0.5, 0.62])], x_label="epoch"),
                ],
            )
        ],
    )
    html_path = write_report_files(report, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    html = html_path.read_text()
    assert html_path == tmp_path / "report.html"
    assert "| TTR | 0.398 | 0.620 |" in markdown and "| perplexity | 32.5 | 122.2 |" in markdown
    for number in ("0.398", "0.620", "32.5", "122.2"):
        assert f">{number}<" in html
    assert "![TTR per epoch](plots/ttr-per-epoch.svg)" in markdown
    assert (tmp_path / "plots" / "ttr-per-epoch.svg").read_text().startswith("<svg")
    assert html.count("<svg") == 1


def test_a_failed_render_leaves_the_earlier_report_untouched(tmp_path):
    write_report_files(Report("first", [Section("s", [Text("kept")])]), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    bad = Report("second", [Section("s", [Text("new"), "not a block"])])
    with pytest.raises(TypeError, match="a block is a Table, Plot, Samples, Figure or Text"):
        write_report_files(bad, tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # both pages as they were, and no temporary file left behind


def test_cells_format_values_intervals_and_missing_values():
    table = Table(
        ["a", "b", "c", "d", "e"],
        [
            [
                1.23456,
                7,
                None,
                float("nan"),
                Cell(0.5, ci=(0.41, 0.6), fmt="{:.2f}", note="interval includes 0"),
            ]
        ],
        fmt="{:.2f}",
    )
    markdown, html, _ = render(Report("t", [Section("s", [table])]))
    assert "| 1.23 | 7 | – | – | 0.50 [0.41, 0.60] (interval includes 0) |" in markdown
    assert (
        '<span class="ci">[0.41, 0.60]</span>' in html
        and '<span class="note">interval includes 0</span>' in html
    )


def _error_bars(svg: str) -> list[tuple[float, float, float]]:
    """(x, y_top, y_bottom) of the vertical line of every error bar."""
    bars = []
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.get("class") == "errorbar":
            line = group.find(f"{SVG}line")
            y1, y2 = float(line.get("y1")), float(line.get("y2"))
            bars.append((float(line.get("x1")), min(y1, y2), max(y1, y2)))
    return bars


def test_line_error_bars_span_each_interval_around_its_point():
    plot = Plot(
        "ttr", [Series("a", [1, 2, 3], [0.5, 0.6, 0.7], low=[0.45, 0.5, 0.69], high=[0.55, 0.7, 0.71])]
    )
    svg = plot_svg(plot)
    bars = _error_bars(svg)
    points = [(float(c.get("cx")), float(c.get("cy"))) for c in ET.fromstring(svg).iter(f"{SVG}circle")]
    assert len(bars) == 3 and len(points) == 3
    heights = []
    for (bx, top, bottom), (px, py) in zip(bars, points, strict=True):
        assert bx == pytest.approx(px) and top < py < bottom
        heights.append(bottom - top)
    # Interval widths 0.1, 0.2, 0.02 on one linear axis: drawn heights in the same proportions.
    assert heights[1] / heights[0] == pytest.approx(2, rel=0.05)
    assert heights[2] / heights[0] == pytest.approx(0.2, rel=0.1)


def test_bar_chart_draws_one_bar_per_value_with_its_error_bar_and_a_legend():
    plot = Plot(
        "ranks",
        [
            Series("original", ["1", "2-5", "6+"], [0.3, 0.4, 0.3]),
            Series(
                "hyperfitted", ["1", "2-5", "6+"], [0.2, 0.5, 0.3], low=[0.1, 0.4, 0.2], high=[0.3, 0.6, 0.4]
            ),
        ],
        kind="bar",
        y_label="share",
    )
    root = ET.fromstring(plot_svg(plot))
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 6
    heights = [float(r.get("height")) for r in bars]
    assert heights[4] / heights[0] == pytest.approx(0.5 / 0.3, rel=0.02)
    assert len(_error_bars(plot_svg(plot))) == 3
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert {"original", "hyperfitted", "1", "2-5", "6+", "share", "ranks"} <= set(labels)


def test_axes_carry_round_ticks_and_log_x_puts_data_points_on_ticks():
    ticks = nice_ticks(0.347, 0.662)
    assert ticks[0] <= 0.347 and ticks[-1] >= 0.662 and 4 <= len(ticks) <= 8
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (0.05, 0.1)
    svg = plot_svg(Plot("n", [Series("a", [8, 16, 32], [0.6, 0.65, 0.66])], log_x=True, x_label="N"))
    labels = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert {"8", "16", "32", "N"} <= set(labels)
    xs = sorted(float(c.get("cx")) for c in ET.fromstring(svg).iter(f"{SVG}circle"))
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])  # equal ratios, equal distances


def test_missing_values_break_a_line_and_an_empty_plot_draws_nothing():
    svg = plot_svg(Plot("gap", [Series("a", [0, 1, 2, 3], [0.1, math.nan, 0.3, 0.4])]))
    assert len(list(ET.fromstring(svg).iter(f"{SVG}circle"))) == 3
    assert len(list(ET.fromstring(svg).iter(f"{SVG}polyline"))) == 1  # only 2-3 are joined
    assert plot_svg(Plot("empty", [Series("a", [0, 1], [math.nan, math.nan])])) == ""
    markdown, html, plots = render(Report("t", [Section("s", [Plot("empty", [Series("a", [], [])])])]))
    assert plots == {} and "<svg" not in html and "![" not in markdown


def test_highlight_repeats_marks_both_occurrences_of_a_repeated_4gram():
    marked = highlight_repeats("a b c d x a b c d <y>")
    assert marked.count("<mark>") == 8 and "&lt;y&gt;" in marked
    assert "<mark>" not in highlight_repeats("a b c d e f g h")


def test_text_links_are_kept_only_when_relative_or_web():
    _, html, _ = render(
        Report("t", [Section("s", [Text("[ok](runs/a/report.html) [no](javascript:alert(1))")])])
    )
    assert '<a href="runs/a/report.html">ok</a>' in html and 'href="javascript' not in html


def test_a_figure_must_live_beside_the_report():
    with pytest.raises(ValueError, match="relative to the report's directory"):
        render(Report("t", [Section("s", [Figure("/etc/passwd")])]))
