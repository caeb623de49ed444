"""Several fleet workers (issue 17): the login throttle's runs of failed logins in the
database, so every worker counts them together.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", "address"),
    )
    op.create_index("ix_login_failures_last_s", "login_failures", ["last_s"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_last_s", table_name="login_failures")
    op.drop_table("login_failures")
