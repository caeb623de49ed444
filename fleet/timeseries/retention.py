"""How long history is kept, per resolution: raw samples, per-minute and per-hour rollups.

PostgreSQL drops a raw day's partition whole once all of it is older than ``raw_days`` (and
deletes old rows from the default partition in batches); SQLite deletes raw samples in
batches. Rollups are deleted in batches on both. A raw sample is never deleted before the
rollups have read it: a partition, or a row, whose ids are beyond the rollups' progress waits
for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.errors import RetentionError
from fleet.timeseries import partitions
from fleet.timeseries.rollups import NAME
from fleet.timeseries.tables import HourRollup, MinuteRollup, RollupProgress

#: rows deleted per statement (each in a transaction of its own)
BATCH = 5_000


@dataclass(frozen=True)
class Retention:
    """Days kept per resolution (each at least 1)."""

    raw_days: int = 30
    minute_days: int = 90
    hour_days: int = 1825

    def __post_init__(self) -> None:
        for name in ("raw_days", "minute_days", "hour_days"):
            days = getattr(self, name)
            if isinstance(days, bool) or not isinstance(days, int) or days < 1:
                raise RetentionError(
                    f"history retention {name}: {days!r} is not a whole number of days >= 1"
                )


@dataclass
class Pruned:
    """What one pass removed."""

    raw_rows: int = 0
    raw_partitions: int = 0
    minute_rows: int = 0
    hour_rows: int = 0


async def _rolled_up_to(session: AsyncSession) -> int:
    upto = await session.scalar(select(RollupProgress.upto).where(RollupProgress.name == NAME))
    return int(upto or 0)


async def _delete_batches(
    maker: async_sessionmaker[AsyncSession], statement: str, params: dict[str, object]
) -> int:
    """Run a bounded DELETE until it deletes less than a batch; the rows deleted."""
    total = 0
    while True:
        async with maker() as session, session.begin():
            done = await session.execute(text(statement), params)
            deleted = done.rowcount or 0  # type: ignore[attr-defined]
        total += deleted
        if deleted < BATCH:
            return total


async def _raw_postgresql(
    maker: async_sessionmaker[AsyncSession], before: datetime, pruned: Pruned
) -> None:
    async with maker() as session:
        kept = await partitions.days(await session.connection())
    for day in kept:
        if partitions.day_start(day + timedelta(days=1)) > before:
            break
        async with maker() as session, session.begin():
            conn = await session.connection()
            newest = await partitions.newest_id(conn, day)
            if newest is not None and newest > await _rolled_up_to(session):
                break  # the rollups have not read it all yet
            await partitions.drop_day(conn, day)
        pruned.raw_partitions += 1
    while True:
        async with maker() as session, session.begin():
            upto = await _rolled_up_to(session)
            deleted = await partitions.delete_from_default(await session.connection(), before, upto)
        pruned.raw_rows += deleted
        if deleted < partitions.DELETE_BATCH:
            return


async def prune(
    maker: async_sessionmaker[AsyncSession], retention: Retention, now: datetime
) -> Pruned:
    """Remove what ``retention`` no longer keeps at ``now``."""
    pruned = Pruned()
    async with maker() as session:
        dialect = session.get_bind().dialect.name
    raw_before = now - timedelta(days=retention.raw_days)
    if dialect == "postgresql":
        await _raw_postgresql(maker, raw_before, pruned)
        row = "ctid"
    else:
        pruned.raw_rows = await _delete_batches(
            maker,
            "DELETE FROM samples WHERE id IN (SELECT id FROM samples WHERE at < :before "
            "AND id <= (SELECT coalesce(max(upto), 0) FROM rollup_progress) ORDER BY id "
            "LIMIT :batch)",
            {"before": raw_before, "batch": BATCH},
        )
        row = "rowid"
    for table, days, field in (
        (MinuteRollup.__tablename__, retention.minute_days, "minute_rows"),
        (HourRollup.__tablename__, retention.hour_days, "hour_rows"),
    ):
        old = f"SELECT {row} FROM {table} WHERE at < :before LIMIT :batch"  # noqa: S608
        deleted = await _delete_batches(
            maker,
            f"DELETE FROM {table} WHERE {row} IN ({old})",  # noqa: S608
            {"before": now - timedelta(days=days), "batch": BATCH},
        )
        setattr(pruned, field, deleted)
    return pruned
