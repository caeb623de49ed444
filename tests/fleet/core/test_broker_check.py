"""The fleet's watch on its broker's drop counter (fleet.core.broker_check), fed by hand: a
warning a person can act on when the broker has dropped messages, not repeated more than every
ten minutes however the counter moves, and the count in /metrics. The real mosquitto is in
hil_tests/test_broker_check.py."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.core.broker import BrokerUrl
from fleet.core.broker_check import WARN_EVERY_S, DropWatch
from fleet.core.metrics import FleetMetrics

BROKER = BrokerUrl.parse("mqtt://fleet:secret@broker.example:1883")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch() -> tuple[DropWatch, Clock]:
    clock = Clock()
    return DropWatch(BROKER, FleetMetrics(), clock=clock), clock


def shown(drops: DropWatch) -> float | None:
    """What /metrics shows of the broker's count."""
    return drops.metrics.registry.get_sample_value("doorstep_fleet_broker_dropped_messages")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_broker_that_dropped_nothing_is_not_warned_about_and_its_count_is_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drops, _ = watch()
    assert math.isnan(shown(drops) or 0.0)  # not told yet
    drops.seen(b"0")
    assert warnings(caplog) == []
    assert b"doorstep_fleet_broker_dropped_messages 0.0" in drops.metrics.exposition()


def test_dropped_messages_are_warned_about_with_the_settings_and_the_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drops, _ = watch()
    drops.seen(b"50")
    [said] = warnings(caplog)
    assert "mqtt://fleet@broker.example:1883 has dropped 50 queued messages" in said
    assert "secret" not in said
    for words in ("max_queued_messages", "persistence true", "docs/operations.md", "gap repair"):
        assert words in said
    assert b"doorstep_fleet_broker_dropped_messages 50.0" in drops.metrics.exposition()


def test_a_broker_that_keeps_dropping_is_said_again_after_ten_minutes_with_how_many_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drops, clock = watch()
    drops.seen(b"50")
    clock.now += 60
    drops.seen(b"80")  # a minute later: not again yet
    assert len(warnings(caplog)) == 1
    clock.now += WARN_EVERY_S
    drops.seen(b"80")
    assert "80 queued messages since it started (30 more" in warnings(caplog)[-1]
    clock.now += WARN_EVERY_S
    drops.seen(b"80")  # no more dropped: nothing to say
    assert len(warnings(caplog)) == 2


def test_what_is_not_a_count_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    drops, _ = watch()
    drops.seen(b"12")
    for junk in (b"", b"many", b"\xff\xfe", b"1e3", b"-"):
        drops.seen(junk)
    assert b"doorstep_fleet_broker_dropped_messages 12.0" in drops.metrics.exposition()
    assert len(warnings(caplog)) == 1


@given(st.lists(st.tuples(st.integers(0, 10**6), st.floats(0, 2 * WARN_EVERY_S)), max_size=30))
def test_warnings_are_ten_minutes_apart_and_the_gauge_is_the_last_count(
    counts: list[tuple[int, float]],
) -> None:
    drops, clock = watch()
    said_at: list[float] = []
    before = drops.said_at
    for count, wait in counts:
        clock.now += wait
        drops.seen(str(count).encode())
        if drops.said_at != before:
            said_at.append(drops.said_at)
            assert count > 0  # only a broker that dropped something is warned about
            before = drops.said_at
        assert shown(drops) == count
    assert all(b - a >= WARN_EVERY_S for a, b in itertools.pairwise(said_at))
