"""The store: one decoded gateway message into the database, inside the caller's transaction
(fleet.ingest.pipeline owns the transaction, one per message, and everything before and after it).

* ``state`` (retained): the gateway's online flag, version and start time, and its devices
  with their models;
* ``telemetry``: the batch's sequence number (:class:`ReceivedBatch`; a number seen before is
  a duplicate and nothing is stored twice), one :class:`Sample` per reading, the newest
  reading per point (:class:`LatestValue`, replaced only by a newer one) and the devices'
  ``last_seen``;
* ``events``: the same sequence bookkeeping; a "raised" event opens an :class:`Alarm` (one per
  gateway, event id and time, so a replay never duplicates it), a "cleared" one closes the
  open alarms with its key raised at or before it;
* ``health``: the last report as JSON, unless the stored one is newer.

Sequence numbers per gateway and kind start at 1 and have no holes. A number beyond the
highest stored + 1 opens a :class:`Gap` of the missing ones; a later arrival inside an open gap
shrinks it, splits it in two, or closes it (``closed_at``) when it was the last one missing.

A gateway replaced or re-imaged under the same name (a new outbox) starts again at 1. A number
already stored with another ``sent_at`` or size is such a restart, not a duplicate: logged at
WARNING, the old numbering's open gaps are closed and the batch starts the next ``epoch`` (its
gaps counted from 1 again). The same number with the same ``sent_at`` and size, in any epoch,
is a duplicate.

A time more than :data:`AHEAD_S` ahead of the fleet's clock (a gateway's clock glitch) is
refused ("schema"): it would hold a latest value or the health report forever.
A value the database would refuse (a string longer than its column, holding NUL or a lone
surrogate that UTF-8 cannot carry, a time out of range, a number beyond BIGINT) raises
:class:`Rejected` ("schema") naming it.
Written for throughput: a telemetry batch is five statements (its number, the gateway's
``last_seen``, the samples and the latest values as executemany, the devices' ``last_seen``),
with ids and the highest sequence numbers remembered between messages (:class:`Known`); one
more (is it a replay of an older epoch?) once a gateway's numbering restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ColumnElement

from fleet.models import (
    Alarm,
    Base,
    BatchKind,
    Device,
    Gap,
    Gateway,
    LatestValue,
    ReceivedBatch,
    Sample,
)
from gateway import wire

log = logging.getLogger(__name__)

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)
#: Column widths of fleet.models that a gateway's strings must fit.
SHORT = 64  # device, point, version, model, interlock, cleared_by
KEY = 200  # alarm key
#: How far ahead of the fleet's clock a gateway's time may be (clocks differ a little).
AHEAD_S = 300.0


class Rejected(Exception):
    """A message ingest refuses: ``reason`` is one of fleet.ingest.pipeline.REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- what the database takes ------------------------------------------------------------------


def when(t: float, what: str) -> datetime:
    """A gateway's wall-clock time (s since the epoch) as an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):
        raise Rejected("schema", f"{what}: {t!r} is not a time") from None


def text(value: str, what: str, limit: int | None = SHORT) -> str:
    """A gateway's string that fits its column (PostgreSQL refuses NUL and overlong text;
    neither database takes a lone surrogate, which JSON's "\\ud800" escape can carry)."""
    if "\x00" in value:
        raise Rejected("schema", f"{what} {value[:40]!r}: contains a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise Rejected(
            "schema", f"{what} {value[:40]!r}: {exc.reason} at character {exc.start}"
        ) from None
    if limit is not None and len(value) > limit:
        raise Rejected(
            "schema", f"{what} {value[:40]!r}…: {len(value)} characters, at most {limit}"
        )
    return value


def sequence(seq: int, what: str) -> int:
    """A gateway's number that fits a BIGINT column."""
    if seq > BIGINT_MAX:
        raise Rejected("schema", f"{what} {seq}: above {BIGINT_MAX}")
    if seq < BIGINT_MIN:
        raise Rejected("schema", f"{what} {seq}: below {BIGINT_MIN}")
    return seq


def number(value: wire.Scalar) -> float | None:
    """A reading's value for plots: numbers and booleans as floats, anything else None."""
    if isinstance(value, bool | int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


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
    #: (gateway id, kind) -> the current epoch
    epochs: dict[tuple[int, str], int] = field(default_factory=dict)
    #: (gateway id, kind, epoch) -> the highest sequence number stored in it
    highest: dict[tuple[int, str, int], int] = field(default_factory=dict)

    def forget(self) -> None:
        self.gateways.clear()
        self.devices.clear()
        self.epochs.clear()
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

    def time(self, t: float, what: str) -> datetime:
        """A gateway's time of something that happened: not after the fleet received it
        (give or take :data:`AHEAD_S`)."""
        moment = when(t, what)
        ahead = (moment - self.now).total_seconds()
        if ahead > AHEAD_S:
            raise Rejected(
                "schema",
                f"{what} {moment.isoformat()}: {ahead:.0f} s ahead of the fleet's clock "
                f"(at most {AHEAD_S:.0f} s)",
            )
        return moment

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
            created = await self.session.execute(
                insert(DEVICES).returning(DEVICES.c.name, DEVICES.c.id), new
            )
            ids.update((name, device_id) for name, device_id in created)
        known.update(((self.gateway_id, name), device_id) for name, device_id in ids.items())
        return ids

    # -- batches -------------------------------------------------------------------------------

    async def receive(self, kind: BatchKind, seq: int, sent_at: datetime, size: int) -> Batch:
        """Record batch ``seq``; a duplicate, or the gaps it opened, or the gap it filled; or
        the first of a restarted numbering (the next epoch)."""
        epoch, highest = await self.current(kind)
        if epoch > 0 and await self.replayed(kind, seq, sent_at, size):
            return Batch(duplicate=True)
        if not await self.insert(kind, epoch, seq, sent_at, size):
            stored = (
                await self.session.execute(
                    select(ReceivedBatch.sent_at, ReceivedBatch.size).where(
                        ReceivedBatch.gateway_id == self.gateway_id,
                        ReceivedBatch.kind == kind.value,
                        ReceivedBatch.epoch == epoch,
                        ReceivedBatch.seq == seq,
                    )
                )
            ).one()
            if tuple(stored) == (sent_at, size):
                return Batch(duplicate=True)
            epoch, highest = await self.restart(kind, epoch, seq), 0
            await self.insert(kind, epoch, seq, sent_at, size)
        self.known.epochs[(self.gateway_id, kind.value)] = epoch
        self.known.highest[(self.gateway_id, kind.value, epoch)] = max(highest, seq)
        if seq > highest + 1:
            self.session.add(
                Gap(
                    gateway_id=self.gateway_id,
                    kind=kind.value,
                    epoch=epoch,
                    first=highest + 1,
                    last=seq - 1,
                    detected_at=self.now,
                )
            )
            return Batch(gaps_opened=1)
        if seq < highest:
            await self.fill(kind, epoch, seq)
        return Batch()

    async def current(self, kind: BatchKind) -> tuple[int, int]:
        """The gateway's current epoch for ``kind`` and the highest number stored in it."""
        epoch = self.known.epochs.get((self.gateway_id, kind.value))
        if epoch is not None:
            highest = self.known.highest.get((self.gateway_id, kind.value, epoch))
            if highest is not None:
                return epoch, highest
        row = (
            await self.session.execute(
                select(ReceivedBatch.epoch, func.max(ReceivedBatch.seq))
                .where(
                    ReceivedBatch.gateway_id == self.gateway_id,
                    ReceivedBatch.kind == kind.value,
                )
                .group_by(ReceivedBatch.epoch)
                .order_by(ReceivedBatch.epoch.desc())
                .limit(1)
            )
        ).first()
        return (0, 0) if row is None else (row[0], row[1])

    async def replayed(self, kind: BatchKind, seq: int, sent_at: datetime, size: int) -> bool:
        """Whether this very batch (number, time and size) is stored in any epoch."""
        rows = await self.session.execute(
            select(ReceivedBatch.sent_at, ReceivedBatch.size).where(
                ReceivedBatch.gateway_id == self.gateway_id,
                ReceivedBatch.kind == kind.value,
                ReceivedBatch.seq == seq,
            )
        )
        return any(tuple(row) == (sent_at, size) for row in rows)

    async def insert(
        self, kind: BatchKind, epoch: int, seq: int, sent_at: datetime, size: int
    ) -> bool:
        """Record the batch's number; False when it is taken in ``epoch`` already."""
        stored = await self.session.execute(
            upsert(self.session, ReceivedBatch)
            .values(
                gateway_id=self.gateway_id,
                kind=kind.value,
                epoch=epoch,
                seq=seq,
                received_at=self.now,
                sent_at=sent_at,
                size=size,
            )
            .on_conflict_do_nothing()
            .returning(ReceivedBatch.seq)
        )
        return stored.scalar_one_or_none() is not None

    async def restart(self, kind: BatchKind, epoch: int, seq: int) -> int:
        """The gateway numbers its batches from 1 again (a new outbox): what was missing of
        the old numbering will not come any more. The new epoch."""
        gateway = await self.session.scalar(
            select(Gateway.name).where(Gateway.id == self.gateway_id)
        )
        log.warning(
            "gateway %r (id %d) %s: sequence restarted at %d: new outbox? "
            "Open gaps of the old numbering closed",
            gateway,
            self.gateway_id,
            kind.value,
            seq,
        )
        await self.session.execute(
            update(Gap)
            .where(
                Gap.gateway_id == self.gateway_id,
                Gap.kind == kind.value,
                Gap.closed_at.is_(None),
            )
            .values(closed_at=self.now)
        )
        return epoch + 1

    async def fill(self, kind: BatchKind, epoch: int, seq: int) -> None:
        """A late batch arrived: shrink, split or close the open gap it was missing from."""
        gap = await self.session.scalar(
            select(Gap).where(
                Gap.gateway_id == self.gateway_id,
                Gap.kind == kind.value,
                Gap.epoch == epoch,
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
                    epoch=epoch,
                    first=seq + 1,
                    last=gap.last,
                    detected_at=gap.detected_at,
                )
            )
            gap.last = seq - 1

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
        received = await self.receive(
            BatchKind.TELEMETRY, seq, self.time(batch.at, "at"), len(readings)
        )
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
            (sequence(e.id, "event id"), e, self.time(e.at, f"event {e.id} at"))
            for e in batch.events
        ]
        seq = sequence(batch.seq, "seq")
        received = await self.receive(
            BatchKind.EVENTS, seq, self.time(batch.at, "at"), len(checked)
        )
        await self.seen()
        if received.duplicate:
            return received
        for event_id, event, at in checked:
            if event.kind == "raised":
                await self.raised(event_id, event, at)
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
            )
            .on_conflict_do_nothing(
                index_elements=[Alarm.gateway_id, Alarm.raised_event, Alarm.raised_at]
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
