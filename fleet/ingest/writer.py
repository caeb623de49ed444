"""The store: decoded gateway messages into the database, inside the caller's transaction
(:class:`fleet.ingest.ingest.Ingest` owns it: several messages per transaction, the
gateways they come from locked first, :mod:`fleet.ingest.locks`).

* ``state`` (retained): the gateway's online flag, version and start time, and its devices
  with their models;
* ``telemetry``: the batch's sequence number (:mod:`fleet.ingest.sequences`: a number seen
  before is a duplicate and nothing is stored twice), one :class:`Sample` per reading, the
  newest reading per point (:class:`LatestValue`, replaced only by a newer one: a batch
  arriving late never takes a point back in time) and the devices' ``last_seen``;
* ``events``: the same sequence bookkeeping; the alarms by their events' own times
  (:mod:`fleet.ingest.alarms`);
* ``health``: the last report as JSON, unless the stored one is newer.

Every value goes through :mod:`fleet.ingest.columns` first, which refuses what the database
would (:class:`~fleet.errors.Rejected`, "schema").
Written for throughput: a telemetry batch costs no statement of its own in the common case
(its devices known, its number beyond the highest of its gateway's numbering, read once per
transaction: :mod:`fleet.ingest.sequences`); its samples, latest values and last-seen times
are gathered with those of the transaction's other batches and written at its end
(:meth:`Writer.flush`): on PostgreSQL the samples in one ``COPY`` and the latest values and
last readings in one statement each (:mod:`fleet.ingest.bulk`), on SQLite as executemany.
Device ids are remembered between transactions (:class:`~fleet.ingest.known.Known`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ColumnElement

from fleet.errors import Rejected
from fleet.ingest import bulk
from fleet.ingest.alarms import Alarms
from fleet.ingest.checks import Limits
from fleet.ingest.columns import happened, number, sequence, text, when
from fleet.ingest.known import Known
from fleet.ingest.sequences import Batch, Sequences
from fleet.ingest.upsert import upsert
from fleet.models import Base, BatchKind, Device, Gateway, LatestValue, Sample
from gateway import wire

DEVICES = Base.metadata.tables[Device.__tablename__]
SAMPLES = Base.metadata.tables[Sample.__tablename__]
LATEST = Base.metadata.tables[LatestValue.__tablename__]
#: The columns ingest writes of ``samples`` (its id comes from the database).
SAMPLE_COLUMNS = ("device_id", "point", "at", "value", "num", "quality")
#: PostgreSQL: the newest readings of many points in one statement, a stored one that is
#: newer kept (only forward in reading time); the devices' last readings likewise.
_LATEST_SQL = """
INSERT INTO latest_values (device_id, point, value, quality, at)
SELECT * FROM unnest($1::integer[], $2::varchar[], $3::json[], $4::varchar[], $5::timestamptz[])
ON CONFLICT (device_id, point) DO UPDATE
SET value = excluded.value, quality = excluded.quality, at = excluded.at
WHERE latest_values.at < excluded.at
"""
_SEEN_SQL = """
UPDATE devices SET last_seen = seen.at
FROM unnest($1::integer[], $2::timestamptz[]) AS seen(id, at)
WHERE devices.id = seen.id
AND (devices.last_seen IS NULL OR devices.last_seen < seen.at)
"""


class Writer:
    """Stores decoded messages of any gateways inside one transaction, which holds the
    gateways' locks; :meth:`flush` writes what was gathered, before the commit."""

    def __init__(
        self,
        session: AsyncSession,
        now: datetime,
        known: Known,
        limits: Limits | None = None,
    ) -> None:
        self.session = session
        self.now = now
        self.known = known
        self.limits = Limits() if limits is None else limits
        self.sequences = Sequences(session, now, self.limits.max_sequence_step)
        self.samples: list[tuple[int, str, datetime, Any, float | None, str]] = []
        #: (device id, point) -> the newest reading's row, of every batch in the transaction
        self.latest: dict[tuple[int, str], dict[str, Any]] = {}
        self.devices_seen: dict[int, datetime] = {}
        self.gateways_seen: set[int] = set()

    async def store(self, gateway_id: int, kind: wire.Kind, message: wire.Payload) -> Batch:
        if isinstance(message, wire.State):
            return await self.state(gateway_id, message)
        if isinstance(message, wire.TelemetryBatch):
            return await self.telemetry(gateway_id, message)
        if isinstance(message, wire.EventBatch):
            return await self.events(gateway_id, message)
        if isinstance(message, wire.Health):
            return await self.health(gateway_id, message)
        raise Rejected("topic", f"the fleet does not ingest {kind.value!r}")

    def time(self, t: float, what: str) -> datetime:
        """A gateway's time of something that happened (:func:`fleet.ingest.columns.happened`)."""
        return happened(t, what, self.now, self.limits.max_ahead_s, self.limits.max_age_s)

    # -- state and health ----------------------------------------------------------------------

    async def state(self, gateway_id: int, state: wire.State) -> Batch:
        """The retained state is applied as it comes: the broker keeps one per topic, in order.
        The last will carries no ``at``: it counts from when it first arrived, not from each
        time the broker hands the retained will out again (at every subscription), and it
        is not a sign of life: ``last_seen`` stays as it was."""
        models = {
            text(d, "device"): text(m, f"device {d!r} model") for d, m in state.devices.items()
        }
        started = None if state.started_at is None else when(state.started_at, "started_at")
        version = text(state.version, "version")
        seen: dict[str, ColumnElement[datetime] | datetime] = {}
        if state.at is not None:
            state_at: datetime | ColumnElement[datetime] = self.time(state.at, "at")
            earlier = or_(Gateway.last_seen.is_(None), Gateway.last_seen < self.now)
            seen["last_seen"] = case((earlier, self.now), else_=Gateway.last_seen)
        else:
            went_offline = or_(Gateway.online.is_(True), Gateway.state_at.is_(None))
            state_at = case((went_offline, self.now), else_=Gateway.state_at)
        await self.devices(gateway_id, models, models)
        await self.session.execute(
            update(Gateway)
            .where(Gateway.id == gateway_id)
            .values(
                online=state.status == "online",
                version=version,
                started_at=started,
                state_at=state_at,
                **seen,
            )
        )
        return Batch()

    async def health(self, gateway_id: int, health: wire.Health) -> Batch:
        """Only a report newer than the stored one replaces it."""
        at = self.time(health.at, "at")
        await self.session.execute(
            update(Gateway)
            .where(Gateway.id == gateway_id)
            .where(or_(Gateway.health_at.is_(None), Gateway.health_at < at))
            .values(health=health.model_dump(mode="json"), health_at=at)
        )
        self.gateways_seen.add(gateway_id)
        return Batch()

    # -- devices -------------------------------------------------------------------------------

    async def devices(
        self, gateway_id: int, names: Iterable[str], models: Mapping[str, str]
    ) -> dict[str, int]:
        """Device ids by name, creating the devices not seen before (model from ``models``,
        else ""); a model in ``models`` replaces a different stored one."""
        known = self.known.devices
        ids: dict[str, int] = {}
        unknown: set[str] = set()
        for name in names:
            device_id = known.get((gateway_id, name))
            if device_id is None or name in models:
                unknown.add(name)
            else:
                ids[name] = device_id
        if not unknown:
            return ids
        rows = await self.session.execute(
            select(Device.name, Device.id, Device.model).where(
                Device.gateway_id == gateway_id, Device.name.in_(unknown)
            )
        )
        changed = []
        for name, device_id, model in rows:
            ids[name] = device_id
            if name in models and models[name] != model:
                changed.append({"device": device_id, "model": models[name]})
        new = [
            {"gateway_id": gateway_id, "name": name, "model": models.get(name, "")}
            for name in sorted(unknown - ids.keys())
        ]
        if new:
            await self.room_for_devices(gateway_id, len(new))
        if changed:
            await self.session.execute(
                update(DEVICES)
                .where(DEVICES.c.id == bindparam("device"))
                .values(model=bindparam("model")),
                changed,
            )
        if new:
            created = await self.session.execute(
                insert(DEVICES).returning(DEVICES.c.name, DEVICES.c.id), new
            )
            ids.update((name, device_id) for name, device_id in created)
        known.update(((gateway_id, name), device_id) for name, device_id in ids.items())
        return ids

    async def room_for_devices(self, gateway_id: int, more: int) -> None:
        """``limit`` when ``more`` new devices would take the gateway beyond its maximum."""
        stored = await self.session.scalar(
            select(func.count(Device.id)).where(Device.gateway_id == gateway_id)
        )
        most = self.limits.max_devices
        if (stored or 0) + more > most:
            raise Rejected(
                "limit",
                f"{more} new devices on top of the gateway's {stored}: at most {most} per gateway",
            )

    async def room_for_points(self, gateway_id: int, pairs: set[tuple[int, str]]) -> None:
        """``limit`` when points not seen before would take the gateway beyond its maximum.
        The gateway's points are remembered, and read again (under the gateway's lock)
        whenever points not remembered come: another worker may have stored some."""
        points = self.known.points.get(gateway_id)
        if points is not None and pairs <= points:
            return
        rows = await self.session.execute(
            select(LatestValue.device_id, LatestValue.point)
            .join(Device)
            .where(Device.gateway_id == gateway_id)
        )
        points = self.known.points[gateway_id] = (points or set()) | {(d, p) for d, p in rows}
        new = pairs - points
        most = self.limits.max_points
        if len(points) + len(new) > most:
            raise Rejected(
                "limit",
                f"{len(new)} new points on top of the gateway's {len(points)}: "
                f"at most {most} per gateway",
            )
        points |= new

    # -- telemetry -----------------------------------------------------------------------------

    async def telemetry(self, gateway_id: int, batch: wire.TelemetryBatch) -> Batch:
        # each name and time checked once (a batch's readings share a few of each)
        devices = {d: text(d, "device") for d in {r.d for r in batch.readings}}
        points = {
            (d, p): text(p, f"device {d!r} point") for d, p in {(r.d, r.p) for r in batch.readings}
        }
        times = {t: self.time(t, "reading t") for t in {r.t for r in batch.readings}}
        readings = [(devices[r.d], points[(r.d, r.p)], r, times[r.t]) for r in batch.readings]
        seq = sequence(batch.seq, "seq")
        sent_at = self.time(batch.at, "at")
        ids = await self.devices(gateway_id, {d for d, _, _, _ in readings}, {})
        await self.room_for_points(gateway_id, {(ids[d], p) for d, p, _, _ in readings})
        received = await self.sequences.receive(
            gateway_id, BatchKind.TELEMETRY, seq, sent_at, len(readings)
        )
        self.gateways_seen.add(gateway_id)
        if received.duplicate:
            return received
        samples, latest, seen = self.samples, self.latest, self.devices_seen
        for device, point, reading, at in readings:
            device_id = ids[device]
            value = reading.v
            samples.append((device_id, point, at, value, number(value), reading.q))
            newest = latest.get((device_id, point))
            if newest is None or newest["at"] <= at:
                latest[(device_id, point)] = {
                    "device_id": device_id, "point": point, "value": value,
                    "quality": reading.q, "at": at,
                }  # fmt: skip
            if seen.get(device_id, at) <= at:
                seen[device_id] = at
        return received

    async def flush(self) -> None:
        """Write what the transaction's telemetry gathered: samples, latest values and the
        devices' and gateways' ``last_seen`` (in the order of their keys: two transactions
        never wait for each other's rows in a circle)."""
        session = self.session
        await self.sequences.flush()
        latest = sorted(self.latest.values(), key=lambda row: (row["device_id"], row["point"]))
        seen = sorted(self.devices_seen.items())
        if bulk.postgresql(session):
            await self._flush_postgresql(latest, seen)
        else:
            await self._flush_sqlalchemy(latest, seen)
        if self.gateways_seen:
            await session.execute(
                update(Gateway)
                .where(Gateway.id.in_(sorted(self.gateways_seen)))
                .values(last_seen=self.now)
            )
        self.samples, self.latest, self.devices_seen = [], {}, {}
        self.gateways_seen = set()

    async def _flush_postgresql(
        self, latest: list[dict[str, Any]], seen: list[tuple[int, datetime]]
    ) -> None:
        """COPY for the samples, one statement each for latest values and last readings."""
        json_text = bulk.json_text
        if self.samples:
            rows = [(d, p, at, json_text(v), n, q) for d, p, at, v, n, q in self.samples]
            await bulk.copy(self.session, SAMPLES, SAMPLE_COLUMNS, rows)
        driver = await bulk.driver(self.session)
        if latest:
            await driver.execute(
                _LATEST_SQL,
                [r["device_id"] for r in latest],
                [r["point"] for r in latest],
                [json_text(r["value"]) for r in latest],
                [r["quality"] for r in latest],
                [r["at"] for r in latest],
            )
        if seen:
            await driver.execute(_SEEN_SQL, [d for d, _ in seen], [at for _, at in seen])

    async def _flush_sqlalchemy(
        self, latest: list[dict[str, Any]], seen: list[tuple[int, datetime]]
    ) -> None:
        session = self.session
        if self.samples:
            await session.execute(
                insert(SAMPLES),
                [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in self.samples],
            )
        if latest:
            statement = upsert(session, LATEST)
            excluded = statement.excluded
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[LATEST.c.device_id, LATEST.c.point],
                    set_={
                        "value": excluded["value"],
                        "quality": excluded["quality"],
                        "at": excluded["at"],
                    },
                    where=LATEST.c.at < excluded["at"],  # only forward in reading time
                ),
                latest,
            )
        if seen:
            await session.execute(
                update(DEVICES)
                .where(DEVICES.c.id == bindparam("device"))
                .where(or_(DEVICES.c.last_seen.is_(None), DEVICES.c.last_seen < bindparam("seen")))
                .values(last_seen=bindparam("seen")),
                [{"device": d, "seen": at} for d, at in seen],
            )

    # -- events --------------------------------------------------------------------------------

    async def events(self, gateway_id: int, batch: wire.EventBatch) -> Batch:
        checked = [
            (sequence(e.id, "event id"), e, self.time(e.at, f"event {e.id} at"))
            for e in batch.events
        ]
        seq = sequence(batch.seq, "seq")
        received = await self.sequences.receive(
            gateway_id, BatchKind.EVENTS, seq, self.time(batch.at, "at"), len(checked)
        )
        self.gateways_seen.add(gateway_id)
        if received.duplicate:
            return received
        alarms = Alarms(self.session, gateway_id)
        for event_id, event, at in checked:
            await alarms.receive(event_id, event, at)
        return received
