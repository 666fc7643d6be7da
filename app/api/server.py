"""``skyphot serve``: the API (and, on the embedded default, its worker) under uvicorn."""

from __future__ import annotations

import uvicorn

from app.api.app import create_app
from app.settings import Settings


def serve(host: str, port: int) -> None:
    """Serve until interrupted; migrations run at start-up."""
    settings = Settings()
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())
