"""End-to-end delivery and ingest hardening (issue 11): gap repair, rejection reasons.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op  # noqa: F401

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass  # nothing yet


def downgrade() -> None:
    pass
