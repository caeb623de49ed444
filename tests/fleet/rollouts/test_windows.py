"""Maintenance windows: daily hours in the site's own time zone, over midnight too, and a
window or zone written wrong is refused saying what was expected."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import WindowError
from fleet.rollouts.windows import Window


def test_a_night_window_in_shanghai_is_open_at_night_there_whatever_the_servers_zone() -> None:
    window = Window.parse("01:00-05:00", "Asia/Shanghai")
    assert window.contains(datetime(2026, 12, 4, 18, 30, tzinfo=UTC))  # 02:30 in Shanghai
    assert not window.contains(datetime(2026, 12, 4, 2, 0, tzinfo=UTC))  # 10:00 there
    assert str(window) == "01:00-05:00 Asia/Shanghai"


def test_a_window_over_midnight() -> None:
    window = Window.parse("22:00-04:00")
    assert window.contains(datetime(2026, 1, 1, 23, 0, tzinfo=UTC))
    assert window.contains(datetime(2026, 1, 1, 3, 59, tzinfo=UTC))
    assert not window.contains(datetime(2026, 1, 1, 4, 0, tzinfo=UTC))
    assert not window.contains(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


def test_no_window_is_any_time() -> None:
    assert Window.parse("", "Asia/Shanghai").contains(datetime.now(UTC))


@pytest.mark.parametrize(
    ("text", "zone", "says"),
    [
        ("1-5", "UTC", "expected HH:MM-HH:MM"),
        ("25:00-05:00", "UTC", "expected HH:MM-HH:MM"),
        ("03:00-03:00", "UTC", "start and end are the same"),
        ("01:00-05:00", "Mars/Olympus", "expected an IANA name"),
    ],
)
def test_a_window_written_wrong_says_what_was_expected(text: str, zone: str, says: str) -> None:
    with pytest.raises(WindowError, match=says):
        Window.parse(text, zone)


@given(
    start=st.integers(0, 24 * 60 - 1),
    length=st.integers(1, 24 * 60 - 1),
    at=st.integers(0, 24 * 60 - 1),
)
def test_a_window_holds_exactly_the_minutes_from_its_start_for_its_length(
    start: int, length: int, at: int
) -> None:
    end = (start + length) % (24 * 60)
    text = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    window = Window.parse(text)
    moment = datetime(2026, 6, 1, tzinfo=UTC) + timedelta(minutes=at)
    inside = (at - start) % (24 * 60) < length
    assert window.contains(moment) == inside, (text, time(at // 60, at % 60))
