"""Partitions are made ahead and dropped for retention (PostgreSQL); retention deletes in
batches (SQLite, and PostgreSQL's default partition); nothing the rollups have not read is
deleted, and the rollups outlive the raw samples."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.db import open_database, sessions
from fleet.errors import RetentionError
from fleet.models import Sample
from fleet.timeseries import partitions, retention
from fleet.timeseries.jobs import TimeseriesJobs
from fleet.timeseries.retention import Retention
from fleet.timeseries.tables import HourRollup, MinuteRollup
from hil_tests.postgres import PostgresServer
from tests.fleet.timeseries.fleet_rows import add_devices

NOW = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
TODAY = NOW.date()


@pytest.fixture
async def maker(fleet_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = await open_database(fleet_db_url)
    try:
        yield sessions(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_maker(
    postgres_server: PostgresServer,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = await open_database(postgres_server.fresh_database())
    try:
        yield sessions(engine)
    finally:
        await engine.dispose()


async def add_samples(
    maker: async_sessionmaker[AsyncSession], device: int, days_ago: list[int], per_day: int = 10
) -> None:
    rows = [
        {"device_id": device, "point": "power", "at": NOW - timedelta(days=d, minutes=i),
         "value": float(i), "num": float(i), "quality": "good"}
        for d in days_ago for i in range(per_day)
    ]  # fmt: skip
    async with maker() as session, session.begin():
        await session.execute(insert(Sample), rows)


async def count(maker: async_sessionmaker[AsyncSession], table: type) -> int:
    async with maker() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def where(maker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Rows per partition of samples."""
    async with maker() as session:
        rows = await session.execute(
            text("SELECT tableoid::regclass::text, count(*) FROM samples GROUP BY 1")
        )
        return {str(name): int(n) for name, n in rows.all()}


def test_a_retention_of_less_than_a_day_is_refused_with_its_name() -> None:
    with pytest.raises(RetentionError, match="minute_days: 0 is not a whole number of days"):
        Retention(minute_days=0)


async def test_retention_deletes_in_batches_and_keeps_what_is_not_rolled_up(
    maker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 7)
    monkeypatch.setattr(partitions, "DELETE_BATCH", 7)
    (device,) = await add_devices(maker, 1)
    await add_samples(maker, device, [40, 35, 1])
    jobs = TimeseriesJobs(maker, Retention(raw_days=30, minute_days=36, hour_days=38))
    for _ in range(4):
        await jobs.roll_up()
    await add_samples(maker, device, [50], per_day=3)  # not rolled up yet: kept
    pruned = await jobs.prune(NOW)
    assert pruned.raw_rows == 20
    assert await count(maker, Sample) == 13
    assert pruned.minute_rows == 10  # the 40 days old ones
    assert await count(maker, MinuteRollup) == 20
    assert await count(maker, HourRollup) == 2  # 35 days and 1 day old: an hour each
    for _ in range(4):
        await jobs.roll_up()
    assert (await jobs.prune(NOW)).raw_rows == 3
    assert await count(maker, Sample) == 10


async def test_day_partitions_are_made_ahead_and_dropped_whole(
    pg_maker: async_sessionmaker[AsyncSession],
) -> None:
    maker = pg_maker
    (device,) = await add_devices(maker, 1)
    await add_samples(maker, device, [0, 40], per_day=5)  # before any day partition
    assert await where(maker) == {partitions.DEFAULT: 10}
    jobs = TimeseriesJobs(maker, Retention(raw_days=30), ahead_days=2)
    made = await jobs.keep_ahead(TODAY)
    assert made == [TODAY + timedelta(days=n) for n in range(3)]
    assert await jobs.keep_ahead(TODAY) == []
    today = partitions.partition_name(TODAY)
    assert await where(maker) == {partitions.DEFAULT: 5, today: 5}  # today's rows moved
    old = TODAY - timedelta(days=40)
    assert await jobs.keep_ahead(old) == [old, old + timedelta(days=1), old + timedelta(days=2)]
    assert await where(maker) == {partitions.partition_name(old): 5, today: 5}
    await add_samples(maker, device, [39], per_day=5)
    for _ in range(4):
        await jobs.roll_up()
    await add_samples(maker, device, [38], per_day=1)  # not rolled up yet: its day stays

    pruned = await jobs.prune(NOW)
    assert pruned.raw_partitions == 2
    async with maker() as session:
        kept = await partitions.days(await session.connection())
    assert kept == [old + timedelta(days=2), *(TODAY + timedelta(days=n) for n in range(3))]
    assert await where(maker) == {partitions.partition_name(old + timedelta(days=2)): 1, today: 5}
    assert await count(maker, MinuteRollup) == 15  # the rollups outlive the raw samples
