"""jobs.request_key: a job that an identical request may be answered by

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_key", sa.String(length=64), nullable=True))
    op.create_index("ix_jobs_owner_request_key", "jobs", ["owner", "request_key"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_request_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_key")
