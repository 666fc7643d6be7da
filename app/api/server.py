"""``skyphot serve``: the API (and, on the embedded default, its worker) under uvicorn."""

from __future__ import annotations

import uvicorn

from app.api.app import create_app
from app.api.processes import serve_processes
from app.settings import Settings


def serve(host: str, port: int, processes: int | None = None) -> None:
    """Serve until interrupted, on ``processes`` processes (default: the setting);
    migrations run at start-up."""
    settings = Settings()
    processes = processes or settings.api_processes
    if processes > 1:
        serve_processes(settings, host, port, processes)
        return
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower(),
                access_log=False)  # the app logs each request itself, with its id
