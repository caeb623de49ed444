"""Ingest's own tables, beside the core ones it writes (:mod:`fleet.models`).

* :class:`PointMapRecord`: every compact-telemetry point map a gateway sent inline
  (:mod:`gateway.wire.compact`), so that any fleet worker, restarted or not, reads a batch
  that names a map it has not seen itself.
* :class:`AlarmEventRecord`: the events of gateways' alarms (raised, updated, cleared), kept
  so that an alarm follows its own events by their time whatever order they arrive in: a
  raise that arrives after its clear is stored cleared, an update older than the one applied
  changes nothing (:mod:`fleet.ingest.alarms`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet.models import Base


class PointMapRecord(Base):
    """A gateway's point map: its id (a hash of its content) and its devices, each with its
    points in order (``[[device, [point, …]], …]``)."""

    __tablename__ = "point_maps"

    map_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    devices: Mapped[list[Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column()


class AlarmEventRecord(Base):
    """One event of a gateway's alarm, by the gateway's time (``at``); a replay (the same
    kind, event id and time) is stored once."""

    __tablename__ = "alarm_events"
    __table_args__ = (
        UniqueConstraint("gateway_id", "kind", "event_id", "at"),
        Index("ix_alarm_events_key_at", "gateway_id", "key", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)  # wire.Event.id
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8))  # "raised", "updated" or "cleared"
    at: Mapped[datetime] = mapped_column()
    by: Mapped[str | None] = mapped_column(String(64), default=None)  # who cleared it
    message: Mapped[str] = mapped_column(Text, default="")
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suppressed_by: Mapped[str | None] = mapped_column(String(200), default=None)
    count: Mapped[int] = mapped_column(default=1)
