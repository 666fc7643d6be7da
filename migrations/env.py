"""Alembic environment: runs on a connection handed in by app.db.migrate, or on the URL
from ``SKYPHOT_DATABASE_URL`` when the ``alembic`` command is used directly."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import app.db.models  # noqa: F401  (registers the tables on Base.metadata)
from app.db.base import Base
from app.db.session import make_engine


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    from app.settings import Settings

    engine = make_engine(Settings().database_url)
    try:
        with engine.begin() as connection:
            _configure_and_run(connection)
    finally:
        engine.dispose()


run_migrations_online()
