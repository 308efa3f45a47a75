"""The annotation server (Starlette + jinja2, autoescaped): instructions, one blinded comparison at a time,
votes by click or keys 1/2/3, "continue later", and an admin page behind its own token.

Every page is reached through a private link carrying the annotator's token; a missing or wrong token gets 403
and writes nothing. The page never names a system. The same endpoints answer JSON (``Accept:
application/json`` or a JSON body), which ``hyperfit study simulate`` uses.
"""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from hyperfit.study import store

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # No inline script or style at all: even a text that escaped escaping could not run.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never send it to another site
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
DEFAULT_INSTRUCTIONS = """You will read the beginning of a text (the context) and two continuations of it, shown side by side.
Read the context and both continuations, then say which continuation is better: more fluent, coherent, interesting and a better fit to the context. If neither is better, choose "Equally good".
The continuations are cut to the same length, so both may stop mid-sentence; do not judge them by how they end.
Some comparisons have an obvious answer: they check that everyone reads carefully.
Choose by clicking, or with the keys 1 (left is better), 2 (equally good) and 3 (right is better).
Your answer is saved at once. You can stop at any time ("Continue later") and open this same link again to continue exactly where you stopped."""


def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every page is HTML: model text is always escaped
        undefined=jinja2.StrictUndefined,
    )


def build_app(db_path: str | Path) -> Starlette:
    """The ASGI app serving the study in ``db_path`` (one SQLite connection per worker thread)."""
    db_path = Path(db_path)
    store.connect(db_path).close()  # refuse a missing file or another schema version before serving
    local = threading.local()
    env = _templates()

    def conn():
        if getattr(local, "conn", None) is None:
            local.conn = store.connect(db_path)
        return local.conn

    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(
            env.get_template(name).render(**context), status_code=status, headers=SECURITY_HEADERS
        )

    def forbidden(request: Request, message: str) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": message}, status_code=403, headers=SECURITY_HEADERS)
        return page("error.html", 403, title="Not allowed", message=message)

    def annotator(request: Request):
        return store.annotator_for_token(conn(), request.path_params["token"])

    def instructions(request: Request) -> Response:
        who = annotator(request)
        if who is None:
            return forbidden(request, "This link is not valid. Use the link you were sent.")
        text = store.get_setting(conn(), "instructions") or DEFAULT_INSTRUCTIONS
        return page(
            "instructions.html",
            token=request.path_params["token"],
            paragraphs=[p for p in text.splitlines() if p.strip()],
            progress=store.progress_of(conn(), who["id"]),
        )

    def item(request: Request) -> Response:
        who = annotator(request)
        if who is None:
            return forbidden(request, "This link is not valid. Use the link you were sent.")
        current = store.next_assignment(conn(), who["id"])
        progress = store.progress_of(conn(), who["id"])
        if _wants_json(request):
            return JSONResponse({"item": current, "progress": progress}, headers=SECURITY_HEADERS)
        token = request.path_params["token"]
        if current is None:
            return page("done.html", token=token, progress=progress)
        return page("item.html", token=token, item=current, progress=progress, submission_id=uuid.uuid4().hex)

    async def vote(request: Request) -> Response:
        # SQLite work (and its fsync) runs in the worker threads, never on the event loop.
        who = await run_in_threadpool(annotator, request)
        if who is None:
            return forbidden(request, "This link is not valid. Use the link you were sent.")
        as_json = request.headers.get("content-type", "").startswith("application/json")
        try:
            fields = dict(await request.json()) if as_json else dict(await request.form())
            assignment = int(fields["assignment"])
            choice = str(fields["choice"])
            submission_id = str(fields["submission_id"])[:100]
            client_ms = int(fields["client_ms"]) if str(fields.get("client_ms", "")).strip() else None
            if choice not in store.CHOICES or not submission_id:
                raise ValueError(choice)
        except (KeyError, ValueError, TypeError):
            message = "A vote needs assignment, choice (left, equal or right) and submission_id."
            if as_json:
                return JSONResponse({"error": message}, status_code=400, headers=SECURITY_HEADERS)
            return page("error.html", 400, title="Bad request", message=message)
        try:
            stored, replayed = await run_in_threadpool(
                lambda: store.record_vote(
                    conn(), who["id"], assignment, choice, submission_id=submission_id, client_ms=client_ms
                )
            )
        except store.NotServed:
            return forbidden(request, "This item was not given to you.")
        except store.VoteConflict:
            return JSONResponse(
                {"error": "submission_id already used for another item"},
                status_code=409,
                headers=SECURITY_HEADERS,
            )
        if as_json:
            return JSONResponse(
                {
                    "assignment": stored["assignment_id"],
                    "choice": stored["choice"],
                    "submission_id": stored["submission_id"],
                    "replayed": replayed,
                },
                headers=SECURITY_HEADERS,
            )
        # Post/redirect/get: reloading the next page can never resubmit this vote.
        return RedirectResponse(
            f"/a/{request.path_params['token']}/item", status_code=303, headers=SECURITY_HEADERS
        )

    def later(request: Request) -> Response:
        who = annotator(request)
        if who is None:
            return forbidden(request, "This link is not valid. Use the link you were sent.")
        return page(
            "later.html", token=request.path_params["token"], progress=store.progress_of(conn(), who["id"])
        )

    def admin(request: Request) -> Response:
        if not store.is_admin(conn(), request.path_params["token"]):
            return forbidden(request, "This admin link is not valid.")
        rows = store.annotator_progress(conn())
        for row in rows:
            row["accuracy"] = row["checks_passed"] / row["checks"] if row["checks"] else None
            row["last"] = _when(row["last_vote"])
        cfg = store.settings(conn())
        complete = (
            conn()
            .execute(
                "SELECT COUNT(*) FROM (SELECT item_id FROM votes v JOIN items i ON i.id = v.item_id "
                "WHERE i.kind != 'check' GROUP BY item_id HAVING COUNT(*) >= ?)",
                (cfg["annotations"],),
            )
            .fetchone()[0]
        )
        return page(
            "admin.html",
            token=request.path_params["token"],
            rows=rows,
            counts=store.counts(conn()),
            complete=complete,
            annotations=cfg["annotations"],
        )

    def admin_votes(request: Request) -> Response:
        if not store.is_admin(conn(), request.path_params["token"]):
            return forbidden(request, "This admin link is not valid.")
        return Response(
            votes_csv(conn()),
            media_type="text/csv",
            headers={**SECURITY_HEADERS, "Content-Disposition": 'attachment; filename="votes.csv"'},
        )

    def root(request: Request) -> Response:
        return page("error.html", 404, title="Study", message="Open the private link you were sent.")

    routes = [
        Route("/", root),
        Route("/a/{token}", instructions),
        Route("/a/{token}/item", item),
        Route("/a/{token}/vote", vote, methods=["POST"]),
        Route("/a/{token}/later", later),
        Route("/admin/{token}", admin),
        Route("/admin/{token}/votes.csv", admin_votes),
    ]
    app = Starlette(routes=routes)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def _wants_json(request: Request) -> bool:
    """A JSON client (``simulate``, scripts): it asked for JSON or sent JSON."""
    return "application/json" in request.headers.get("accept", "") or request.headers.get(
        "content-type", ""
    ).startswith("application/json")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "–"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def votes_csv(conn) -> str:
    """Every vote, de-blinded, one row each (the admin download)."""
    rows = store.vote_rows(conn)
    out = io.StringIO()
    columns = [
        "vote_id",
        "annotator",
        "annotator_source",
        "item_id",
        "kind",
        "domain",
        "length",
        "prompt_id",
        "system_a",
        "system_b",
        "left_system",
        "right_system",
        "choice",
        "winner",
        "expected",
        "client_ms",
        "server_ms",
        "submission_id",
        "created_at",
    ]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
