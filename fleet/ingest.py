"""Ingest: every gateway's MQTT messages into the fleet database.

:meth:`Ingest.handle` stores one message (topic + payload) in ONE transaction, so a crash
mid-message never leaves half a batch behind:

* ``state`` (retained): the gateway's online flag, version and start time, and its devices
  with their models;
* ``telemetry``: the batch's sequence number (:class:`ReceivedBatch`; a number seen before is
  a duplicate and nothing is stored twice), one :class:`Sample` per reading, the newest
  reading per point (:class:`LatestValue`, replaced only by a newer one) and the devices'
  ``last_seen``;
* ``events``: the same sequence bookkeeping; a "raised" event opens an :class:`Alarm` (one per
  gateway and event id, so a replay never duplicates it), a "cleared" one closes the open
  alarms with its key;
* ``health``: the last report as JSON.

Sequence numbers per gateway and kind start at 1 and have no holes. A number beyond the
highest stored + 1 opens a :class:`Gap` of the missing ones; a later arrival inside an open gap
shrinks it, splits it in two, or closes it (``closed_at``) when it was the last one missing.

Bad input never raises: it is rejected with a reason (:data:`REASONS`), counted, logged at
WARNING with the topic and stored as an :class:`IngestRejection`, and ingest goes on.

:func:`run_ingest` feeds ``handle`` from the broker: a persistent session (fixed client id,
``clean_session=False``) subscribed with QoS 1, so mosquitto keeps what gateways publish while
ingest is briefly away; it reconnects with bounded, jittered exponential back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt
from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.broker import BrokerUrl
from fleet.models import (
    Alarm,
    Base,
    BatchKind,
    Device,
    Gap,
    Gateway,
    IngestRejection,
    LatestValue,
    ReceivedBatch,
    Sample,
    Site,
    utcnow,
)
from gateway import wire

log = logging.getLogger(__name__)

#: Why a message was refused.
REASONS = ("malformed", "version", "schema", "unknown-gateway", "oversized", "topic")
#: The kinds ingest subscribes to and stores.
KINDS = (wire.Kind.STATE, wire.Kind.TELEMETRY, wire.Kind.EVENTS, wire.Kind.HEALTH)
BIGINT_MAX = 2**63 - 1
#: Column widths of fleet.models that a gateway's strings must fit.
SHORT = 64  # device, point, version, model, interlock, cleared_by
KEY = 200  # alarm key
TOPIC_COLUMN = 300
DETAIL_COLUMN = 2000  # what is kept of a rejection's detail
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
#: How long connecting (CONNACK) and subscribing (SUBACK) may take.
MQTT_TIMEOUT_S = 10.0
#: paho logs every failed attempt at ERROR; run_ingest reports an outage itself, once.
PAHO_LOG = logging.getLogger(f"{__name__}.paho")
PAHO_LOG.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Ingest.handle` did with one message."""

    status: Literal["stored", "duplicate", "rejected"]
    kind: str | None = None  # the topic's kind, once the topic was understood
    reason: str | None = None  # one of REASONS when rejected
    detail: str = ""


class Rejected(Exception):
    """A message ingest refuses: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- checking what a gateway sent ------------------------------------------------------------


def decode(topic: str, payload: bytes) -> tuple[str, str, wire.Kind, wire.Payload]:
    """(site, gateway, kind, payload) of a message, or :class:`Rejected` saying why not."""
    try:
        site, gateway, kind = wire.parse_topic(topic)
    except wire.WireError as exc:
        raise Rejected("topic", str(exc)) from None
    model = wire.MODELS.get(kind)
    if model is None:
        raise Rejected("topic", f"topic {topic!r}: the fleet does not ingest {kind.value!r}")
    if len(payload) > wire.MAX_PAYLOAD:
        raise Rejected("oversized", f"{len(payload)} bytes, at most {wire.MAX_PAYLOAD}")
    try:
        message = wire.decode(model, payload)
    except wire.WireError as exc:
        raise Rejected(_refusal(payload), str(exc)) from None
    if b"NaN" in payload or b"Infinity" in payload:  # json accepts them, JSON does not
        _check_finite(message.model_dump(), model.__name__)
    return site, gateway, kind, message


def _refusal(payload: bytes) -> str:
    """Which rule a payload that wire.decode refused broke (only run on refusal)."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "malformed"
    if not isinstance(raw, dict):
        return "malformed"
    return "version" if raw.get("v") != wire.SCHEMA_VERSION else "schema"


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected("schema", f"{where}: {value} is not a number JSON can carry")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")


def when(t: float, what: str) -> datetime:
    """A gateway's wall-clock time (s since the epoch) as an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):
        raise Rejected("schema", f"{what}: {t!r} is not a time") from None


def text(value: str, what: str, limit: int | None = SHORT) -> str:
    """A gateway's string that fits its column (PostgreSQL refuses NUL and overlong text)."""
    if "\x00" in value:
        raise Rejected("schema", f"{what} {value[:40]!r}: contains a NUL character")
    if limit is not None and len(value) > limit:
        raise Rejected(
            "schema", f"{what} {value[:40]!r}…: {len(value)} characters, at most {limit}"
        )
    return value


def sequence(seq: int, what: str) -> int:
    if seq > BIGINT_MAX:
        raise Rejected("schema", f"{what} {seq}: above {BIGINT_MAX}")
    return seq


def number(value: wire.Scalar) -> float | None:
    """A reading's value for plots: numbers and booleans as floats, anything else None."""
    if isinstance(value, bool | int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def printable(value: str, limit: int | None = None) -> str:
    """``value`` safe to store in a text column (for rejections: what was refused)."""
    cleaned = value.replace("\x00", "\\x00")
    return cleaned if limit is None else cleaned[:limit]


# -- writing ---------------------------------------------------------------------------------


def upsert(session: AsyncSession, table: Any) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT, which has ``on_conflict_do_nothing/update``."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


DEVICES = Base.metadata.tables[Device.__tablename__]
SAMPLES = Base.metadata.tables[Sample.__tablename__]
LATEST = Base.metadata.tables[LatestValue.__tablename__]


@dataclass
class Known:
    """Ids and highest sequence numbers ingest has read or written, so that a message costs
    few statements. Correct while this process is the only writer of batches (ingest handles
    one message at a time) and forgotten after any message that failed: its transaction was
    rolled back, and a gateway or device may have been deleted."""

    gateways: dict[tuple[str, str], int] = field(default_factory=dict)
    devices: dict[tuple[int, str], int] = field(default_factory=dict)
    highest: dict[tuple[int, str], int] = field(default_factory=dict)

    def forget(self) -> None:
        self.gateways.clear()
        self.devices.clear()
        self.highest.clear()


@dataclass
class Batch:
    """What storing one message did."""

    duplicate: bool = False
    gaps_opened: int = 0


class Writer:
    """Stores one decoded message of one gateway inside the caller's transaction."""

    def __init__(self, session: AsyncSession, gateway_id: int, now: datetime, known: Known) -> None:
        self.session = session
        self.gateway_id = gateway_id
        self.now = now
        self.known = known

    async def store(self, kind: wire.Kind, message: wire.Payload) -> Batch:
        if isinstance(message, wire.State):
            return await self.state(message)
        if isinstance(message, wire.TelemetryBatch):
            return await self.telemetry(message)
        if isinstance(message, wire.EventBatch):
            return await self.events(message)
        if isinstance(message, wire.Health):
            return await self.health(message)
        raise Rejected("topic", f"the fleet does not ingest {kind.value!r}")

    async def seen(self) -> None:
        await self.session.execute(
            update(Gateway).where(Gateway.id == self.gateway_id).values(last_seen=self.now)
        )

    # -- state and health ----------------------------------------------------------------------

    async def state(self, state: wire.State) -> Batch:
        """The retained state is applied as it comes: the broker keeps one per topic, in order.
        The last will carries no ``at``: then it is the time it arrived."""
        models = {
            text(d, "device"): text(m, f"device {d!r} model") for d, m in state.devices.items()
        }
        await self.session.execute(
            update(Gateway)
            .where(Gateway.id == self.gateway_id)
            .values(
                online=state.status == "online",
                version=text(state.version, "version"),
                started_at=None
                if state.started_at is None
                else when(state.started_at, "started_at"),
                state_at=self.now if state.at is None else when(state.at, "at"),
                last_seen=self.now,
            )
        )
        await self.devices(models, models)
        return Batch()

    async def health(self, health: wire.Health) -> Batch:
        """Only a report newer than the stored one replaces it."""
        at = when(health.at, "at")
        await self.session.execute(
            update(Gateway)
            .where(Gateway.id == self.gateway_id)
            .where(or_(Gateway.health_at.is_(None), Gateway.health_at < at))
            .values(health=health.model_dump(mode="json"), health_at=at)
        )
        await self.seen()
        return Batch()

    # -- devices -------------------------------------------------------------------------------

    async def devices(self, names: Iterable[str], models: Mapping[str, str]) -> dict[str, int]:
        """Device ids by name, creating the devices not seen before (model from ``models``,
        else ""); a model in ``models`` replaces a different stored one."""
        known = self.known.devices
        ids: dict[str, int] = {}
        unknown: set[str] = set()
        for name in names:
            device_id = known.get((self.gateway_id, name))
            if device_id is None or name in models:
                unknown.add(name)
            else:
                ids[name] = device_id
        if not unknown:
            return ids
        rows = await self.session.execute(
            select(Device.name, Device.id, Device.model).where(
                Device.gateway_id == self.gateway_id, Device.name.in_(unknown)
            )
        )
        for name, device_id, model in rows:
            ids[name] = device_id
            if name in models and models[name] != model:
                await self.session.execute(
                    update(Device).where(Device.id == device_id).values(model=models[name])
                )
        new = [
            {"gateway_id": self.gateway_id, "name": name, "model": models.get(name, "")}
            for name in sorted(unknown - ids.keys())
        ]
        if new:
            created = await self.session.execute(
                insert(DEVICES).returning(DEVICES.c.name, DEVICES.c.id), new
            )
            ids.update((name, device_id) for name, device_id in created)
        known.update(((self.gateway_id, name), device_id) for name, device_id in ids.items())
        return ids

    # -- batches -------------------------------------------------------------------------------

    async def receive(self, kind: BatchKind, seq: int, sent_at: datetime, size: int) -> Batch:
        """Record batch ``seq``; a duplicate, or the gaps it opened, or the gap it filled."""
        highest = self.known.highest.get((self.gateway_id, kind.value))
        if highest is None:
            highest = (
                await self.session.scalar(
                    select(func.max(ReceivedBatch.seq)).where(
                        ReceivedBatch.gateway_id == self.gateway_id,
                        ReceivedBatch.kind == kind.value,
                    )
                )
                or 0
            )
        stored = await self.session.execute(
            upsert(self.session, ReceivedBatch)
            .values(
                gateway_id=self.gateway_id,
                kind=kind.value,
                seq=seq,
                received_at=self.now,
                sent_at=sent_at,
                size=size,
            )
            .on_conflict_do_nothing()
            .returning(ReceivedBatch.seq)
        )
        if stored.scalar_one_or_none() is None:
            return Batch(duplicate=True)
        self.known.highest[(self.gateway_id, kind.value)] = max(highest, seq)
        if seq > highest + 1:
            self.session.add(
                Gap(
                    gateway_id=self.gateway_id,
                    kind=kind.value,
                    first=highest + 1,
                    last=seq - 1,
                    detected_at=self.now,
                )
            )
            return Batch(gaps_opened=1)
        if seq < highest:
            await self.fill(kind, seq)
        return Batch()

    async def fill(self, kind: BatchKind, seq: int) -> None:
        """A late batch arrived: shrink, split or close the open gap it was missing from."""
        gap = await self.session.scalar(
            select(Gap).where(
                Gap.gateway_id == self.gateway_id,
                Gap.kind == kind.value,
                Gap.closed_at.is_(None),
                Gap.first <= seq,
                Gap.last >= seq,
            )
        )
        if gap is None:
            return
        if gap.first == gap.last:
            gap.closed_at = self.now
        elif seq == gap.first:
            gap.first += 1
        elif seq == gap.last:
            gap.last -= 1
        else:
            self.session.add(
                Gap(
                    gateway_id=self.gateway_id,
                    kind=kind.value,
                    first=seq + 1,
                    last=gap.last,
                    detected_at=gap.detected_at,
                )
            )
            gap.last = seq - 1

    async def telemetry(self, batch: wire.TelemetryBatch) -> Batch:
        readings = [
            (text(r.d, "device"), text(r.p, f"device {r.d!r} point"), r, when(r.t, "reading t"))
            for r in batch.readings
        ]
        seq = sequence(batch.seq, "seq")
        received = await self.receive(BatchKind.TELEMETRY, seq, when(batch.at, "at"), len(readings))
        await self.seen()
        if received.duplicate or not readings:
            return received
        ids = await self.devices((d for d, _, _, _ in readings), {})
        samples = []
        latest: dict[tuple[int, str], dict[str, Any]] = {}
        last_seen: dict[int, datetime] = {}
        for device, point, reading, at in readings:
            device_id = ids[device]
            row = {"device_id": device_id, "point": point, "at": at, "quality": reading.q}
            samples.append(row | {"value": reading.v, "num": number(reading.v)})
            newest = latest.get((device_id, point))
            if newest is None or newest["at"] <= at:
                latest[(device_id, point)] = row | {"value": reading.v}
            if device_id not in last_seen or last_seen[device_id] < at:
                last_seen[device_id] = at
        await self.session.execute(insert(SAMPLES), samples)
        await self.latest(list(latest.values()))
        await self.session.execute(
            update(DEVICES)
            .where(DEVICES.c.id == bindparam("device"))
            .where(or_(DEVICES.c.last_seen.is_(None), DEVICES.c.last_seen < bindparam("seen")))
            .values(last_seen=bindparam("seen")),
            [{"device": d, "seen": at} for d, at in last_seen.items()],
        )
        return received

    async def latest(self, rows: list[dict[str, Any]]) -> None:
        """Upsert the newest reading per point; a stored one that is newer stays."""
        statement = upsert(self.session, LATEST)
        excluded = statement.excluded
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[LATEST.c.device_id, LATEST.c.point],
                set_={
                    "value": excluded["value"],
                    "quality": excluded["quality"],
                    "at": excluded["at"],
                },
                where=LATEST.c.at < excluded["at"],
            ),
            rows,
        )

    async def events(self, batch: wire.EventBatch) -> Batch:
        checked = [
            (sequence(e.id, "event id"), e, when(e.at, f"event {e.id} at")) for e in batch.events
        ]
        seq = sequence(batch.seq, "seq")
        received = await self.receive(BatchKind.EVENTS, seq, when(batch.at, "at"), len(checked))
        await self.seen()
        if received.duplicate:
            return received
        for event_id, event, at in checked:
            if event.kind == "raised":
                await self.raised(event_id, event, at)
            else:
                await self.cleared(event_id, event, at)
        return received

    async def raised(self, event_id: int, event: wire.Event, at: datetime) -> None:
        await self.session.execute(
            upsert(self.session, Alarm)
            .values(
                gateway_id=self.gateway_id,
                raised_event=event_id,
                key=text(event.key, "alarm key", KEY),
                severity=event.severity,
                interlock=text(event.interlock, "interlock"),
                device=None if event.device is None else text(event.device, "device"),
                message=text(event.message, "message", None),
                values=dict(event.values),
                raised_at=at,
            )
            .on_conflict_do_nothing(index_elements=[Alarm.gateway_id, Alarm.raised_event])
        )

    async def cleared(self, event_id: int, event: wire.Event, at: datetime) -> None:
        """Close the open alarms with this key raised before this event."""
        await self.session.execute(
            update(Alarm)
            .where(
                Alarm.gateway_id == self.gateway_id,
                Alarm.key == text(event.key, "alarm key", KEY),
                Alarm.cleared_at.is_(None),
                Alarm.raised_event < event_id,
            )
            .values(
                cleared_at=at, cleared_by=None if event.by is None else text(event.by, "cleared by")
            )
        )


# -- the ingest ------------------------------------------------------------------------------


class Ingest:
    """Stores gateways' messages; counts what it accepted and refused (:meth:`stats`)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        # One message at a time: gap bookkeeping reads the highest stored sequence number.
        self._lock = asyncio.Lock()
        self._known = Known()
        self._accepted: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._duplicates = 0
        self._gaps_opened = 0

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": dict(self._accepted),
            "rejected": dict(self._rejected),
            "duplicates": self._duplicates,
            "gaps_opened": self._gaps_opened,
        }

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        """Store one MQTT message; never raises for bad input: rejects it with a counted,
        logged and stored (IngestRejection) reason (:data:`REASONS`)."""
        try:
            site, gateway, kind, message = decode(topic, payload)
        except Rejected as rejected:
            return await self._reject(topic, payload, None, rejected)
        try:
            async with self._lock:
                batch = await self._store(site, gateway, kind, message)
        except Rejected as rejected:
            return await self._reject(topic, payload, kind, rejected)
        if batch.duplicate:
            self._duplicates += 1
            return Outcome("duplicate", kind.value)
        self._accepted[kind.value] += 1
        self._gaps_opened += batch.gaps_opened
        return Outcome("stored", kind.value)

    async def _store(
        self, site: str, gateway: str, kind: wire.Kind, message: wire.Payload
    ) -> Batch:
        """In one transaction; once more with nothing cached when the database refused it
        for a row that is gone (a gateway or device deleted since it was cached)."""
        try:
            try:
                return await self._transaction(site, gateway, kind, message)
            except IntegrityError:
                self._known.forget()
                return await self._transaction(site, gateway, kind, message)
        except BaseException as exc:
            self._known.forget()  # what the rolled-back transaction read or wrote
            if isinstance(exc, DataError):  # a value the checks missed, the database refused
                raise Rejected("schema", f"the database refused it: {exc.orig}") from None
            raise

    async def _transaction(
        self, site: str, gateway: str, kind: wire.Kind, message: wire.Payload
    ) -> Batch:
        async with self._sessions.begin() as session:
            gateway_id = self._known.gateways.get((site, gateway))
            if gateway_id is None:
                gateway_id = await session.scalar(
                    select(Gateway.id).join(Site).where(Site.name == site, Gateway.name == gateway)
                )
                if gateway_id is None:
                    raise Rejected(
                        "unknown-gateway", f"gateway {gateway!r} of site {site!r} is not registered"
                    )
                self._known.gateways[(site, gateway)] = gateway_id
            writer = Writer(session, gateway_id, utcnow(), self._known)
            return await writer.store(kind, message)

    async def _reject(
        self, topic: str, payload: bytes, kind: wire.Kind | None, rejected: Rejected
    ) -> Outcome:
        self._rejected[rejected.reason] += 1
        log.warning("ingest rejected %r (%s): %s", topic, rejected.reason, rejected.detail)
        try:
            async with self._sessions.begin() as session:
                session.add(
                    IngestRejection(
                        at=utcnow(),
                        topic=printable(topic, TOPIC_COLUMN),
                        reason=rejected.reason,
                        detail=printable(rejected.detail, DETAIL_COLUMN),
                        size=len(payload),
                    )
                )
        except SQLAlchemyError as exc:
            log.error("could not store the rejection of %r: %s", topic, exc)
        return Outcome(
            "rejected", None if kind is None else kind.value, rejected.reason, rejected.detail
        )


# -- from the broker -------------------------------------------------------------------------


async def run_ingest(
    ingest: Ingest,
    broker: BrokerUrl,
    *,
    client_id: str,
    ready: asyncio.Event | None = None,
    reconnect_min_s: float = RECONNECT_MIN_S,
    reconnect_max_s: float = RECONNECT_MAX_S,
    timeout_s: float = MQTT_TIMEOUT_S,
) -> None:
    """Subscribe (QoS 1) to every gateway's state/telemetry/events/health and feed
    ``ingest.handle``; reconnect with bounded back-off forever until cancelled; sets
    ``ready`` after the first SUBACK. A lost connection is logged once, and once more when
    it is back."""
    ceiling = reconnect_min_s
    lost_at: float | None = None
    while True:
        try:
            async with aiomqtt.Client(
                broker.host,
                broker.port,
                identifier=client_id,
                clean_session=False,  # the broker keeps our QoS 1 messages while we are away
                keepalive=30,
                timeout=timeout_s,
                logger=PAHO_LOG,
                **broker.client_options(),
            ) as client:
                await client.subscribe([(wire.subscription(kind), 1) for kind in KINDS])
                if lost_at is not None:
                    log.info("ingest: back on %s after %.1f s", broker, time.monotonic() - lost_at)
                    lost_at = None
                ceiling = reconnect_min_s
                if ready is not None:
                    ready.set()
                async for message in client.messages:
                    await feed(ingest, message)
        except aiomqtt.MqttError as exc:
            if lost_at is None:
                lost_at = time.monotonic()
                log.warning("ingest: MQTT broker %s unavailable (%s); reconnecting", broker, exc)
        await asyncio.sleep(random.uniform(ceiling / 2, ceiling))  # noqa: S311 (jitter)
        ceiling = min(reconnect_max_s, ceiling * 2)


async def feed(ingest: Ingest, message: aiomqtt.Message) -> None:
    """One message into ingest. A failure that is not the message's (the database is down)
    is logged and ingest goes on with the next: the broker has its acknowledgement already
    (aiomqtt 2 acknowledges on receipt), so the message is lost, and its batch shows as a gap
    until the gateway's outbox sends it again."""
    payload = message.payload
    data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
    try:
        await ingest.handle(message.topic.value, data)
    except Exception:
        log.exception("ingest could not store a message on %r", message.topic.value)
