"""The rollup tables: per (device, point) and minute or hour, the numeric samples' min, max,
sum and count (so means combine) and the last value; and how far the rollups have read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet.models import Base


class _Rollup:
    """One interval of one point: ``at`` is its start (aligned to the minute or the hour)."""

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    point: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
    sum: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(BigInteger)
    #: the value with the latest reading time in the interval (the newest insert on a tie)
    last: Mapped[float] = mapped_column(Float)
    last_at: Mapped[datetime] = mapped_column()


#: what a history plot reads, kept in the primary key's index on PostgreSQL: 30 days of a
#: point are then read from the index alone (rows written minute by minute for every point
#: lie scattered over the table, one page each)
COVERED = ["min", "max", "sum", "count"]


class MinuteRollup(_Rollup, Base):
    __tablename__ = "rollups_minute"
    __table_args__ = (
        PrimaryKeyConstraint("device_id", "point", "at", postgresql_include=COVERED),
        Index("ix_rollups_minute_at", "at"),
    )


class HourRollup(_Rollup, Base):
    __tablename__ = "rollups_hour"
    __table_args__ = (
        PrimaryKeyConstraint("device_id", "point", "at", postgresql_include=COVERED),
        Index("ix_rollups_hour_at", "at"),
    )


class RollupProgress(Base):
    """How far the rollups have read ``samples``, by sample id (insertion order, so a reading
    that arrives late is still rolled up). ``candidate``: the highest id seen by an earlier
    run, rolled up once every transaction that could still hold a lower id has ended
    (PostgreSQL: ``candidate_xmax``, a transaction id, is below the oldest running one)."""

    __tablename__ = "rollup_progress"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    upto: Mapped[int] = mapped_column(BigInteger, default=0)
    candidate: Mapped[int | None] = mapped_column(BigInteger, default=None)
    candidate_xmax: Mapped[int | None] = mapped_column(BigInteger, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(default=None)
