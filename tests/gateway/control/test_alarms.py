"""The alarm log as a person meets it: one alarm per cause, chattering held, updates in place."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control.alarms import AlarmEvent, AlarmLog, Chatter, Severity


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_with(clock: Clock, journal: Path | None = None) -> tuple[AlarmLog, list[AlarmEvent]]:
    log = AlarmLog(journal, chatter=Chatter(max_raises=3, window_s=600, quiet_s=300), clock=clock)
    events: list[AlarmEvent] = []
    log.listeners.append(events.append)
    return log, events


def test_an_alarm_raised_every_cycle_is_raised_once() -> None:
    log, events = log_with(Clock())
    for _ in range(100):
        log.raise_("comm-loss/lift", Severity.MINOR, "comm-loss", "lift not answering")
    assert [e.kind for e in events] == ["raised"]


def test_a_chattering_alarm_is_held_with_its_count_until_quiet() -> None:
    clock = Clock()
    log, events = log_with(clock)
    for _ in range(4):  # raised and cleared four times within ten minutes
        log.raise_("derate/minor", Severity.MINOR, "derate", "charger-1 hot")
        clock.now += 30
        log.clear("derate/minor")
        clock.now += 30
    assert "derate/minor" in log.active
    assert log.held("derate/minor")
    assert [e.kind for e in events].count("cleared") == 3  # the fourth clear is held
    log.raise_("derate/minor", Severity.MINOR, "derate", "charger-1 hot")  # a fifth raise
    assert log.active["derate/minor"].count == 5
    assert [e.kind for e in events].count("raised") == 4  # no new alarm, an update
    log.clear("derate/minor")
    clock.now += 299
    log.tick()
    assert "derate/minor" in log.active  # not quiet long enough yet
    clock.now += 2
    log.tick()
    assert "derate/minor" not in log.active
    assert events[-1].kind == "cleared"


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(0, 400), min_size=1, max_size=30))
def test_an_alarm_clears_only_while_it_is_not_chattering_or_once_it_has_been_quiet(
    gaps: list[float],
) -> None:
    clock = Clock()
    log, events = log_with(clock)
    raised_at: list[float] = []
    cleared: list[tuple[float, list[float]]] = []  # (when, the raises before it)
    log.listeners.append(
        lambda e: cleared.append((clock.now, list(raised_at))) if e.kind == "cleared" else None
    )
    for gap in gaps:  # a flapping input: raise, wait, clear, wait
        raised_at.append(clock.now)
        log.raise_("k", Severity.MINOR, "i", "m")
        clock.now += gap / 2
        log.clear("k")
        clock.now += gap / 2
        log.tick()
    for t, before in cleared:
        in_window = sum(t - r <= 600 for r in before)
        assert in_window <= 3 or t - before[-1] >= 300, (t, raised_at)
    assert sum(e.kind == "raised" for e in events) <= len(gaps)


def test_an_update_changes_a_standing_alarm_in_place_and_only_when_something_changed() -> None:
    log, events = log_with(Clock())
    log.raise_("comm-loss/lift", Severity.MINOR, "comm-loss", "lift not answering")
    assert log.update("comm-loss/lift", message="lift not answering") is None
    log.update("comm-loss/lift", message="lift not answering; fail-safe actions held by trapped")
    assert [e.kind for e in events] == ["raised", "updated"]
    assert log.active["comm-loss/lift"].message.endswith("held by trapped")
    assert log.update("no-such-alarm", message="x") is None


def test_suppressed_alarms_stay_in_the_journal_but_not_in_the_list_a_person_reads(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "alarms.jsonl"
    log, _ = log_with(Clock(), journal)
    log.raise_("comm-loss/sio", Severity.MINOR, "comm-loss", "sio not answering")
    log.raise_(
        "fire-alarm/unavailable",
        Severity.MAJOR,
        "fire-alarm",
        "fire-alarm input not available: sio offline",
        suppressed_by="comm-loss/sio",
    )
    assert [e.key for e in log.by_severity()] == ["comm-loss/sio"]
    again = AlarmLog(journal)  # rebuilt from the journal after a restart
    assert again.active["fire-alarm/unavailable"].suppressed_by == "comm-loss/sio"


def test_a_journal_written_before_updates_existed_still_loads(tmp_path: Path) -> None:
    journal = tmp_path / "alarms.jsonl"
    journal.write_text(
        '{"at":1.0,"by":null,"device":"lift","interlock":"comm-loss","key":"comm-loss/lift",'
        '"kind":"raised","message":"lift not answering","seq":7,"severity":"minor","v":1,'
        '"values":{}}\n'
    )
    log = AlarmLog(journal)
    event = log.active["comm-loss/lift"]
    assert (event.suppressed_by, event.count) == (None, 1)
    assert log.raise_("x", Severity.INFO, "i", "m") is not None
    assert log.active["x"].seq == 8
