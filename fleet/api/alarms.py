"""The alarm list and acknowledging an alarm (maintainer and above)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import CursorResult, update

from fleet.accounts import audit
from fleet.accounts.actor import Actor
from fleet.api.deps import ActorDep, RowId, SessionDep, role
from fleet.models import Alarm, Role, utcnow
from fleet.queries.alarms import AlarmState, AlarmView, alarm, alarms, view

router = APIRouter(tags=["alarms"])
Maintainer = Annotated[Actor, role(Role.MAINTAINER, "acknowledging alarms")]


@router.get("/alarms")
async def list_alarms(
    _actor: ActorDep,
    session: SessionDep,
    state: AlarmState = AlarmState.OPEN,
    site: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AlarmView]:
    """Newest first; open alarms by severity first (critical, major, minor, info)."""
    return await alarms(session, state, site, limit)


@router.post("/alarms/{alarm_id}/ack")
async def acknowledge(alarm_id: RowId, actor: Maintainer, session: SessionDep) -> AlarmView:
    """Acknowledge an alarm (again: no change, the first acknowledgement stands)."""
    found = await alarm(session, alarm_id)
    if found is None:
        raise HTTPException(404, f"no alarm {alarm_id}")
    row, site, gateway = found
    acked = await session.execute(  # only the first of two racing acknowledgements counts
        update(Alarm)
        .where(Alarm.id == alarm_id, Alarm.acked_at.is_(None))
        .values(acked_at=utcnow(), acked_by=actor.user)
    )
    if cast(CursorResult[Any], acked).rowcount == 1:
        audit.record(
            session, actor.label, "alarm.ack", f"alarm:{row.id}",
            {"site": site, "gateway": gateway, "key": row.key, "severity": row.severity},
        )  # fmt: skip
        await session.commit()
    await session.refresh(row)
    return view(row, site, gateway)
