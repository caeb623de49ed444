"""The fleet database: one SQLAlchemy 2 declarative schema for SQLite and PostgreSQL.

Timestamps are set in Python as aware UTC datetimes (:func:`utcnow`), never by the database:
SQLite would hand back naive second-resolution values. Alembic migrations in
``fleet/migrations`` create exactly this schema; the tests compare the two.

Ingest keeps, per gateway and batch kind (telemetry, events), every sequence number it
stored (:class:`ReceivedBatch`): a duplicate is refused by the primary key, and a number
beyond the next expected one opens a :class:`Gap` that later arrivals close. A gateway
replaced under the same name starts again at 1: its numbers go in the next ``epoch``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

#: A BIGINT primary key on PostgreSQL that is still SQLite's autoincrementing ROWID.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the fleet stores aware UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Role(StrEnum):
    """Ordered: each role may do what the ones before it may."""

    VIEWER = "viewer"  # reads everything
    MAINTAINER = "maintainer"  # + acknowledges alarms
    OPERATOR = "operator"  # + sites, gateways, releases, rollouts, config
    ADMIN = "admin"  # + users and API tokens

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class BatchKind(StrEnum):
    TELEMETRY = "telemetry"
    EVENTS = "events"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, dict[str, Any]: JSON}


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(48), unique=True)  # wire.Name
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: when rollouts may update it: "HH:MM-HH:MM" in ``timezone`` ("" any time)
    maintenance_window: Mapped[str] = mapped_column(String(11), default="", server_default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")

    gateways: Mapped[list[Gateway]] = relationship(back_populates="site")


class Gateway(Base):
    """A registered gateway. Ingest refuses messages from a gateway that is not registered."""

    __tablename__ = "gateways"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(48))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # from the retained state message
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    state_at: Mapped[datetime | None] = mapped_column(default=None)
    # any accepted message
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    # the last health report (wire.Health as JSON) and when it came
    health: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    health_at: Mapped[datetime | None] = mapped_column(default=None)

    site: Mapped[Site] = relationship(back_populates="gateways")
    devices: Mapped[list[Device]] = relationship(back_populates="gateway")


class Device(Base):
    """A device behind a gateway; created by ingest on its first reading or state message."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("gateway_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64), default="")  # profile model, e.g. EVSE-HEC
    last_seen: Mapped[datetime | None] = mapped_column(default=None)

    gateway: Mapped[Gateway] = relationship(back_populates="devices")


class LatestValue(Base):
    """The newest reading of each point (by the gateway's read time)."""

    __tablename__ = "latest_values"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    point: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    quality: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column()


class Sample(Base):
    """Telemetry history: one row per reading. Numeric values also in ``num`` for plots.

    On PostgreSQL the table is partitioned by day on ``at`` (fleet.timeseries.partitions), so
    its primary key is (id, at); on SQLite it is a plain table whose ``id`` alone is the key.
    ``id`` grows in insertion order: the rollups (fleet.timeseries.rollups) follow it."""

    __tablename__ = "samples"
    __table_args__ = (
        Index("ix_samples_device_point_at", "device_id", "point", "at"),
        {"postgresql_partition_by": "RANGE (at)"},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    point: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    num: Mapped[float | None] = mapped_column(Float, default=None)
    quality: Mapped[str] = mapped_column(String(8))


class ReceivedBatch(Base):
    """Every stored batch's sequence number; the primary key refuses a duplicate. ``epoch``
    counts the gateway's sequence restarts (a new outbox numbering from 1 again)."""

    __tablename__ = "received_batches"

    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # BatchKind
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, default=0, server_default="0")
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    received_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime] = mapped_column()  # the batch's own ``at``
    size: Mapped[int] = mapped_column(Integer)  # readings or events in it


class Gap(Base):
    """Sequence numbers ``first..last`` of one gateway's batches that have not arrived (yet)."""

    __tablename__ = "gaps"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first: Mapped[int] = mapped_column(BigInteger)
    last: Mapped[int] = mapped_column(BigInteger)
    detected_at: Mapped[datetime] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    #: when the fleet last asked the gateway for these batches (gap repair)
    asked_at: Mapped[datetime | None] = mapped_column(default=None)
    #: when the gateway said it no longer keeps them: closed, the batches lost for good
    lost_at: Mapped[datetime | None] = mapped_column(default=None)


class Alarm(Base):
    """An alarm a gateway raised (wire.Event kind "raised"), changed in place by "updated"
    events (message, values, suppression, count), closed by its "cleared" event and
    acknowledged by a person (maintainer or above). A raise is one alarm per event id and
    time: a replay is refused, a restarted journal's reused id (at another time) is not."""

    __tablename__ = "alarms"
    __table_args__ = (
        UniqueConstraint("gateway_id", "raised_event", "raised_at"),
        Index("ix_alarms_open", "gateway_id", "key", "cleared_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    raised_event: Mapped[int] = mapped_column(BigInteger)  # wire.Event.id of the raise
    key: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(8))
    interlock: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(64), default=None)
    message: Mapped[str] = mapped_column(Text)
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raised_at: Mapped[datetime] = mapped_column()
    cleared_at: Mapped[datetime | None] = mapped_column(default=None)
    cleared_by: Mapped[str | None] = mapped_column(String(64), default=None)
    acked_at: Mapped[datetime | None] = mapped_column(default=None)
    acked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    #: The key of the gateway's alarm this one only follows from (shown under it).
    suppressed_by: Mapped[str | None] = mapped_column(String(200), default=None)
    #: How often it came back while held as chattering.
    count: Mapped[int] = mapped_column(default=1)
    #: The gateway's time of the "updated" event applied last (None: as raised).
    updated_at: Mapped[datetime | None] = mapped_column(default=None)


class AlarmShelf(Base):
    """A person took one alarm of a gateway (its key: raises of it again included) off the
    alarm list until ``until``, with a reason (maintainer or above). It ends by itself at
    ``until``, or earlier by hand (``unshelved_at``/``unshelved_by``)."""

    __tablename__ = "alarm_shelves"
    __table_args__ = (Index("ix_alarm_shelves_key", "gateway_id", "key", "until"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    shelved_at: Mapped[datetime] = mapped_column()
    shelved_by: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(Text)
    unshelved_at: Mapped[datetime | None] = mapped_column(default=None)
    unshelved_by: Mapped[str | None] = mapped_column(String(64), default=None)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # Role
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: the language the screens speak to this user (a tag of fleet.i18n.LANGUAGES); None:
    #: the browser's Accept-Language
    locale: Mapped[str | None] = mapped_column(String(16), default=None)


class LoginSession(Base):
    """A browser login: the cookie holds the secret, the table only its SHA-256."""

    __tablename__ = "login_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class ApiToken(Base):
    """A bearer token for scripts; acts with its own role, never above its owner's."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)  # None: never


class AuditEntry(Base):
    """Every change a person or token made: who, what, to what, and the details."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))  # "user:NAME", "token:NAME@USER", "cli"
    action: Mapped[str] = mapped_column(String(64))  # e.g. "alarm.ack", "user.create"
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IngestRejection(Base):
    """A message ingest refused, with the reason (also counted in memory and logged)."""

    __tablename__ = "ingest_rejections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    topic: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(String(32))  # malformed, version, unknown-gateway, ...
    detail: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
