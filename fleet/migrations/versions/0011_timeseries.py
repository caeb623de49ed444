"""A time-series layout (issue 17): samples partitioned by day on PostgreSQL, per-minute and
per-hour rollups, and how far the rollups have read.

On PostgreSQL ``samples`` becomes a table partitioned by RANGE (at) whose primary key is
(id, at), with its existing rows in the default partition ``samples_by_day.fallback`` (the
fleet's job then keeps day partitions ahead: fleet.timeseries.partitions). The id sequence
carries on. SQLite keeps ``samples`` as it is.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = "id, device_id, point, at, value, num, quality"


def _table(name: str, key: str) -> str:
    return f"""
        CREATE TABLE {name} (
            id BIGINT NOT NULL DEFAULT nextval('samples_id_seq'),
            device_id INTEGER NOT NULL,
            point VARCHAR(64) NOT NULL,
            at TIMESTAMP WITH TIME ZONE NOT NULL,
            value JSON,
            num FLOAT,
            quality VARCHAR(8) NOT NULL,
            CONSTRAINT {name}_pkey PRIMARY KEY ({key}),
            CONSTRAINT {name}_device_id_fkey FOREIGN KEY (device_id)
                REFERENCES devices (id) ON DELETE CASCADE
        )"""


def _rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("point", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        # a plot of 30 days reads the index alone on PostgreSQL (fleet.timeseries.tables)
        sa.PrimaryKeyConstraint(
            "device_id", "point", "at", postgresql_include=["min", "max", "sum", "count"]
        ),
    )
    op.create_index(f"ix_{name}_at", name, ["at"])


def upgrade() -> None:
    _rollup("rollups_minute")
    _rollup("rollups_hour")
    op.create_table(
        "rollup_progress",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("upto", sa.BigInteger(), nullable=False),
        sa.Column("candidate", sa.BigInteger(), nullable=True),
        sa.Column("candidate_xmax", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in (
        "ALTER TABLE samples RENAME TO samples_before_0011",
        "ALTER TABLE samples_before_0011 RENAME CONSTRAINT samples_pkey "
        "TO samples_before_0011_pkey",
        "ALTER INDEX ix_samples_device_point_at RENAME TO ix_samples_before_0011",
        "ALTER SEQUENCE samples_id_seq OWNED BY NONE",
        _table("samples", "id, at") + " PARTITION BY RANGE (at)",
        "CREATE INDEX ix_samples_device_point_at ON samples (device_id, point, at)",
        "CREATE SCHEMA samples_by_day",
        "CREATE TABLE samples_by_day.fallback PARTITION OF samples DEFAULT",
        f"INSERT INTO samples ({COLUMNS}) SELECT {COLUMNS} FROM samples_before_0011",  # noqa: S608
        "DROP TABLE samples_before_0011",
        "ALTER SEQUENCE samples_id_seq OWNED BY samples.id",
    ):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in (
            "ALTER SEQUENCE samples_id_seq OWNED BY NONE",
            _table("samples_plain", "id"),
            f"INSERT INTO samples_plain ({COLUMNS}) SELECT {COLUMNS} FROM samples",  # noqa: S608
            "DROP TABLE samples",
            "DROP SCHEMA samples_by_day CASCADE",
            "ALTER TABLE samples_plain RENAME TO samples",
            "ALTER TABLE samples RENAME CONSTRAINT samples_plain_pkey TO samples_pkey",
            "ALTER TABLE samples RENAME CONSTRAINT samples_plain_device_id_fkey "
            "TO samples_device_id_fkey",
            "CREATE INDEX ix_samples_device_point_at ON samples (device_id, point, at)",
            "ALTER SEQUENCE samples_id_seq OWNED BY samples.id",
        ):
            op.execute(statement)
    op.drop_table("rollup_progress")
    op.drop_index("ix_rollups_hour_at", table_name="rollups_hour")
    op.drop_table("rollups_hour")
    op.drop_index("ix_rollups_minute_at", table_name="rollups_minute")
    op.drop_table("rollups_minute")
