"""History of a state point (an enum, a bit, a flag): the times its value changed, for a plot
of steps. A state has no average, so it is not bucketed; a flapping point is cut at
``limit`` changes (the oldest kept) and says so."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.models import Sample

MAX_CHANGES = 2000


class Change(BaseModel):
    t: datetime
    value: int


class StateHistory(BaseModel):
    #: the value at ``since`` (the last one before it), if any
    initial: int | None
    changes: list[Change]
    #: more changes happened after the last one listed
    truncated: bool


async def state_history(
    session: AsyncSession,
    device: int,
    point: str,
    since: datetime,
    until: datetime,
    limit: int = MAX_CHANGES,
) -> StateHistory:
    """The value before ``since`` and every change in ``[since, until)``, oldest first."""
    of_point = (Sample.device_id == device, Sample.point == point, Sample.num.is_not(None))
    initial = await session.scalar(
        select(Sample.num).where(*of_point, Sample.at < since).order_by(Sample.at.desc()).limit(1)
    )
    ordered = (
        select(
            Sample.at,
            Sample.num,
            func.lag(Sample.num).over(order_by=(Sample.at, Sample.id)).label("before"),
        )
        .where(*of_point, Sample.at >= since, Sample.at < until)
        .subquery()
    )
    rows = (
        await session.execute(
            select(ordered.c.at, ordered.c.num)
            .where(or_(ordered.c.before.is_(None), ordered.c.before != ordered.c.num))
            .order_by(ordered.c.at)
            .limit(limit + 1)
        )
    ).all()
    start = None if initial is None else int(initial)
    changes = [Change(t=at, value=int(num)) for at, num in rows[:limit]]
    if changes and changes[0].value == start:
        changes = changes[1:]  # the first sample in the span repeats the value before it
    return StateHistory(initial=start, changes=changes, truncated=len(rows) > limit)
