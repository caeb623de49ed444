"""A long history reads the rollups and a short one the raw samples, with the same answer
where both have the data; what the rollups have not reached yet is added, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.core.db import open_database, sessions
from fleet.models import Sample, utcnow
from fleet.queries.history import RAW_SPAN, Resolution, history, resolution_for
from fleet.timeseries.jobs import TimeseriesJobs
from tests.fleet.timeseries.fleet_rows import add_devices

SPAN = timedelta(hours=12)


@pytest.fixture
async def maker(fleet_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = await open_database(fleet_db_url)
    try:
        yield sessions(engine)
    finally:
        await engine.dispose()


def test_the_span_and_the_bucket_width_choose_the_resolution() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    assert resolution_for(now - RAW_SPAN, now, 200) is Resolution.RAW
    assert resolution_for(now - timedelta(days=1), now, 200) is Resolution.MINUTE
    assert resolution_for(now - timedelta(days=30), now, 2000) is Resolution.MINUTE
    assert resolution_for(now - timedelta(days=30), now, 200) is Resolution.HOUR


async def test_a_long_history_reads_the_rollups_and_the_newest_samples(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    (device,) = await add_devices(maker, 1)
    until = utcnow().replace(second=0, microsecond=0)
    since = until - SPAN
    every = timedelta(seconds=10)
    rows = [
        {"device_id": device, "point": "power", "at": since + i * every, "value": v, "num": v,
         "quality": "good"}
        for i in range(int(SPAN / every)) if (v := float((i * 37) % 101))
    ]  # fmt: skip
    async with maker() as session, session.begin():
        await session.execute(insert(Sample), rows)
    jobs = TimeseriesJobs(maker)
    for _ in range(4):  # PostgreSQL's ids are final after three runs
        await jobs.roll_up()

    async def plot(
        resolution: Resolution | None = None,
    ) -> list[tuple[datetime, float, float, int]]:
        async with maker() as session:
            width, series = await history(session, device, "power", since, until, 240, resolution)
        assert width == 180.0
        return [(b.t, b.min, b.max, b.n) for b in series]

    raw = await plot(Resolution.RAW)
    assert len(raw) == 240
    assert await plot() == raw  # the minute rollups give the same plot, bucket for bucket
    assert await plot(Resolution.HOUR) != raw  # (an hour is wider than a 3-minute bucket)
    async with maker() as session:
        _, averages = await history(session, device, "power", since, until, 240)
        _, raw_averages = await history(session, device, "power", since, until, 240, Resolution.RAW)
    assert [b.avg for b in averages] == pytest.approx([b.avg for b in raw_averages])

    # raw samples gone (as retention does): the long plot still has them, a short one not
    async with maker() as session, session.begin():
        await session.execute(delete(Sample).where(Sample.at < until - timedelta(hours=3)))
    assert await plot() == raw
    assert [b for b in await plot(Resolution.RAW) if b[0] < until - timedelta(hours=3)] == []

    # a reading the rollups have not reached is in the long plot at once, and counted once
    async with maker() as session, session.begin():
        await session.execute(
            insert(Sample),
            [{"device_id": device, "point": "power", "at": until - timedelta(seconds=5),
              "value": 1000.0, "num": 1000.0, "quality": "good"}],
        )  # fmt: skip
    newest = (await plot())[-1]
    assert (newest[2], newest[3]) == (1000.0, raw[-1][3] + 1)
    for _ in range(4):
        await jobs.roll_up()
    assert (await plot())[-1] == newest
