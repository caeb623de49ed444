"""Configuration versions, desired and reported per gateway (issue 14): every version of each
gateway's site document, what each gateway should run and reports it runs, and gateway tags
for bulk changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "config_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.String(length=500), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.Column("validation", sa.JSON(), nullable=False),
        sa.Column("safety_change", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gateway_id", "number"),
    )
    op.create_table(
        "gateway_configs",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("desired", sa.Integer(), nullable=True),
        sa.Column("sent", sa.Integer(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_version", sa.Integer(), nullable=True),
        sa.Column("reported_sha256", sa.String(length=64), nullable=False),
        sa.Column("reported_status", sa.String(length=16), nullable=False),
        sa.Column("reported_about", sa.Integer(), nullable=True),
        sa.Column("reported_messages", sa.JSON(), nullable=False),
        sa.Column("reported_reason", sa.Text(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id"),
    )
    op.create_table(
        "gateway_tags",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=48), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id", "tag"),
    )


def downgrade() -> None:
    op.drop_table("gateway_tags")
    op.drop_table("gateway_configs")
    op.drop_table("config_versions")
