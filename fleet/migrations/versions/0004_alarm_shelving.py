"""Alarm shelving and grouping by cause (issue 12, fleet side): a shelf takes one alarm key of
a gateway off the alarm list until a set time, with who did it and why.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "alarm_shelves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("shelved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shelved_by", sa.String(length=64), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("unshelved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unshelved_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_alarm_shelves_key", "alarm_shelves", ["gateway_id", "key", "until"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_alarm_shelves_key", table_name="alarm_shelves")
    op.drop_table("alarm_shelves")
