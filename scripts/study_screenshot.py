"""Screenshot of the annotation page of a study (the README's docs/study-page.png), in Debian's chromium.

Copies the database (the study itself is not touched), empties the copy's votes, adds one annotator, opens its
first comparison and saves a PNG.

    python scripts/study_screenshot.py STUDY.db docs/study-page.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from hyperfit.study import store
from hyperfit.study.server import background_server

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main(db: str, out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "study.db"
        source = store.connect(db)
        source.execute(f"VACUUM INTO '{copy}'")  # a consistent copy, WAL included
        source.close()
        conn = store.connect(copy)
        with store.write(conn):  # the copy starts empty, as the first annotator sees the study
            conn.execute("DELETE FROM votes")
            conn.execute("DELETE FROM assignments")
        [(_, token)] = store.add_annotators(conn, 1, labels=["screenshot"])
        conn.close()
        with background_server(copy) as url, sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(Path(tmp) / "profile"),
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                headless=True,
                args=ARGS,
                viewport={"width": 1100, "height": 620},
            )
            page = context.new_page()
            page.goto(f"{url}/a/{token}/item")
            page.screenshot(path=out)
            context.close()
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
