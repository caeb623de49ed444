"""Signed releases and each gateway's OTA status (issue 15).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

#: fleet.models.BigId: BIGINT on PostgreSQL, SQLite's autoincrementing ROWID.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("platform", sa.String(length=64), nullable=False),
        sa.Column("python", sa.String(length=8), nullable=False),
        sa.Column("min_version", sa.String(length=32), nullable=False),
        sa.Column("firmware", sa.String(length=16), nullable=True),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_index(
        "ix_releases_version_platform", "releases", ["version", "platform"], unique=True
    )
    op.create_table(
        "ota_commands",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ota_commands_gateway", "ota_commands", ["gateway_id", "id"])
    op.create_index("ix_ota_commands_token_digest", "ota_commands", ["token_digest"])
    op.create_table(
        "gateway_ota",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.Column("running_version", sa.String(length=32), nullable=False),
        sa.Column("running_slot", sa.String(length=8), nullable=False),
        sa.Column("running_firmware", sa.String(length=16), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id"),
    )


def downgrade() -> None:
    op.drop_table("gateway_ota")
    op.drop_index("ix_ota_commands_token_digest", table_name="ota_commands")
    op.drop_index("ix_ota_commands_gateway", table_name="ota_commands")
    op.drop_table("ota_commands")
    op.drop_index("ix_releases_version_platform", table_name="releases")
    op.drop_table("releases")
