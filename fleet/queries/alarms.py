"""The alarm list, flat or grouped by cause, and the shelves that take alarms off it.

Flat (:func:`alarms`): newest first; open ones by severity (critical, major, minor, info)
first, newest first within a severity. Shelved alarms (an active :class:`AlarmShelf` on their
gateway and key) are left out of the open and unacknowledged lists and are the whole of the
shelved one.

By cause (:func:`by_cause`): an alarm the gateway marked ``suppressed_by`` another one's key
(an interlock whose input is lost because its device is offline; a device whose bus is down)
is listed under that alarm, its cause, instead of on its own. A cause may itself sit under
another (bus → device → interlocks). Its children follow it: shelving a cause takes its
children off the list with it.

A shelf ends by itself when its time is up — the list compares with the time of the request,
nothing has to run — or earlier by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, and_, case, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fleet.models import Alarm, AlarmShelf, Gateway, Site

SEVERITIES = ("critical", "major", "minor", "info")


class AlarmState(StrEnum):
    OPEN = "open"  # not cleared by the gateway, not shelved
    UNACKED = "unacked"  # not acknowledged by a person (cleared or not), not shelved
    SHELVED = "shelved"  # shelved now (cleared or not)
    ALL = "all"


class ShelfView(BaseModel):
    """Why and until when an alarm is off the list."""

    id: int
    shelved_by: str
    shelved_at: datetime
    until: datetime
    reason: str


class AlarmView(BaseModel):
    id: int
    site: str
    gateway: str
    key: str
    severity: str
    interlock: str
    device: str | None
    message: str
    values: dict[str, Any]
    raised_at: datetime
    cleared_at: datetime | None
    #: Who cleared it on the gateway: the local user who reset a latched interlock there
    #: (``gateway reset-latch``); None when the gateway cleared it by itself.
    cleared_by: str | None = None
    acked_at: datetime | None
    acked_by: str | None
    #: The key of the alarm of the same gateway whose cause this one only follows from.
    suppressed_by: str | None = None
    #: How often a chattering alarm came back while held.
    count: int = 1
    #: The shelf that takes it off the list now, if any.
    shelf: ShelfView | None = None


class AlarmGroup(AlarmView):
    """An alarm with the alarms it causes (suppressed by it), most severe first, newest first
    within a severity; ``suppressed_total`` counts them all, theirs included."""

    suppressed: list[AlarmGroup] = []
    suppressed_total: int = 0


def shelf_view(shelf: AlarmShelf | None) -> ShelfView | None:
    if shelf is None:
        return None
    return ShelfView(
        id=shelf.id, shelved_by=shelf.shelved_by, shelved_at=shelf.shelved_at,
        until=shelf.until, reason=shelf.reason,
    )  # fmt: skip


def view(alarm: Alarm, site: str, gateway: str, shelf: AlarmShelf | None = None) -> AlarmView:
    return AlarmView(
        id=alarm.id, site=site, gateway=gateway, key=alarm.key, severity=alarm.severity,
        interlock=alarm.interlock, device=alarm.device, message=alarm.message,
        values=alarm.values, raised_at=alarm.raised_at, cleared_at=alarm.cleared_at,
        cleared_by=alarm.cleared_by, acked_at=alarm.acked_at, acked_by=alarm.acked_by,
        suppressed_by=alarm.suppressed_by, count=alarm.count, shelf=shelf_view(shelf),
    )  # fmt: skip


def shelf_holds(shelf: type[AlarmShelf] | Any, now: datetime) -> ColumnElement[bool]:
    """``shelf`` (the table or an alias of it) holds the alarm row it is compared with now."""
    return and_(
        shelf.gateway_id == Alarm.gateway_id,
        shelf.key == Alarm.key,
        shelf.unshelved_at.is_(None),
        shelf.until > now,
    )


def shelved(now: datetime) -> ColumnElement[bool]:
    """The alarm is shelved at ``now`` (for counts that leave shelved alarms out)."""
    return exists().where(shelf_holds(AlarmShelf, now))


def _rank() -> ColumnElement[int]:
    return case({s: i for i, s in enumerate(SEVERITIES)}, value=Alarm.severity, else_=99)


@dataclass(frozen=True)
class _Row:
    alarm: Alarm
    site: str
    gateway: str
    shelf: AlarmShelf | None

    def view(self) -> AlarmView:
        return view(self.alarm, self.site, self.gateway, self.shelf)


_Select = Select[Alarm, str, str, AlarmShelf]
#: the shelf joined to each alarm row of the lists
_SHELF = aliased(AlarmShelf, name="shelf")


def _query(now: datetime) -> _Select:
    return (
        select(Alarm, Site.name, Gateway.name, _SHELF)
        .join(Gateway, Alarm.gateway_id == Gateway.id)
        .join(Site, Gateway.site_id == Site.id)
        .outerjoin(_SHELF, shelf_holds(_SHELF, now))
    )


async def _rows(session: AsyncSession, query: _Select) -> list[_Row]:
    """The rows of ``query``, one per alarm (the newest shelf if two raced)."""
    rows: dict[int, _Row] = {}
    for alarm, site, gateway, shelf in await session.execute(query):
        known = rows.get(alarm.id)
        if known is None or (known.shelf is not None and shelf.id > known.shelf.id):
            rows[alarm.id] = _Row(alarm, site, gateway, shelf)
    return list(rows.values())


def _filtered(query: _Select, state: AlarmState, site: str | None, *, shelf: bool) -> _Select:
    """``query`` narrowed to ``site`` and ``state``; whether shelved alarms count is only
    decided here when ``shelf``."""
    if site is not None:
        query = query.where(Site.name == site)
    if state is AlarmState.OPEN:
        query = query.where(Alarm.cleared_at.is_(None)).order_by(_rank())
    elif state is AlarmState.UNACKED:
        query = query.where(Alarm.acked_at.is_(None))
    if shelf and state is AlarmState.SHELVED:
        query = query.where(_SHELF.id.is_not(None))
    elif shelf and state is not AlarmState.ALL:
        query = query.where(_SHELF.id.is_(None))
    return query.order_by(Alarm.raised_at.desc(), Alarm.id.desc())


async def alarms(
    session: AsyncSession, state: AlarmState, site: str | None, limit: int, now: datetime
) -> list[AlarmView]:
    """The flat list (see the module doc)."""
    query = _filtered(_query(now), state, site, shelf=True).limit(limit)
    return [row.view() for row in await _rows(session, query)]


async def by_cause(
    session: AsyncSession, state: AlarmState, site: str | None, limit: int, now: datetime
) -> list[AlarmGroup]:
    """The list grouped by cause (see the module doc). ``limit`` counts every alarm read,
    suppressed ones included; the most severe and newest are read first."""
    rows = await _rows(session, _filtered(_query(now), state, site, shelf=False).limit(limit))
    return _groups(rows, state)


def _groups(rows: list[_Row], state: AlarmState) -> list[AlarmGroup]:
    """``rows`` as trees of causes (see the module doc): every row in exactly one place (with
    ``state=all``), or left out with a shelved alarm above it (``open``, ``unacked``)."""
    parents = _parents(rows)
    children: dict[int | None, list[_Row]] = {}
    for row in rows:
        children.setdefault(parents[row.alarm.id], []).append(row)
    shown = state in (AlarmState.ALL, AlarmState.SHELVED)

    def group(row: _Row) -> AlarmGroup:
        under = [group(c) for c in children.get(row.alarm.id, []) if shown or c.shelf is None]
        return AlarmGroup(
            **row.view().model_dump(),
            suppressed=_ordered(under),
            suppressed_total=sum(1 + g.suppressed_total for g in under),
        )

    if state is AlarmState.SHELVED:  # the topmost shelved alarms, with all below them
        by_id = {r.alarm.id: r for r in rows}
        tops = [r for r in rows if r.shelf is not None and not _shelved_above(r, parents, by_id)]
    else:
        tops = [r for r in children.get(None, []) if shown or r.shelf is None]
    return _ordered([group(row) for row in tops])


def _parents(rows: list[_Row]) -> dict[int, int | None]:
    """Each row's cause among ``rows`` (:func:`_cause`), None for a root. Causes that form a
    cycle (two alarms each naming the other) are cut at the one that reached the fleet first,
    which stands on its own: every row is in exactly one tree."""
    by_key: dict[tuple[int, str], list[Alarm]] = {}
    for row in rows:
        by_key.setdefault((row.alarm.gateway_id, row.alarm.key), []).append(row.alarm)
    parents = {row.alarm.id: _cause(row.alarm, by_key) for row in rows}
    for start in parents:
        path: list[int] = []
        node: int | None = start
        while node is not None and node not in path:
            path.append(node)
            node = parents[node]
        if node is not None:  # back to a node of the path: a cycle from there on
            cycle = path[path.index(node) :]
            parents[min(cycle)] = None
    return parents


def _shelved_above(row: _Row, parents: dict[int, int | None], by_id: dict[int, _Row]) -> bool:
    parent = parents[row.alarm.id]
    while parent is not None:
        if by_id[parent].shelf is not None:
            return True
        parent = parents[parent]
    return False


def _cause(alarm: Alarm, by_key: dict[tuple[int, str], list[Alarm]]) -> int | None:
    """The id of the alarm that ``alarm`` is suppressed by: of the same gateway with the key
    it names, standing while ``alarm`` stood (the newest such), else None."""
    if alarm.suppressed_by is None or alarm.suppressed_by == alarm.key:
        return None
    overlapping = [
        c
        for c in by_key.get((alarm.gateway_id, alarm.suppressed_by), [])
        if (alarm.cleared_at is None or c.raised_at <= alarm.cleared_at)
        and (c.cleared_at is None or c.cleared_at >= alarm.raised_at)
    ]
    if not overlapping:
        return None
    return max(overlapping, key=lambda c: (c.raised_at, c.id)).id


def _ordered(groups: list[AlarmGroup]) -> list[AlarmGroup]:
    """Open before cleared, most severe first, newest first."""
    by_time = sorted(groups, key=lambda g: (g.raised_at, g.id), reverse=True)
    return sorted(
        by_time,
        key=lambda g: (
            g.cleared_at is not None,
            SEVERITIES.index(g.severity) if g.severity in SEVERITIES else len(SEVERITIES),
        ),
    )


async def alarm(
    session: AsyncSession, alarm_id: int, now: datetime
) -> tuple[Alarm, str, str, AlarmShelf | None] | None:
    """The alarm row (to change it) with its site and gateway names and its shelf, or None."""
    query = _query(now).where(Alarm.id == alarm_id).execution_options(populate_existing=True)
    rows = await _rows(session, query)
    return None if not rows else (rows[0].alarm, rows[0].site, rows[0].gateway, rows[0].shelf)
