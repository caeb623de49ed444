"""History of one point, downsampled in SQL into at most ``buckets`` time buckets.

A sample's bucket is ``(epoch_us(at) - epoch_us(since)) / width_us`` in integer arithmetic
(exact on both databases: no float rounding puts a sample at a boundary into the wrong
bucket), with ``width_us = ceil((until - since) / buckets)`` so ``[since, until)`` never needs
more than ``buckets`` of them. :class:`epoch_us` compiles to each database's own spelling.
Only numeric samples (``Sample.num``) count; empty buckets are left out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import BigInteger, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from fleet.models import Device, Gateway, Sample, Site

MAX_BUCKETS = 2000
US = 1_000_000


class epoch_us(FunctionElement[int]):  # an SQL function, spelt like one
    """Microseconds since the epoch of a UtcDateTime column, as a BIGINT."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_us"


@compiles(epoch_us, "sqlite")
def _epoch_us_sqlite(element: epoch_us, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps the column as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC; fleet.models.UtcDateTime)
    at = compiler.process(element.clauses, **kw)
    return f"(CAST(strftime('%s', {at}) AS INTEGER) * {US} + CAST(substr({at}, 21, 6) AS INTEGER))"


@compiles(epoch_us, "postgresql")
def _epoch_us_postgresql(element: epoch_us, compiler: SQLCompiler, **kw: Any) -> str:
    # EXTRACT returns numeric (exact) since PostgreSQL 14
    at = compiler.process(element.clauses, **kw)
    return f"CAST(EXTRACT(EPOCH FROM {at}) * {US} AS BIGINT)"


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


def to_us(at: datetime) -> int:
    """Whole microseconds since the epoch, exactly (no float on the way)."""
    return (at - datetime(1970, 1, 1, tzinfo=at.tzinfo)) // timedelta(microseconds=1)


async def device_id(session: AsyncSession, site: str, gateway: str, device: str) -> int | None:
    found: int | None = await session.scalar(
        select(Device.id)
        .join(Gateway, Device.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
        .where(Site.name == site, Gateway.name == gateway, Device.name == device)
    )
    return found


async def history(
    session: AsyncSession,
    device: int,
    point: str,
    since: datetime,
    until: datetime,
    buckets: int,
) -> tuple[float, list[Bucket]]:
    """The bucket width in seconds and the non-empty buckets of ``[since, until)``, oldest
    first. ``since`` < ``until``, both aware; 1 <= ``buckets`` <= MAX_BUCKETS."""
    since_us = to_us(since)
    width_us = max(1, -(-(to_us(until) - since_us) // buckets))
    samples = (
        select(
            (
                (epoch_us(Sample.at) - literal(since_us, BigInteger))
                // literal(width_us, BigInteger)
            ).label("bucket"),
            Sample.num.label("num"),
        )
        .where(
            Sample.device_id == device,
            Sample.point == point,
            Sample.at >= since,
            Sample.at < until,
            Sample.num.is_not(None),
        )
        .subquery()
    )
    rows = await session.execute(
        select(
            samples.c.bucket,
            func.min(samples.c.num),
            func.max(samples.c.num),
            func.avg(samples.c.num),
            func.count(samples.c.num),
        )
        .group_by(samples.c.bucket)
        .order_by(samples.c.bucket)
    )
    series = [
        Bucket(
            t=since + timedelta(microseconds=int(bucket) * width_us),
            min=lo,
            max=hi,
            avg=float(mean),
            n=n,
        )
        for bucket, lo, hi, mean, n in rows
    ]
    return width_us / US, series
