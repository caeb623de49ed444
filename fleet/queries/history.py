"""History of one point, downsampled in SQL into at most ``buckets`` time buckets.

A sample's bucket is ``(epoch_us(at) - epoch_us(since)) / width_us`` in integer arithmetic
(exact on both databases: no float rounding puts a sample at a boundary into the wrong
bucket), with ``width_us = ceil((until - since) / buckets)`` so ``[since, until)`` never needs
more than ``buckets`` of them. Only numeric samples (``Sample.num``) count; empty buckets are
left out.

Where the numbers come from depends on the span (:func:`resolution_for`): up to
:data:`RAW_SPAN` the raw samples; beyond it the per-minute rollups, or the per-hour ones when
a bucket is an hour or wider (fleet.timeseries.rollups). A rollup row counts in the bucket
its minute or hour starts in; the samples the rollups have not reached yet (the newest ones,
those of the last :data:`RECENT`) are added from the raw table, so a long plot ends at now.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import BigInteger, ColumnElement, Select, Table, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Base, Device, Gateway, Sample, Site, utcnow
from fleet.timeseries.epoch import US, epoch_s, epoch_us, to_us
from fleet.timeseries.rollups import NAME, rollable
from fleet.timeseries.tables import HourRollup, MinuteRollup, RollupProgress

MAX_BUCKETS = 2000
#: spans up to this read raw samples; longer ones the rollups
RAW_SPAN = timedelta(hours=6)
#: how far back a rollup-based answer also reads samples not rolled up yet
RECENT = timedelta(hours=2)


#: (bucket, min, max, sum, count) rows of one source, added up per bucket
Part = Select[int, float | None, float | None, float | None, int]


class Resolution(StrEnum):
    RAW = "raw"
    MINUTE = "minute"
    HOUR = "hour"


ROLLUPS: dict[Resolution, Table] = {
    Resolution.MINUTE: Base.metadata.tables[MinuteRollup.__tablename__],
    Resolution.HOUR: Base.metadata.tables[HourRollup.__tablename__],
}


class Bucket(BaseModel):
    t: datetime  # the bucket's start
    min: float
    max: float
    avg: float
    n: int


class History(BaseModel):
    site: str
    gateway: str
    device: str
    point: str
    since: datetime
    until: datetime
    bucket_seconds: float
    series: list[Bucket]


def resolution_for(since: datetime, until: datetime, buckets: int) -> Resolution:
    """Raw samples for a short span, else the coarsest rollup finer than a bucket."""
    if until - since <= RAW_SPAN:
        return Resolution.RAW
    return Resolution.HOUR if (until - since) / buckets >= timedelta(hours=1) else Resolution.MINUTE


async def device_id(session: AsyncSession, site: str, gateway: str, device: str) -> int | None:
    found: int | None = await session.scalar(
        select(Device.id)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
        .where(Site.name == site, Gateway.name == gateway, Device.name == device)
    )
    return found


def _in_bucket(
    at: Any, since_us: int, width_us: int, whole_seconds: bool = False
) -> ColumnElement[int]:
    """The index of the bucket ``at`` falls in (integer arithmetic, exact)."""
    start, width = literal(since_us, BigInteger), literal(width_us, BigInteger)
    us = epoch_s(at) * literal(US, BigInteger) if whole_seconds else epoch_us(at)
    return ((us - start) // width).label("bucket")


def _raw(
    device: int, point: str, since: datetime, until: datetime, since_us: int, width_us: int
) -> Part:
    """Each numeric sample as a bucket of one: (bucket, min, max, sum, count)."""
    return select(
        _in_bucket(Sample.at, since_us, width_us),
        Sample.num.label("lo"),
        Sample.num.label("hi"),
        Sample.num.label("total"),
        literal(1, BigInteger).label("n"),
    ).where(
        Sample.device_id == device,
        Sample.point == point,
        Sample.at >= since,
        Sample.at < until,
        Sample.num.is_not(None),
    )


def _rolled(
    table: Table,
    device: int,
    point: str,
    since: datetime,
    until: datetime,
    since_us: int,
    width_us: int,
) -> Part:
    return select(
        _in_bucket(table.c.at, since_us, width_us, whole_seconds=True),
        table.c.min.label("lo"),
        table.c.max.label("hi"),
        table.c.sum.label("total"),
        table.c.count.label("n"),
    ).where(
        table.c.device_id == device,
        table.c.point == point,
        table.c.at >= since,
        table.c.at < until,
    )


async def history(
    session: AsyncSession,
    device: int,
    point: str,
    since: datetime,
    until: datetime,
    buckets: int,
    resolution: Resolution | None = None,
) -> tuple[float, list[Bucket]]:
    """The bucket width in seconds and the non-empty buckets of ``[since, until)``, oldest
    first. ``since`` < ``until``, both aware; 1 <= ``buckets`` <= MAX_BUCKETS; the
    resolution read is :func:`resolution_for`'s unless one is given."""
    since_us = to_us(since)
    width_us = max(1, -(-(to_us(until) - since_us) // buckets))
    chosen = resolution or resolution_for(since, until, buckets)
    parts: list[Part] = []
    if chosen is Resolution.RAW:
        parts.append(_raw(device, point, since, until, since_us, width_us))
    else:
        table = ROLLUPS[chosen]
        parts.append(_rolled(table, device, point, since, until, since_us, width_us))
        recent = max(since, utcnow() - RECENT)
        if recent < until:
            rolled_up_to = func.coalesce(
                select(RollupProgress.upto).where(RollupProgress.name == NAME).scalar_subquery(),
                0,
            )
            parts.append(
                _raw(device, point, recent, until, since_us, width_us).where(
                    rollable(), Sample.id > rolled_up_to
                )
            )
    every = union_all(*parts).subquery()
    rows = await session.execute(
        select(
            every.c.bucket,
            func.min(every.c.lo),
            func.max(every.c.hi),
            func.sum(every.c.total),
            func.sum(every.c.n),
        )
        .group_by(every.c.bucket)
        .order_by(every.c.bucket)
    )
    series = [
        Bucket(
            t=since + timedelta(microseconds=int(bucket) * width_us),
            min=lo,
            max=hi,
            avg=float(total) / int(n),
            n=int(n),
        )
        for bucket, lo, hi, total, n in rows
    ]
    return width_us / US, series
