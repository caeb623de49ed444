"""Grouping alarms by cause (fleet.queries.alarms), for any alarms a gateway could have sent —
causes that cleared, came back, name a key nobody raised, or name each other: every alarm is
listed exactly once, under the alarm it names that stood while it stood, or on its own; a
shelved alarm takes what is under it off the open list and onto the shelved one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.models import Alarm, AlarmShelf
from fleet.queries.alarms import SEVERITIES, AlarmGroup, AlarmState, _groups, _Row

T0 = datetime(2026, 12, 5, tzinfo=UTC)
KEYS = ("bus", "comm", "i5", "i6")


@st.composite
def alarm_rows(draw: st.DrawFn) -> list[_Row]:
    rows = []
    for alarm_id in range(1, draw(st.integers(0, 14)) + 1):
        gateway = draw(st.integers(1, 2))
        raised = draw(st.integers(0, 100))
        lasted = draw(st.none() | st.integers(0, 100))
        alarm = Alarm(
            id=alarm_id, gateway_id=gateway, raised_event=alarm_id, key=draw(st.sampled_from(KEYS)),
            severity=draw(st.sampled_from(SEVERITIES)), interlock="I", device=None, message="m",
            values={}, raised_at=T0 + timedelta(seconds=raised),
            cleared_at=None if lasted is None else T0 + timedelta(seconds=raised + lasted),
            suppressed_by=draw(st.none() | st.sampled_from(KEYS)), count=1,
        )  # fmt: skip
        shelf = None
        if draw(st.booleans()) and draw(st.booleans()):
            shelf = AlarmShelf(
                id=alarm_id, gateway_id=gateway, key=alarm.key, shelved_at=T0,
                shelved_by="ma", until=T0 + timedelta(hours=1), reason="r",
            )  # fmt: skip
        rows.append(_Row(alarm, "north", f"gw-{gateway}", shelf))
    return rows


def walk(groups: list[AlarmGroup], parent: AlarmGroup | None = None) -> list[tuple[Any, Any]]:
    """(group, parent) of every group, depth first."""
    out: list[tuple[Any, Any]] = []
    for group in groups:
        out += [(group, parent), *walk(group.suppressed, group)]
    return out


def ancestors(row: _Row, placed: dict[int, int | None]) -> list[int]:
    chain, node = [], placed[row.alarm.id]
    while node is not None:
        chain.append(node)
        node = placed[node]
    return chain


@settings(max_examples=200, deadline=None)
@given(alarm_rows())
def test_every_alarm_is_listed_once_under_a_cause_it_names(rows: list[_Row]) -> None:
    everything = walk(_groups(rows, AlarmState.ALL))
    assert sorted(g.id for g, _ in everything) == [r.alarm.id for r in rows]
    for group, parent in everything:
        assert group.suppressed_total == len(walk(group.suppressed))
        if parent is None:
            continue
        assert (group.suppressed_by, group.gateway) == (parent.key, parent.gateway)
        assert group.cleared_at is None or parent.raised_at <= group.cleared_at
        assert parent.cleared_at is None or parent.cleared_at >= group.raised_at
    for groups in [_groups(rows, AlarmState.ALL), *(g.suppressed for g, _ in everything)]:
        order = [(g.cleared_at is not None, SEVERITIES.index(g.severity)) for g in groups]
        assert order == sorted(order)  # open first, then most severe


@settings(max_examples=200, deadline=None)
@given(alarm_rows())
def test_a_shelved_alarm_takes_what_is_under_it_from_the_open_list(rows: list[_Row]) -> None:
    placed = {g.id: (None if p is None else p.id) for g, p in walk(_groups(rows, AlarmState.ALL))}
    by_id = {r.alarm.id: r for r in rows}

    def hidden(row: _Row) -> bool:
        return row.shelf is not None or any(by_id[a].shelf for a in ancestors(row, placed))

    shown = sorted(g.id for g, _ in walk(_groups(rows, AlarmState.OPEN)))
    assert shown == [r.alarm.id for r in rows if not hidden(r)]
    shelved = sorted(g.id for g, _ in walk(_groups(rows, AlarmState.SHELVED)))
    assert shelved == [r.alarm.id for r in rows if hidden(r)]
