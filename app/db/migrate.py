"""Apply the Alembic migrations in ``migrations/`` (``skyphot migrate`` and API start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from app.db.session import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
ADVISORY_LOCK_ID = 0x5C1F07  # serializes concurrent upgrades of one PostgreSQL database


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration pointing at our scripts, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(database_url: str | None = None) -> None:
    """Bring the database to the latest revision; safe to run from several processes."""
    if database_url is None:
        from app.settings import Settings

        database_url = Settings().database_url
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_ID})"))
            command.upgrade(alembic_config(connection), "head")
    finally:
        engine.dispose()
