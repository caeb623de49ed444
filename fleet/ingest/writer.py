"""The store: one decoded gateway message into the database, inside the caller's transaction
(:class:`fleet.ingest.ingest.Ingest` owns the transaction, one per message).

* ``state`` (retained): the gateway's online flag, version and start time, and its devices
  with their models;
* ``telemetry``: the batch's sequence number (:mod:`fleet.ingest.sequences`: a number seen
  before is a duplicate and nothing is stored twice), one :class:`Sample` per reading, the
  newest reading per point (:class:`LatestValue`, replaced only by a newer one) and the
  devices' ``last_seen``;
* ``events``: the same sequence bookkeeping; a "raised" event opens an :class:`Alarm` (one per
  gateway, event id and time, so a replay never duplicates it), a "cleared" one closes the
  open alarms with its key raised at or before it;
* ``health``: the last report as JSON, unless the stored one is newer.

Every value goes through :mod:`fleet.ingest.columns` first, which refuses what the database
would (:class:`~fleet.errors.Rejected`, "schema").
Written for throughput: a telemetry batch is five statements (its number, the gateway's
``last_seen``, the samples and the latest values as executemany, the devices' ``last_seen``),
with ids and the highest sequence numbers remembered between messages
(:class:`~fleet.ingest.known.Known`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ColumnElement

from fleet.errors import Rejected
from fleet.ingest.checks import Limits
from fleet.ingest.columns import KEY, happened, number, sequence, text, when
from fleet.ingest.known import Known
from fleet.ingest.sequences import Batch, Sequences
from fleet.ingest.upsert import upsert
from fleet.models import Alarm, Base, BatchKind, Device, Gateway, LatestValue, Sample
from gateway import wire

DEVICES = Base.metadata.tables[Device.__tablename__]
SAMPLES = Base.metadata.tables[Sample.__tablename__]
LATEST = Base.metadata.tables[LatestValue.__tablename__]


class Writer:
    """Stores one decoded message of one gateway inside the caller's transaction."""

    def __init__(
        self,
        session: AsyncSession,
        gateway_id: int,
        now: datetime,
        known: Known,
        limits: Limits | None = None,
    ) -> None:
        self.session = session
        self.gateway_id = gateway_id
        self.now = now
        self.known = known
        self.limits = Limits() if limits is None else limits
        self.sequences = Sequences(session, gateway_id, now, known, self.limits.max_sequence_step)

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

    def time(self, t: float, what: str) -> datetime:
        """A gateway's time of something that happened (:func:`fleet.ingest.columns.happened`)."""
        return happened(t, what, self.now, self.limits.max_ahead_s, self.limits.max_age_s)

    async def seen(self) -> None:
        await self.session.execute(
            update(Gateway).where(Gateway.id == self.gateway_id).values(last_seen=self.now)
        )

    # -- state and health ----------------------------------------------------------------------

    async def state(self, state: wire.State) -> Batch:
        """The retained state is applied as it comes: the broker keeps one per topic, in order.
        The last will carries no ``at``: it counts from when it first arrived, not from each
        time the broker hands the retained will out again (at every subscription), and it
        is not a sign of life: ``last_seen`` stays as it was."""
        models = {
            text(d, "device"): text(m, f"device {d!r} model") for d, m in state.devices.items()
        }
        started = None if state.started_at is None else when(state.started_at, "started_at")
        seen: dict[str, ColumnElement[datetime] | datetime] = {}
        if state.at is not None:
            state_at: datetime | ColumnElement[datetime] = self.time(state.at, "at")
            earlier = or_(Gateway.last_seen.is_(None), Gateway.last_seen < self.now)
            seen["last_seen"] = case((earlier, self.now), else_=Gateway.last_seen)
        else:
            went_offline = or_(Gateway.online.is_(True), Gateway.state_at.is_(None))
            state_at = case((went_offline, self.now), else_=Gateway.state_at)
        await self.session.execute(
            update(Gateway)
            .where(Gateway.id == self.gateway_id)
            .values(
                online=state.status == "online",
                version=text(state.version, "version"),
                started_at=started,
                state_at=state_at,
                **seen,
            )
        )
        await self.devices(models, models)
        return Batch()

    async def health(self, health: wire.Health) -> Batch:
        """Only a report newer than the stored one replaces it."""
        at = self.time(health.at, "at")
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
            await self.room_for_devices(len(new))
            created = await self.session.execute(
                insert(DEVICES).returning(DEVICES.c.name, DEVICES.c.id), new
            )
            ids.update((name, device_id) for name, device_id in created)
        known.update(((self.gateway_id, name), device_id) for name, device_id in ids.items())
        return ids

    async def room_for_devices(self, more: int) -> None:
        """``limit`` when ``more`` new devices would take the gateway beyond its maximum."""
        stored = await self.session.scalar(
            select(func.count(Device.id)).where(Device.gateway_id == self.gateway_id)
        )
        most = self.limits.max_devices
        if (stored or 0) + more > most:
            raise Rejected(
                "limit",
                f"{more} new devices on top of the gateway's {stored}: at most {most} per gateway",
            )

    async def room_for_points(self, pairs: set[tuple[int, str]]) -> None:
        """``limit`` when points not seen before would take the gateway beyond its maximum
        (the gateway's points are read once, then remembered)."""
        points = self.known.points.get(self.gateway_id)
        if points is not None and pairs <= points:
            return
        if points is None:
            rows = await self.session.execute(
                select(LatestValue.device_id, LatestValue.point)
                .join(Device)
                .where(Device.gateway_id == self.gateway_id)
            )
            points = self.known.points[self.gateway_id] = {(d, p) for d, p in rows}
        new = pairs - points
        most = self.limits.max_points
        if len(points) + len(new) > most:
            raise Rejected(
                "limit",
                f"{len(new)} new points on top of the gateway's {len(points)}: "
                f"at most {most} per gateway",
            )
        points |= new

    async def telemetry(self, batch: wire.TelemetryBatch) -> Batch:
        readings = [
            (
                text(r.d, "device"),
                text(r.p, f"device {r.d!r} point"),
                r,
                self.time(r.t, "reading t"),
            )
            for r in batch.readings
        ]
        seq = sequence(batch.seq, "seq")
        received = await self.sequences.receive(
            BatchKind.TELEMETRY, seq, self.time(batch.at, "at"), len(readings)
        )
        await self.seen()
        if received.duplicate or not readings:
            return received
        ids = await self.devices((d for d, _, _, _ in readings), {})
        await self.room_for_points({(ids[d], p) for d, p, _, _ in readings})
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
            (sequence(e.id, "event id"), e, self.time(e.at, f"event {e.id} at"))
            for e in batch.events
        ]
        seq = sequence(batch.seq, "seq")
        received = await self.sequences.receive(
            BatchKind.EVENTS, seq, self.time(batch.at, "at"), len(checked)
        )
        await self.seen()
        if received.duplicate:
            return received
        for event_id, event, at in checked:
            if event.kind == "raised":
                await self.raised(event_id, event, at)
            elif event.kind == "updated":
                await self.updated(event, at)
            else:
                await self.cleared(event, at)
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
                suppressed_by=_suppressed_by(event),
                count=event.count,
            )
            .on_conflict_do_nothing(
                index_elements=[Alarm.gateway_id, Alarm.raised_event, Alarm.raised_at]
            )
        )

    async def updated(self, event: wire.Event, at: datetime) -> None:
        """Change the open alarm with this key raised at or before this event in place."""
        await self.session.execute(
            update(Alarm)
            .where(
                Alarm.gateway_id == self.gateway_id,
                Alarm.key == text(event.key, "alarm key", KEY),
                Alarm.cleared_at.is_(None),
                Alarm.raised_at <= at,
            )
            .values(
                message=text(event.message, "message", None),
                values=dict(event.values),
                suppressed_by=_suppressed_by(event),
                count=event.count,
            )
        )

    async def cleared(self, event: wire.Event, at: datetime) -> None:
        """Close the open alarms with this key raised at or before this event (by time: a
        restarted journal numbers its events from 1 again)."""
        await self.session.execute(
            update(Alarm)
            .where(
                Alarm.gateway_id == self.gateway_id,
                Alarm.key == text(event.key, "alarm key", KEY),
                Alarm.cleared_at.is_(None),
                Alarm.raised_at <= at,
            )
            .values(
                cleared_at=at, cleared_by=None if event.by is None else text(event.by, "cleared by")
            )
        )


def _suppressed_by(event: wire.Event) -> str | None:
    return None if event.suppressed_by is None else text(event.suppressed_by, "suppressed by", KEY)
