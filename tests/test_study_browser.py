"""The annotation page in a real browser: Debian's chromium driven by Playwright. Skipped (with the reason) when
chromium or Playwright is missing; CI installs chromium first (.ci/run)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from hyperfit.study import store
from hyperfit.study.items import StudyConfig, build_study
from hyperfit.study.server import background_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.browser

# What these machines need: no sandbox as root, and nothing that reaches the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture()
def browser_page(tmp_path):
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip extra 'study')"
    )
    if not shutil.which(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run browser tests"
        )
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data directory
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 760},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_an_annotator_reads_votes_by_click_and_key_reloads_and_continues(
    browser_page, study_fit_run, tmp_path
):
    page = browser_page
    db = tmp_path / "study.db"
    build_study(StudyConfig(sources=[str(study_fit_run)], lengths=[24], check_share=0.0), db)
    conn = store.connect(db)
    [(annotator_id, token)] = store.add_annotators(conn, 1)
    # Model text is arbitrary: markup in it must be shown, never run.
    raw = sqlite3.connect(db)
    raw.execute(
        "UPDATE texts SET text = '<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> ' || text"
    )
    raw.commit()
    raw.close()

    def shown() -> dict:
        return {
            "assignment": int(page.get_attribute("input[name=assignment]", "value")),
            "left": page.inner_text("#left"),
            "progress": page.inner_text("#progress"),
        }

    def vote(action) -> dict:
        before = shown()
        with page.expect_navigation():
            action()
        return before

    with background_server(db) as url:
        page.goto(f"{url}/a/{token}")
        assert page.inner_text("h1") == "Which continuation is better?"
        assert "keys 1 (left is better), 2 (equally good) and 3 (right is better)" in page.inner_text(
            "#instructions"
        )
        with page.expect_navigation():
            page.click("#start")
        made = []
        first = vote(lambda: page.click("#choice-left"))
        made.append((first, "left"))
        assert first["progress"].startswith("1 / ")
        assert first["left"].startswith("<script>window.pwned = 1</script>")  # shown as text
        made.append((vote(lambda: page.keyboard.press("2")), "equal"))
        made.append((vote(lambda: page.dblclick("#choice-right")), "right"))  # a double click is one vote
        # Half-way: reload, and "continue later" then reopen the link: the same item comes back.
        before = shown()
        page.reload()
        assert shown() == before
        page.click("#later")
        assert "Open the same link again" in page.inner_text("#saved")
        page.goto(f"{url}/a/{token}")
        assert page.inner_text("#start") == "Continue"
        with page.expect_navigation():
            page.click("#start")
        assert shown() == before
        made.append((vote(lambda: page.keyboard.press("3")), "right"))
        made.append((vote(lambda: page.click("#choice-equal")), "equal"))
        made.append((vote(lambda: page.keyboard.press("1")), "left"))
        assert page.inner_text("#progress").startswith("7 / ")
        assert page.evaluate("window.pwned") is None  # the injected markup never ran
        page.screenshot(path=str(tmp_path / "study-page.png"), full_page=True)

    assert (tmp_path / "study-page.png").stat().st_size > 10_000
    votes = conn.execute("SELECT * FROM votes WHERE annotator_id = ? ORDER BY id", (annotator_id,)).fetchall()
    assert [(v["assignment_id"], v["choice"]) for v in votes] == [(m["assignment"], c) for m, c in made]
    assert all(v["client_ms"] is not None and v["client_ms"] >= 0 for v in votes)
    assert len({v["submission_id"] for v in votes}) == len(votes)
