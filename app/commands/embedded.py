"""The embedded default server (SQLite, in-process worker, local storage) run in a thread.

For commands that need a server and were not given one: ``skyphot demo`` without ``--url``.
Its data live in a directory of the caller's choosing, so a throw-away run leaves nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from app.api.app import create_app
from app.settings import Settings

START_TIMEOUT = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def embedded_server(data_dir: Path, host: str = "127.0.0.1", **overrides: Any
                    ) -> Iterator[str]:
    """Serve the embedded default on a free port with its data in ``data_dir``; yield its URL.

    ``overrides`` are settings (e.g. limits) for this server only.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(**{"database_url": f"sqlite:///{data_dir / 'skyphot.sqlite3'}",
                           "broker_url": "memory://", "storage_url": str(data_dir / "storage"),
                           "log_level": "WARNING", **overrides})
    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="skyphot-embedded", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the embedded server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
