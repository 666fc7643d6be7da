"""What a process running the service holds: settings, database, storage, the exposures
kept in memory, shutdown flag."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import make_engine, make_sessionmaker
from app.settings import Settings
from app.storage.blobs import BlobStore, open_store
from app.storage.exposure_cache import ExposureCache


@dataclass
class Runtime:
    """Shared by the API and the job runner of one process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    exposures: ExposureCache = field(default_factory=ExposureCache)
    shutdown: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            store=open_store(settings.storage_url),
        )

    def close(self) -> None:
        self.shutdown.set()
        self.engine.dispose()
