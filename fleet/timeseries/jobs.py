"""The time-series job: every ``interval_s`` keep day partitions ahead (PostgreSQL), roll up
what arrived, and every ``prune_every_s`` apply retention. The fleet runs it in one worker
(fleet.core.singleton); each step is still safe should two run at once: partition changes
take a transaction-level advisory lock and skip when another holds it, and the rollups lock
their progress row. A failing step is logged and tried again next round."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.settings import Settings
from fleet.models import utcnow
from fleet.timeseries import partitions
from fleet.timeseries.retention import Pruned, Retention, prune
from fleet.timeseries.rollups import Run, roll_up

log = logging.getLogger(__name__)

#: the advisory lock partition changes take (pg_try_advisory_xact_lock)
PARTITION_LOCK = zlib.crc32(b"doorstep.timeseries.partitions") & 0x7FFFFFFF


@dataclass
class TimeseriesJobs:
    maker: async_sessionmaker[AsyncSession]
    retention: Retention = field(default_factory=Retention)
    #: day partitions kept ahead of today (PostgreSQL)
    ahead_days: int = 3
    interval_s: float = 10.0
    prune_every_s: float = 600.0

    @classmethod
    def from_settings(
        cls, maker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> TimeseriesJobs:
        return cls(
            maker,
            Retention(
                raw_days=settings.retention_raw_days,
                minute_days=settings.retention_minute_days,
                hour_days=settings.retention_hour_days,
            ),
            ahead_days=settings.partitions_ahead_days,
        )

    async def _postgresql(self) -> bool:
        async with self.maker() as session:
            return session.get_bind().dialect.name == "postgresql"

    async def keep_ahead(self, today: date) -> list[date]:
        """Make the day partitions of ``today`` and ``ahead_days`` after it that are missing;
        the days made (none on SQLite, or while another worker is at it)."""
        if not await self._postgresql():
            return []
        made = []
        for offset in range(self.ahead_days + 1):
            day = today + timedelta(days=offset)
            async with self.maker() as session, session.begin():
                conn = await session.connection()
                taken = await conn.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PARTITION_LOCK}
                )
                if not taken or day in await partitions.days(conn):
                    continue
                moved = await partitions.create_day(conn, day)
            made.append(day)
            log.info("samples: partition for %s made (%d rows moved into it)", day, moved)
        return made

    async def roll_up(self) -> list[Run]:
        """Roll up until nothing final is left (one transaction per BATCH_IDS ids)."""
        runs = []
        while True:
            async with self.maker() as session, session.begin():
                run = await roll_up(session)
            runs.append(run)
            if not run.full:
                return runs

    async def prune(self, now: datetime) -> Pruned:
        pruned = await prune(self.maker, self.retention, now)
        if pruned.raw_partitions or pruned.raw_rows or pruned.minute_rows or pruned.hour_rows:
            log.info("history retention: %s", pruned)
        return pruned

    async def run(self) -> None:
        """Forever (until cancelled)."""
        pruned_at: datetime | None = None
        while True:
            now = utcnow()
            await self._step("partitions", self.keep_ahead(now.astimezone(UTC).date()))
            await self._step("rollups", self.roll_up())
            if pruned_at is None or now - pruned_at >= timedelta(seconds=self.prune_every_s):
                await self._step("retention", self.prune(now))
                pruned_at = now
            await asyncio.sleep(self.interval_s)

    async def _step(self, name: str, work: Awaitable[object]) -> None:
        try:
            await work
        except Exception:
            log.exception("time-series job: %s failed; trying again next round", name)
