"""The one back-off: delays grow from the first step to the most, jittered within their step's
range, and start over after a reset."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.backoff import EQUAL_JITTER, NO_JITTER, Backoff


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    first = draw(st.floats(0.001, 10.0))
    most = first * draw(st.floats(1.0, 1000.0))
    low = draw(st.floats(0.0, 1.0))
    high = low + draw(st.floats(0.0, 1.0))
    return Backoff(
        first,
        most,
        factor=draw(st.floats(1.0, 4.0)),
        jitter=(low, high),
        rng=random.Random(draw(st.integers(0, 2**32))),
    )


def within(delay: float, step: float, jitter: tuple[float, float]) -> bool:
    low, high = jitter
    return step * low * (1 - 1e-12) <= delay <= step * high * (1 + 1e-12)


@given(backoff=backoffs(), n=st.integers(1, 80))
def test_every_delay_stays_between_the_first_and_the_most_step_jittered(
    backoff: Backoff, n: int
) -> None:
    low, high = backoff.jitter
    for _ in range(n):
        delay = backoff.next()
        assert backoff.first * low * (1 - 1e-12) <= delay <= backoff.most * high * (1 + 1e-12)


@given(backoff=backoffs(), n=st.integers(1, 80))
def test_each_delay_is_drawn_from_its_own_step_which_grows_by_the_factor_up_to_the_most(
    backoff: Backoff, n: int
) -> None:
    for _ in range(n):
        step = backoff.step
        assert within(backoff.next(), step, backoff.jitter)
        assert backoff.step == min(step * backoff.factor, backoff.most)
        assert backoff.step >= step, "a step never shrinks without a reset"


@given(
    first=st.floats(0.01, 10.0),
    most=st.floats(10.0, 100.0),
    factor=st.floats(1.1, 4.0),
)
def test_the_steps_reach_the_most_and_stay_there(first: float, most: float, factor: float) -> None:
    backoff = Backoff(first, most, factor=factor)
    enough = math.ceil(math.log(most / first, factor)) + 1
    delays = [backoff.next() for _ in range(enough + 5)]
    assert delays[-5:] == [most] * 5
    assert delays == sorted(delays)


def test_without_jitter_the_delays_double_from_the_first_step() -> None:
    backoff = Backoff(0.5, 10.0)
    assert backoff.jitter == NO_JITTER
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@given(backoff=backoffs(), n=st.integers(2, 200))
def test_a_held_step_jitters_within_its_range_and_does_not_grow(backoff: Backoff, n: int) -> None:
    """``again`` draws from the step handed out last: [low, high] times it, no growth."""
    backoff.next()
    step = backoff.first
    delays = [backoff.again() for _ in range(n)]
    assert all(within(d, step, backoff.jitter) for d in delays)
    assert backoff.step == min(step * backoff.factor, backoff.most), "again() does not grow"


def test_equal_jitter_spreads_gateways_over_the_upper_half_of_the_step() -> None:
    backoff = Backoff(8.0, 8.0, jitter=EQUAL_JITTER, rng=random.Random(7))
    delays = [backoff.next() for _ in range(2000)]
    assert min(delays) >= 4.0
    assert max(delays) <= 8.0
    assert min(delays) < 4.1, "the lower end is reached"
    assert max(delays) > 7.9, "the upper end is reached"


@given(backoff=backoffs(), before=st.integers(0, 40))
def test_a_reset_starts_again_from_the_first_step(backoff: Backoff, before: int) -> None:
    for _ in range(before):
        backoff.next()
    backoff.reset()
    assert backoff.step == backoff.first
    assert within(backoff.again(), backoff.first, backoff.jitter)
    assert within(backoff.next(), backoff.first, backoff.jitter)


@pytest.mark.parametrize(
    ("first", "most", "factor", "jitter"),
    [
        (0.0, 1.0, 2.0, NO_JITTER),
        (2.0, 1.0, 2.0, NO_JITTER),
        (1.0, 2.0, 0.5, NO_JITTER),
        (1.0, 2.0, 2.0, (1.5, 1.0)),
        (1.0, 2.0, 2.0, (-0.1, 1.0)),
    ],
)
def test_parameters_that_make_no_back_off_are_refused(
    first: float, most: float, factor: float, jitter: tuple[float, float]
) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Backoff(first, most, factor=factor, jitter=jitter)
