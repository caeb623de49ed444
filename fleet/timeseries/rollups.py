"""Per-minute and per-hour rollups of numeric samples, maintained incrementally.

Each run reads the samples inserted since the last one, by id (insertion order, not reading
time: a reading that arrives hours late, through gap repair, is still rolled up), groups them
by (device, point, minute), merges the groups into ``rollups_minute`` and their hours into
``rollups_hour`` (min of mins, max of maxes, sums and counts added, the last value by reading
time), and moves the progress mark — all in one transaction, so an id range is rolled up
exactly once whatever runs, fails or races. Two workers may run it at once: the progress row
is locked ``FOR UPDATE`` and the second waits, then reads what is left.

Ids are final only when no transaction that could still insert a lower one is running. On
SQLite (one writer) that is always so. On PostgreSQL a sequence hands out ids before the
transaction that uses them commits, so the highest id seen is first a *candidate*; a later run
notes the newest transaction id then (``candidate_xmax``); a run after that rolls up to the
candidate once every transaction older than that mark has ended. Rollups so trail the samples
by two or three runs; the history query adds the samples not rolled up yet.

Only finite numbers of magnitude below :data:`LIMIT` are rolled up: a sum of larger ones can
overflow a double (PostgreSQL refuses that), and no meter reads 1e290.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Table, Text, case, cast, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Base, Sample, utcnow
from fleet.timeseries.epoch import epoch_us
from fleet.timeseries.tables import HourRollup, MinuteRollup, RollupProgress

NAME = "samples"
LIMIT = 1e290
MINUTE_US = 60_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTES = Base.metadata.tables[MinuteRollup.__tablename__]
HOURS = Base.metadata.tables[HourRollup.__tablename__]
#: sample ids read per transaction (a backlog is rolled up in several)
BATCH_IDS = 200_000
#: rollup rows written per statement
WRITE_ROWS = 2_000


@dataclass
class Aggregate:
    """The rollup of one (device, point, interval)."""

    min: float
    max: float
    sum: float
    count: int
    last: float
    last_at: datetime

    def merge(self, newer: Aggregate) -> Aggregate:
        """Both together; ``newer`` holds later inserts, so it wins a tie on ``last_at``."""
        later = newer.last_at >= self.last_at
        return Aggregate(
            min=min(self.min, newer.min),
            max=max(self.max, newer.max),
            sum=self.sum + newer.sum,
            count=self.count + newer.count,
            last=newer.last if later else self.last,
            last_at=newer.last_at if later else self.last_at,
        )


Key = tuple[int, str, datetime]  # device id, point, the interval's start


@dataclass(frozen=True)
class Run:
    """What one run did: the id range rolled up (``first`` < id <= ``last``; equal: none)."""

    first: int
    last: int
    minutes: int
    hours: int

    @property
    def full(self) -> bool:
        """It stopped at BATCH_IDS: there is more to roll up now."""
        return self.last - self.first >= BATCH_IDS


def rollable() -> Any:
    """The samples a rollup counts (and the history query with it)."""
    return (Sample.num.is_not(None)) & (func.abs(Sample.num) < LIMIT)


async def _minutes(session: AsyncSession, first: int, last: int) -> dict[Key, Aggregate]:
    """The per-minute aggregates of the samples with first < id <= last."""
    minute = (epoch_us(Sample.at) // literal(MINUTE_US, BigInteger)).label("minute")
    ranked = (
        select(
            Sample.device_id,
            Sample.point,
            Sample.num,
            Sample.at,
            minute,
            func.row_number()
            .over(
                partition_by=(Sample.device_id, Sample.point, minute),
                order_by=(Sample.at.desc(), Sample.id.desc()),
            )
            .label("newest"),
        )
        .where(Sample.id > first, Sample.id <= last, rollable())
        .subquery()
    )
    rows = await session.execute(
        select(
            ranked.c.device_id,
            ranked.c.point,
            ranked.c.minute,
            func.min(ranked.c.num),
            func.max(ranked.c.num),
            func.sum(ranked.c.num),
            func.count(ranked.c.num),
            func.max(case((ranked.c.newest == 1, ranked.c.num))),
            func.max(ranked.c.at),
        ).group_by(ranked.c.device_id, ranked.c.point, ranked.c.minute)
    )
    return {
        (device, point, EPOCH + timedelta(minutes=int(minute))): Aggregate(
            float(lo), float(hi), float(total), int(n), float(newest), at
        )
        for device, point, minute, lo, hi, total, n, newest, at in rows
    }


def hours_of(minutes: dict[Key, Aggregate]) -> dict[Key, Aggregate]:
    """Per-minute aggregates combined into their hours."""
    hours: dict[Key, Aggregate] = {}
    for (device, point, at), aggregate in sorted(minutes.items(), key=lambda kv: kv[1].last_at):
        key = (device, point, at.replace(minute=0))
        known = hours.get(key)
        hours[key] = aggregate if known is None else known.merge(aggregate)
    return hours


async def _merge(session: AsyncSession, table: Table, rows: dict[Key, Aggregate]) -> None:
    """Merge ``rows`` (newer than anything stored) into the rollup table."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    smaller = func.least if dialect == "postgresql" else func.min
    larger = func.greatest if dialect == "postgresql" else func.max
    statement = insert(table)
    new, old = statement.excluded, table.c
    later = new.last_at >= old.last_at
    statement = statement.on_conflict_do_update(
        index_elements=[old.device_id, old.point, old.at],
        set_={
            "min": smaller(old.min, new.min),
            "max": larger(old.max, new.max),
            "sum": old.sum + new.sum,
            "count": old.count + new.count,
            "last": case((later, new.last), else_=old.last),
            "last_at": case((later, new.last_at), else_=old.last_at),
        },
    )
    values = [
        {"device_id": device, "point": point, "at": at, **vars(aggregate)}
        for (device, point, at), aggregate in sorted(rows.items())
    ]
    for start in range(0, len(values), WRITE_ROWS):
        await session.execute(statement, values[start : start + WRITE_ROWS])


async def _final_id(session: AsyncSession, progress: RollupProgress) -> int:
    """The highest sample id that is final now, advancing the candidate's stages."""
    top = await session.scalar(select(func.coalesce(func.max(Sample.id), 0)))
    assert top is not None
    if session.get_bind().dialect.name != "postgresql":
        return max(progress.upto, int(top))
    snapshot = (
        await session.execute(select(_xid(func.pg_snapshot_xmin), _xid(func.pg_snapshot_xmax)))
    ).one()
    oldest_running, newest = int(snapshot[0]), int(snapshot[1])
    final = progress.upto
    if (
        progress.candidate is not None
        and progress.candidate_xmax is not None
        and oldest_running >= progress.candidate_xmax
    ):
        final = progress.candidate
        progress.candidate, progress.candidate_xmax = None, None
    if progress.candidate is None:
        if top > final:
            progress.candidate = top
    elif progress.candidate_xmax is None:
        progress.candidate_xmax = newest
    return final


def _xid(part: Any) -> Any:
    """A part of the current snapshot (an xid8) as a BIGINT."""
    return cast(cast(part(func.pg_current_snapshot()), Text), BigInteger)


async def roll_up(session: AsyncSession) -> Run:
    """One run, in ``session``'s transaction (the caller commits): roll up the samples whose
    ids became final since the last run, at most BATCH_IDS of them."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert(RollupProgress).values(name=NAME, upto=0).on_conflict_do_nothing())
    progress = await session.scalar(
        select(RollupProgress)
        .where(RollupProgress.name == NAME)
        .with_for_update()
        .execution_options(populate_existing=True)  # as it is once another run's lock is gone
    )
    assert progress is not None
    first = progress.upto
    last = min(await _final_id(session, progress), first + BATCH_IDS)
    minutes: dict[Key, Aggregate] = {}
    if last > first:
        minutes = await _minutes(session, first, last)
        hours = hours_of(minutes)
        await _merge(session, MINUTES, minutes)
        await _merge(session, HOURS, hours)
        progress.upto = last
    else:
        hours = {}
    progress.updated_at = utcnow()
    await session.flush()
    return Run(first=first, last=last, minutes=len(minutes), hours=len(hours))


def direct(
    samples: Iterable[tuple[int, int, str, datetime, float | None]], hour: bool = False
) -> dict[Key, Aggregate]:
    """The rollups computed straight from samples (id, device, point, at, num): what the
    incremental runs must add up to. For tests and checks."""
    out: dict[Key, Aggregate] = {}
    for _id, device, point, at, num in sorted(samples, key=lambda s: (s[3], s[0])):
        if num is None or not abs(num) < LIMIT:
            continue
        start = at.replace(minute=0 if hour else at.minute, second=0, microsecond=0)
        one = Aggregate(num, num, num, 1, num, at)
        key = (device, point, start)
        out[key] = one if key not in out else out[key].merge(one)
    return out


def stored(rows: Sequence[Any]) -> dict[Key, Aggregate]:
    """Rollup rows (ORM objects of MinuteRollup or HourRollup) keyed like :func:`direct`."""
    return {
        (r.device_id, r.point, r.at): Aggregate(r.min, r.max, r.sum, r.count, r.last, r.last_at)
        for r in rows
    }
