"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db.base import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "exposures",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("metadata", JSON_DOCUMENT, nullable=False),
        sa.Column("ra_min", sa.Float(), nullable=True),
        sa.Column("ra_max", sa.Float(), nullable=True),
        sa.Column("dec_min", sa.Float(), nullable=True),
        sa.Column("dec_max", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exposures")),
        sa.UniqueConstraint("owner", "sha256", name="uq_exposures_owner_sha256"),
    )
    op.create_index("ix_exposures_owner_created", "exposures", ["owner", "created_at"])
    op.create_index("ix_exposures_sky", "exposures", ["dec_min", "dec_max", "ra_min", "ra_max"])
    op.create_index(op.f("ix_exposures_storage_key"), "exposures", ["storage_key"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("exposure_id", sa.String(length=32), nullable=True),
        sa.Column("parameters", JSON_DOCUMENT, nullable=False),
        sa.Column(
            "phase",
            sa.Enum(
                "PENDING",
                "QUEUED",
                "EXECUTING",
                "COMPLETED",
                "ERROR",
                "ABORTED",
                name="jobphase",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("summary", JSON_DOCUMENT, nullable=True),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name=op.f("fk_jobs_exposure_id_exposures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_exposure_id"), "jobs", ["exposure_id"])
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])
    op.create_index("ix_jobs_phase_heartbeat", "jobs", ["phase", "heartbeat_at"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("media_type", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
    )
    op.create_table(
        "sources",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("parent", sa.BigInteger(), nullable=False),
        sa.Column("deblend_nchild", sa.Integer(), nullable=False),
        sa.Column("x", sa.Float(), nullable=True),
        sa.Column("y", sa.Float(), nullable=True),
        sa.Column("coord_ra", sa.Float(), nullable=True),
        sa.Column("coord_dec", sa.Float(), nullable=True),
        sa.Column("coord_cx", sa.Float(), nullable=True),
        sa.Column("coord_cy", sa.Float(), nullable=True),
        sa.Column("coord_cz", sa.Float(), nullable=True),
        sa.Column("psf_inst_flux", sa.Float(), nullable=True),
        sa.Column("psf_inst_flux_err", sa.Float(), nullable=True),
        sa.Column("psf_flux", sa.Float(), nullable=True),
        sa.Column("psf_flux_err", sa.Float(), nullable=True),
        sa.Column("ap12_inst_flux", sa.Float(), nullable=True),
        sa.Column("ap12_inst_flux_err", sa.Float(), nullable=True),
        sa.Column("shape_xx", sa.Float(), nullable=True),
        sa.Column("shape_yy", sa.Float(), nullable=True),
        sa.Column("shape_xy", sa.Float(), nullable=True),
        sa.Column("row", JSON_DOCUMENT, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_sources_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "id", name=op.f("pk_sources")),
    )
    op.create_index("ix_sources_job_coord", "sources", ["job_id", "coord_ra", "coord_dec"])
    op.create_index("ix_sources_job_parent", "sources", ["job_id", "parent"])

    op.create_table(
        "source_flags",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("flag", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id", "source_id"],
            ["sources.job_id", "sources.id"],
            name=op.f("fk_source_flags_job_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "source_id", "flag", name=op.f("pk_source_flags")),
    )
    op.create_index("ix_source_flags_job_flag", "source_flags", ["job_id", "flag"])


def downgrade() -> None:
    op.drop_index("ix_source_flags_job_flag", table_name="source_flags")

    op.drop_table("source_flags")
    op.drop_index("ix_sources_job_parent", table_name="sources")
    op.drop_index("ix_sources_job_coord", table_name="sources")

    op.drop_table("sources")
    op.drop_table("artifacts")
    op.drop_index("ix_jobs_phase_heartbeat", table_name="jobs")
    op.drop_index("ix_jobs_owner_created", table_name="jobs")
    op.drop_index(op.f("ix_jobs_exposure_id"), table_name="jobs")

    op.drop_table("jobs")
    op.drop_index(op.f("ix_exposures_storage_key"), table_name="exposures")
    op.drop_index("ix_exposures_sky", table_name="exposures")
    op.drop_index("ix_exposures_owner_created", table_name="exposures")

    op.drop_table("exposures")
