"""Scale-out: sequence bookkeeping in the database, time-partitioned samples (issue 17).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op  # noqa: F401

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass  # nothing yet


def downgrade() -> None:
    pass
