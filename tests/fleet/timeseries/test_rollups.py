"""The rollups add up to the aggregates of the samples, computed directly, whatever the order
the samples arrived in (late ones included), the batches they came in and how the job ran
between them (twice at once included); on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from fleet.core.db import open_database, sessions
from fleet.models import Sample
from fleet.timeseries.jobs import TimeseriesJobs
from fleet.timeseries.rollups import Aggregate, Key, direct, stored
from fleet.timeseries.tables import HourRollup, MinuteRollup
from tests.fleet.timeseries.fleet_rows import add_devices, clear_history

BASE = datetime(2026, 12, 1, 22, 58, tzinfo=UTC)
#: runs that settle everything inserted before them (PostgreSQL's ids mature in three)
SETTLE = 4

numbers = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(-1000, 1000).map(float),
    st.none(),  # a text or state reading: not rolled up
    st.just(1e300),  # too large to sum safely: not rolled up
)
sample = st.tuples(
    st.integers(0, 1),  # device
    st.sampled_from(["power", "temp"]),
    st.integers(0, 3 * 3600).map(lambda s: BASE + timedelta(seconds=s, microseconds=s % 7)),
    numbers,
)
#: batches of samples, each followed by 0, 1 or 2 (at once) runs of the job
arrivals = st.lists(st.tuples(st.lists(sample, max_size=25), st.integers(0, 2)), max_size=8)


def assert_same(got: dict[Key, Aggregate], expected: dict[Key, Aggregate]) -> None:
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        have = got[key]
        assert (have.min, have.max, have.count) == (want.min, want.max, want.count), key
        assert (have.last, have.last_at) == (want.last, want.last_at), key
        assert have.sum == pytest.approx(want.sum, rel=1e-9, abs=1e-6), key


@pytest.mark.parametrize("examples", [40])
def test_rollups_equal_the_aggregates_of_the_samples(fleet_db_url: str, examples: int) -> None:
    with asyncio.Runner() as runner:
        engine = runner.run(open_database(fleet_db_url))
        maker = sessions(engine)
        jobs = TimeseriesJobs(maker)
        devices = runner.run(add_devices(maker, 2))

        async def scenario(
            batches: list[tuple[list[tuple[int, str, datetime, float | None]], int]],
        ) -> None:
            await clear_history(maker)
            for batch, runs in batches:
                if batch:
                    rows = [
                        {"device_id": devices[d], "point": p, "at": at, "value": num, "num": num,
                         "quality": "good"}
                        for d, p, at, num in batch
                    ]  # fmt: skip
                    async with maker() as session, session.begin():
                        await session.execute(insert(Sample), rows)
                if runs:
                    await asyncio.gather(*(jobs.roll_up() for _ in range(runs)))
            for _ in range(SETTLE):
                await jobs.roll_up()
            async with maker() as session:
                raw = (
                    await session.execute(
                        select(Sample.id, Sample.device_id, Sample.point, Sample.at, Sample.num)
                    )
                ).all()
                minutes = (await session.scalars(select(MinuteRollup))).all()
                hours = (await session.scalars(select(HourRollup))).all()
            samples = [tuple(row) for row in raw]
            assert_same(stored(minutes), direct(samples))  # type: ignore[arg-type]
            assert_same(stored(hours), direct(samples, hour=True))  # type: ignore[arg-type]

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(arrivals)
        def check(batches: list[tuple[list[tuple[int, str, datetime, float | None]], int]]) -> None:
            runner.run(scenario(batches))

        try:
            check()
        finally:
            runner.run(engine.dispose())
