"""Samples partitioned by day on PostgreSQL: one partition per UTC day in the schema
``samples_by_day`` (``samples_by_day.d20261205``), created ahead of time, dropped whole for
retention, and a default partition that catches what no day partition holds (a reading from
before the oldest one, or one that came while the job was not running).

A day's partition is made apart and attached (``ATTACH PARTITION`` takes a lock that does not
stop inserts into the other partitions); rows of that day already in the default partition
move into it first, so it can always be made. Dropping a partition does block the table for
a moment: every statement here waits at most ``LOCK_TIMEOUT`` for its lock and is tried again
on the next round otherwise. SQLite keeps ``samples`` as one plain table (none of this).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

SCHEMA = "samples_by_day"
DEFAULT = f"{SCHEMA}.fallback"
LOCK_TIMEOUT = "5s"
_DAY = re.compile(r"^d(\d{8})$")
#: rows deleted from the default partition per statement (retention)
DELETE_BATCH = 10_000


def partition_name(day: date) -> str:
    return f"{SCHEMA}.d{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True)
class Changes:
    created: list[date]
    dropped: list[date]
    moved: int = 0  # rows moved from the default partition into a new day's partition
    deleted: int = 0  # rows older than retention deleted from the default partition


async def days(conn: AsyncConnection) -> list[date]:
    """The days that have a partition of their own, oldest first."""
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE i.inhparent = 'samples'::regclass AND n.nspname = :schema"
        ),
        {"schema": SCHEMA},
    )
    found = []
    for (name,) in rows:
        match = _DAY.match(name)
        if match:
            found.append(datetime.strptime(match[1], "%Y%m%d").date())
    return sorted(found)


async def _lock_timeout(conn: AsyncConnection) -> None:
    await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))


async def create_day(conn: AsyncConnection, day: date) -> int:
    """Make ``day``'s partition (it must not exist), moving its rows out of the default
    partition; the number of rows moved. Run in a transaction of its own."""
    await _lock_timeout(conn)
    name, start, end = partition_name(day), day_start(day), day_start(day + timedelta(days=1))
    bounds = {"start": start, "end": end}
    await conn.execute(text(f"CREATE TABLE {name} (LIKE samples INCLUDING DEFAULTS)"))
    # the bound as a constraint lets ATTACH skip scanning the new table
    await conn.execute(
        text(
            f"ALTER TABLE {name} ADD CONSTRAINT d{day:%Y%m%d}_bound "
            f"CHECK (at >= '{start.isoformat()}' AND at < '{end.isoformat()}')"
        )
    )
    # the table names are this module's own, never input
    move = f"DELETE FROM {DEFAULT} WHERE at >= :start AND at < :end RETURNING *"  # noqa: S608
    into = f"WITH moved AS ({move}) INSERT INTO {name} SELECT * FROM moved"  # noqa: S608
    moved = await conn.execute(text(into), bounds)
    await conn.execute(
        text(
            f"ALTER TABLE samples ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    await conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT d{day:%Y%m%d}_bound"))
    return moved.rowcount or 0


async def drop_day(conn: AsyncConnection, day: date) -> None:
    await _lock_timeout(conn)
    await conn.execute(text(f"DROP TABLE {partition_name(day)}"))


async def newest_id(conn: AsyncConnection, day: date) -> int | None:
    """The highest sample id in ``day``'s partition (None: empty)."""
    newest = await conn.scalar(text(f"SELECT max(id) FROM {partition_name(day)}"))  # noqa: S608
    return None if newest is None else int(newest)


async def delete_from_default(conn: AsyncConnection, before: datetime, upto: int) -> int:
    """Delete at most DELETE_BATCH rows older than ``before`` (and with ids up to ``upto``,
    those the rollups have read) from the default partition."""
    old = "at < :before AND id <= :upto"
    rows = f"SELECT ctid FROM {DEFAULT} WHERE {old} LIMIT {DELETE_BATCH}"  # noqa: S608
    delete = f"DELETE FROM {DEFAULT} WHERE ctid IN ({rows})"  # noqa: S608
    done = await conn.execute(text(delete), {"before": before, "upto": upto})
    return done.rowcount or 0
