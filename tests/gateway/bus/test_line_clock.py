"""LineClock: the next request never starts within t3.5 of any byte seen on the line, nor
inside a frame that has not ended, nor while an abandoned request's answer may still come."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.bus.transport import LineClock, LineTiming

SETTLE_S = 0.1
Event = tuple[str, float, int]  # what happened, the time since the previous event, bytes
events = st.lists(
    st.tuples(
        st.sampled_from(["sent", "frame", "part", "abandoned"]),
        st.floats(0, 0.2),
        st.integers(1, 256),
    ),
    max_size=40,
)


def replay(baudrate: int, script: list[Event]) -> tuple[LineClock, float, float, bool, float]:
    """Run ``script`` on a clock; what a strict line saw: the last byte on the wire, the
    latest deadline of an answer still owed, whether a frame is open, and the time now."""
    clock = LineClock(LineTiming(baudrate), SETTLE_S)
    now = 1000.0
    last_byte = owed = -math.inf
    open_frame = False
    for what, dt, nbytes in script:
        now += dt
        if what == "sent":
            clock.sent(now, nbytes)
            last_byte = max(last_byte, now + clock.timing.frame_time(nbytes))
            open_frame = False
        elif what == "abandoned":
            clock.abandoned(now + 0.3)
            owed = max(owed, now + 0.3)
        else:
            clock.received(now, frame_open=what == "part")
            last_byte = max(last_byte, now)
            open_frame = what == "part"
            if not open_frame:
                owed = -math.inf  # the answer came: nothing more is owed
    return clock, last_byte, owed, open_frame, now


@given(baudrate=st.sampled_from([1200, 9600, 19200, 38400, 115200]), script=events)
def test_the_next_request_keeps_every_rule_of_the_line(baudrate: int, script: list[Event]) -> None:
    clock, last_byte, owed, open_frame, _ = replay(baudrate, script)
    start = clock.earliest_start()
    assert start >= last_byte + clock.timing.t35
    assert start >= owed
    if open_frame:
        assert start >= last_byte + SETTLE_S


@given(baudrate=st.sampled_from([9600, 19200, 115200]), script=events)
def test_the_line_is_not_held_longer_than_the_rules_say(baudrate: int, script: list[Event]) -> None:
    """Keeping t3.5 must not cost throughput: the start is the latest of the rules, no later."""
    clock, last_byte, owed, open_frame, _ = replay(baudrate, script)
    rules = [last_byte + clock.timing.t35, owed]
    if open_frame:
        rules.append(last_byte + SETTLE_S)
    assert clock.earliest_start() == max(rules)


def test_t35_is_the_spec_s_on_an_11_bit_character_and_fixed_above_19200_baud() -> None:
    assert math.isclose(LineTiming(9600).t35, 3.5 * 11 / 9600)
    assert math.isclose(LineTiming(19200).t35, 3.5 * 11 / 19200)
    assert LineTiming(38400).t35 == LineTiming(115200).t35 == 0.00175
