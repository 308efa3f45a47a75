"""Running the annotation app under uvicorn: in the foreground (``hyperfit study serve``) or in a background
thread on a free local port (``simulate`` and the tests). Either way one process at a time serves a database."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hyperfit.common.runs import HyperfitError
from hyperfit.study import store
from hyperfit.study.app import build_app

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure(host: str, port: int) -> str:
    """What ``--public`` exposes, said before serving."""
    return (
        f"--public: serving on {host}:{port}, reachable by every machine that can reach this one. Anyone with an "
        "annotator link can read and vote on that annotator's items, and anyone with the admin link can read "
        "every vote. Traffic is plain HTTP, so links travel unencrypted: put the server behind an HTTPS reverse "
        "proxy for real annotators."
    )


def _uvicorn_config(db_path: str | Path, host: str, port: int):
    import uvicorn

    # No access log: every URL carries a private token.
    return uvicorn.Config(build_app(db_path), host=host, port=port, access_log=False, log_level="warning")


def serve(db_path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, public: bool = False) -> None:
    """Serve until interrupted. A host other than this machine needs ``public=True``."""
    import uvicorn

    if host not in LOCAL_HOSTS and not public:
        raise HyperfitError(
            f"--host {host} would expose the study beyond this machine; pass --public to confirm (it prints what "
            "that exposes), or leave --host at 127.0.0.1."
        )
    store.connect(db_path).close()
    with store.serve_lock(db_path):
        config = _uvicorn_config(db_path, host, port)
        if public:
            print(exposure(host, port))
        print(f"serving {db_path} on http://{host}:{port}/ (Ctrl-C stops; votes are saved as they come)")
        uvicorn.Server(config).run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def background_server(db_path: str | Path, *, port: int | None = None) -> Iterator[str]:
    """Serve ``db_path`` on 127.0.0.1 from a thread (holding the serve lock); yield its base URL."""
    import uvicorn

    store.connect(db_path).close()
    with store.serve_lock(db_path):
        for _ in range(3):  # a free port can be taken between choosing and binding it
            server = uvicorn.Server(_uvicorn_config(db_path, "127.0.0.1", port or free_port()))
            thread = threading.Thread(target=server.run, daemon=True)  # uvicorn leaves signals alone here
            thread.start()
            deadline = time.monotonic() + 30
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if server.started:
                break
            thread.join(timeout=5)
        else:
            raise HyperfitError(
                "the study server did not start on 127.0.0.1; check that local ports are free."
            )
        try:
            yield f"http://127.0.0.1:{server.config.port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
