"""forced sources: the rows of forced jobs

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "forced_sources",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("row", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("exposure_id", sa.String(length=32), nullable=False),
        sa.Column("position_kind", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=True),
        sa.Column("coord_ra", sa.Float(), nullable=True),
        sa.Column("coord_dec", sa.Float(), nullable=True),
        sa.Column("coord_cx", sa.Float(), nullable=True),
        sa.Column("coord_cy", sa.Float(), nullable=True),
        sa.Column("coord_cz", sa.Float(), nullable=True),
        sa.Column("x", sa.Float(), nullable=True),
        sa.Column("y", sa.Float(), nullable=True),
        sa.Column("psf_inst_flux", sa.Float(), nullable=True),
        sa.Column("psf_inst_flux_err", sa.Float(), nullable=True),
        sa.Column("psf_flux", sa.Float(), nullable=True),
        sa.Column("psf_flux_err", sa.Float(), nullable=True),
        sa.Column("psf_snr", sa.Float(), nullable=True),
        sa.Column("flags", sa.BigInteger(), nullable=False),
        sa.Column("tags", JSON_DOCUMENT, nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_forced_sources_job_id_jobs"),
            ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "row", name=op.f("pk_forced_sources")),
    )
    op.create_index("ix_forced_sources_job_position", "forced_sources", ["job_id", "position"])
    op.create_index("ix_forced_sources_job_exposure", "forced_sources",
                    ["job_id", "exposure_id"])


def downgrade() -> None:
    op.drop_index("ix_forced_sources_job_exposure", table_name="forced_sources")
    op.drop_index("ix_forced_sources_job_position", table_name="forced_sources")
    op.drop_table("forced_sources")
