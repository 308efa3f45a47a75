"""Every number of the earlier reports survives the move to the one renderer.

``tests/fixtures/reports/`` holds finished runs (``summary.json``, ``metrics.jsonl``, the few generation records a
report shows) and the ``report.md`` / ``comparison.md`` that the earlier report code (``hyperfit.common.report``
before it became a package, commit 046d082) wrote from exactly those files: ``tiny-*`` are real runs of the tiny
test models (fit-text, eval, fit-image, each experiment, compare), ``demo-*`` the offline demo's text and image
runs. Each is rendered again through the new report builders, and every number of the old page must appear in the
new one at least as often (the title line, which names the temporary directory, is left out).
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from hyperfit.recipes.compare import write_comparison
from hyperfit.recipes.report import write_run_report

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
RUNS = sorted(p.name for p in FIXTURES.iterdir() if (p / "old_report.md").exists())
COMPARISONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "old_comparison.md").exists())


def numbers(markdown: str) -> Counter:
    body = markdown.split("\n", 1)[1]  # the title names the run's directory, which differs
    return Counter(NUMBER.findall(body))


def assert_every_number_kept(old: str, new: str) -> None:
    missing = numbers(old) - numbers(new)
    assert not missing, f"numbers of the old report missing from the new one: {dict(missing)}"


def test_the_fixtures_cover_every_kind_of_report():
    kinds = {name.split("-")[1] if name.startswith("tiny-exp") else name.split("-", 1)[1] for name in RUNS}
    assert {"text", "image", "eval", "exp"} <= kinds and COMPARISONS


@pytest.mark.parametrize("name", RUNS)
def test_a_run_report_keeps_every_number(name, tmp_path):
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    page = write_run_report(run)
    assert page == run / "report.html" and (run / "report.md").exists()
    assert_every_number_kept((run / "old_report.md").read_text(), (run / "report.md").read_text())


@pytest.mark.parametrize("name", COMPARISONS)
def test_the_comparison_keeps_every_number_and_gains_its_charts(name, tmp_path):
    prefix = name.split("-")[0]  # tiny-compare compares tiny-text with tiny-image
    runs = [tmp_path / f"{prefix}-text", tmp_path / f"{prefix}-image"]
    for run in runs:
        shutil.copytree(FIXTURES / run.name, run)
    page = write_comparison(runs, tmp_path).read_text()
    new = (tmp_path / "comparison.md").read_text()
    assert_every_number_kept((FIXTURES / name / "old_comparison.md").read_text(), new)
    assert page.count("<svg") == 2
