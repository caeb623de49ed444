"""The alarm list (flat or grouped by cause), acknowledging alarms one at a time, a selection or
all of a site at once, and shelving an alarm for a set time (maintainer and above, audited).

The JSON shapes are the response models of :mod:`fleet.queries.alarms`; docs/fleet-api.md
describes them for the people who build on them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Self

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.actor import Actor
from fleet.api.deps import ActorDep, RowId, SessionDep, role
from fleet.models import Alarm, AlarmShelf, Gateway, Role, Site, utcnow
from fleet.queries.alarms import (
    AlarmGroup,
    AlarmState,
    AlarmView,
    alarm,
    alarms,
    by_cause,
    shelved,
    view,
)

router = APIRouter(tags=["alarms"])
Acknowledger = Annotated[Actor, role(Role.MAINTAINER, "acknowledging alarms")]
Shelver = Annotated[Actor, role(Role.MAINTAINER, "shelving alarms")]
Limit = Annotated[int, Query(ge=1, le=1000)]

#: The longest a person may shelve an alarm: one that needs longer needs its cause fixed or
#: the site's configuration changed.
MAX_SHELF_MINUTES = 7 * 24 * 60
#: How many alarms one acknowledgement may name.
MAX_SELECTION = 1000


@router.get("/alarms")
async def list_alarms(
    _actor: ActorDep,
    session: SessionDep,
    state: AlarmState = AlarmState.OPEN,
    site: str | None = None,
    limit: Limit = 200,
) -> list[AlarmView]:
    """Newest first; open alarms by severity first (critical, major, minor, info). Shelved
    alarms only with ``state=shelved`` (or ``all``)."""
    return await alarms(session, state, site, limit, utcnow())


@router.get("/alarms/by-cause")
async def list_by_cause(
    _actor: ActorDep,
    session: SessionDep,
    state: AlarmState = AlarmState.OPEN,
    site: str | None = None,
    limit: Limit = 500,
) -> list[AlarmGroup]:
    """Alarms grouped by cause: each with the alarms it suppresses under it (``suppressed``,
    nested: bus → device → interlocks); open before cleared, most severe first, newest first.
    ``limit`` counts every alarm, suppressed ones included."""
    return await by_cause(session, state, site, limit, utcnow())


@router.get("/alarms/{alarm_id}")
async def one_alarm(alarm_id: RowId, _actor: ActorDep, session: SessionDep) -> AlarmView:
    """One alarm, with its shelf if it is shelved now."""
    found = await alarm(session, alarm_id, utcnow())
    if found is None:
        raise HTTPException(404, f"no alarm {alarm_id}")
    return view(*found)


async def _acknowledge(
    session: AsyncSession, actor: Actor, rows: list[tuple[int, str, str, str, str]], how: str
) -> list[int]:
    """Acknowledge the alarms ``rows`` (id, key, severity, site, gateway) not acknowledged yet
    (of two racing acknowledgements only the first counts), each audited; commits; the ids
    this call acknowledged."""
    if not rows:
        return []
    acked = await session.execute(
        update(Alarm)
        .where(Alarm.id.in_([r[0] for r in rows]), Alarm.acked_at.is_(None))
        .values(acked_at=utcnow(), acked_by=actor.user)
        .returning(Alarm.id)
    )
    done = set(acked.scalars())
    for alarm_id, key, severity, site, gateway in rows:
        if alarm_id in done:
            audit.record(
                session, actor.label, "alarm.ack", f"alarm:{alarm_id}",
                {"site": site, "gateway": gateway, "key": key, "severity": severity, "how": how},
            )  # fmt: skip
    await session.commit()
    return sorted(done)


@router.post("/alarms/{alarm_id}/ack")
async def acknowledge(alarm_id: RowId, actor: Acknowledger, session: SessionDep) -> AlarmView:
    """Acknowledge an alarm (again: no change, the first acknowledgement stands)."""
    found = await alarm(session, alarm_id, utcnow())
    if found is None:
        raise HTTPException(404, f"no alarm {alarm_id}")
    row, site, gateway, _ = found
    await _acknowledge(session, actor, [(row.id, row.key, row.severity, site, gateway)], "one")
    return await one_alarm(alarm_id, actor, session)


class AckRequest(BaseModel):
    """Which alarms to acknowledge: ``ids`` (a selection), or every unacknowledged alarm of
    ``site`` that is not shelved — only those that reached the fleet up to ``up_to_id`` when
    given (the newest alarm id the person was shown, so that nothing arriving meanwhile is
    acknowledged unseen)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RowId] | None = Field(default=None, min_length=1, max_length=MAX_SELECTION)
    site: str | None = None
    up_to_id: RowId | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        if (self.ids is None) == (self.site is None):
            raise ValueError("give either ids (a selection) or site (all of a site's alarms)")
        if self.up_to_id is not None and self.site is None:
            raise ValueError("up_to_id goes with site")
        return self


class AckResult(BaseModel):
    #: the alarms this request acknowledged
    acknowledged: list[int]
    #: the selected alarms that someone had acknowledged before
    already_acknowledged: list[int]


def _named() -> Any:
    return (
        select(Alarm.id, Alarm.key, Alarm.severity, Site.name, Gateway.name, Alarm.acked_at)
        .join(Gateway, Alarm.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
    )


@router.post("/alarms/ack")
async def acknowledge_many(
    request: AckRequest, actor: Acknowledger, session: SessionDep
) -> AckResult:
    """Acknowledge a selection of alarms (all of them or, if one is unknown, none: 404 naming
    the unknown ids) or all alarms of a site at once; each acknowledgement is audited."""
    if request.ids is not None:
        wanted = set(request.ids)
        found = (await session.execute(_named().where(Alarm.id.in_(wanted)))).all()
        missing = sorted(wanted - {r[0] for r in found})
        if missing:
            raise HTTPException(404, f"no alarm {', '.join(map(str, missing))}: none acknowledged")
        how = "selection"
    else:
        if await session.scalar(select(Site.id).where(Site.name == request.site)) is None:
            raise HTTPException(404, f"no site {request.site!r}")
        query = _named().where(
            Site.name == request.site, Alarm.acked_at.is_(None), ~shelved(utcnow())
        )
        if request.up_to_id is not None:
            query = query.where(Alarm.id <= request.up_to_id)
        found = (await session.execute(query)).all()
        how = "site"
    before = sorted(r[0] for r in found if r[5] is not None)
    rows = [(r[0], r[1], r[2], r[3], r[4]) for r in found if r[5] is None]
    return AckResult(
        acknowledged=await _acknowledge(session, actor, rows, how), already_acknowledged=before
    )


Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class ShelveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: how long, from now
    minutes: int = Field(ge=1, le=MAX_SHELF_MINUTES)
    #: why, in words the next person understands ("loop sensor replaced on Tuesday")
    reason: Reason


def _ended(shelf: AlarmShelf, actor: Actor, at: datetime) -> None:
    shelf.unshelved_at = at
    shelf.unshelved_by = actor.user


@router.post("/alarms/{alarm_id}/shelve")
async def shelve(
    alarm_id: RowId, request: ShelveRequest, actor: Shelver, session: SessionDep
) -> AlarmView:
    """Take the alarm off the alarm list for ``minutes`` (its key on its gateway: should it
    clear and come back meanwhile, it stays shelved). Shelving a shelved alarm replaces its
    shelf. The gateway's actions are not touched: shelving changes only what the list shows."""
    now = utcnow()
    found = await alarm(session, alarm_id, now)
    if found is None:
        raise HTTPException(404, f"no alarm {alarm_id}")
    row, site, gateway, old = found
    if old is not None:
        _ended(old, actor, now)
    until = now + timedelta(minutes=request.minutes)
    session.add(
        AlarmShelf(
            gateway_id=row.gateway_id, key=row.key, shelved_at=now, shelved_by=actor.user,
            until=until, reason=request.reason,
        )
    )  # fmt: skip
    audit.record(
        session, actor.label, "alarm.shelve", f"alarm:{row.id}",
        {
            "site": site, "gateway": gateway, "key": row.key, "severity": row.severity,
            "until": until.isoformat(), "reason": request.reason,
            "replaces_until": None if old is None else old.until.isoformat(),
        },
    )  # fmt: skip
    await session.commit()
    return await one_alarm(alarm_id, actor, session)


@router.post("/alarms/{alarm_id}/unshelve")
async def unshelve(alarm_id: RowId, actor: Shelver, session: SessionDep) -> AlarmView:
    """Put a shelved alarm back on the list before its time (not shelved: no change)."""
    now = utcnow()
    found = await alarm(session, alarm_id, now)
    if found is None:
        raise HTTPException(404, f"no alarm {alarm_id}")
    row, site, gateway, shelf = found
    if shelf is not None:
        _ended(shelf, actor, now)
        audit.record(
            session, actor.label, "alarm.unshelve", f"alarm:{row.id}",
            {
                "site": site, "gateway": gateway, "key": row.key, "shelved_by": shelf.shelved_by,
                "until": shelf.until.isoformat(), "reason": shelf.reason,
            },
        )  # fmt: skip
        await session.commit()
    return await one_alarm(alarm_id, actor, session)
