"""Gateways' alarms, ordered by their own events' times whatever order the events arrive in.

A gateway's alarm journal says, for one alarm key: raised (an :class:`~fleet.models.Alarm`,
one per event id and time), updated in place (message, values, suppression, count) and
cleared. Read in the order of their times, an alarm raised at ``r`` is cleared by the first
"cleared" of its key at or after ``r``, and shows the last "updated" of its key between ``r``
and that clear (or what it was raised with). Events may arrive in any order (several fleet
workers, a batch sent again by gap repair): every event is kept (:class:`AlarmEventRecord`,
once) and each alarm it concerns is *settled* again from the stored events, so a "cleared"
that arrives before its "raised" ends with the alarm cleared, and an "updated" older than
the one shown changes nothing. In order, it is what applying each event as it comes does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.ingest.columns import KEY, text
from fleet.ingest.tables import AlarmEventRecord
from fleet.ingest.upsert import upsert
from fleet.models import Alarm
from gateway import wire

Fields = dict[str, Any]


def event_fields(event: wire.Event) -> Fields:
    """What an event changes of an alarm, checked for its columns."""
    return {
        "message": text(event.message, "message", None),
        "values": dict(event.values),
        "suppressed_by": (
            None if event.suppressed_by is None else text(event.suppressed_by, "suppressed by", KEY)
        ),
        "count": event.count,
    }


class Alarms:
    """One gateway's alarm events into the database, inside the caller's transaction (which
    holds the gateway's lock: :mod:`fleet.ingest.locks`)."""

    def __init__(self, session: AsyncSession, gateway_id: int) -> None:
        self.session = session
        self.gateway_id = gateway_id

    async def receive(self, event_id: int, event: wire.Event, at: datetime) -> None:
        key = text(event.key, "alarm key", KEY)
        fields = event_fields(event)
        by = None if event.by is None else text(event.by, "cleared by")
        if event.kind == "raised":
            interlock = text(event.interlock, "interlock")
            device = None if event.device is None else text(event.device, "device")
        if not await self._keep(event_id, event.kind, key, at, by, fields):
            return  # this very event is stored: a replay
        if event.kind == "raised":
            alarm_id = await self.session.scalar(
                upsert(self.session, Alarm)
                .values(
                    gateway_id=self.gateway_id,
                    raised_event=event_id,
                    key=key,
                    severity=event.severity,
                    interlock=interlock,
                    device=device,
                    raised_at=at,
                    **fields,
                )
                .on_conflict_do_nothing(
                    index_elements=[Alarm.gateway_id, Alarm.raised_event, Alarm.raised_at]
                )
                .returning(Alarm.id)
            )
            alarms = [] if alarm_id is None else [await self.session.get_one(Alarm, alarm_id)]
        else:  # the alarms of this key it may change: raised at or before it, not cleared before
            alarms = list(
                await self.session.scalars(
                    select(Alarm).where(
                        Alarm.gateway_id == self.gateway_id,
                        Alarm.key == key,
                        Alarm.raised_at <= at,
                        or_(Alarm.cleared_at.is_(None), Alarm.cleared_at >= at),
                    )
                )
            )
        for alarm in alarms:
            await self._settle(alarm)

    async def _keep(
        self, event_id: int, kind: str, key: str, at: datetime, by: str | None, fields: Fields
    ) -> bool:
        """Store the event; False when it is stored already."""
        kept = await self.session.execute(
            upsert(self.session, AlarmEventRecord)
            .values(
                gateway_id=self.gateway_id,
                event_id=event_id,
                key=key,
                kind=kind,
                at=at,
                by=by,
                **fields,
            )
            .on_conflict_do_nothing()
            .returning(AlarmEventRecord.id)
        )
        return kept.scalar_one_or_none() is not None

    async def _settle(self, alarm: Alarm) -> None:
        """The alarm as its events say, read in the order of their times."""
        events = AlarmEventRecord
        mine = (events.gateway_id == self.gateway_id, events.key == alarm.key)
        clear = (
            await self.session.execute(
                select(events.at, events.by)
                .where(*mine, events.kind == "cleared", events.at >= alarm.raised_at)
                .order_by(events.at)
                .limit(1)
            )
        ).first()
        shown = select(events).where(*mine, events.at >= alarm.raised_at)
        update = await self.session.scalar(
            shown.where(events.kind == "updated")
            .where(true() if clear is None else events.at < clear.at)
            .order_by(events.at.desc())
            .limit(1)
        )
        source = update or await self.session.scalar(
            shown.where(
                events.kind == "raised",
                events.event_id == alarm.raised_event,
                events.at == alarm.raised_at,
            )
        )
        alarm.cleared_at = None if clear is None else clear.at
        alarm.cleared_by = None if clear is None else clear.by
        if source is not None:
            alarm.message = source.message
            alarm.values = dict(source.values)
            alarm.suppressed_by = source.suppressed_by
            alarm.count = source.count
        alarm.updated_at = None if update is None else update.at
