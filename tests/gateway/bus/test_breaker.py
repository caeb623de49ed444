"""The per-device circuit breaker, driven by a controlled clock against a model of its rules."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.bus.breaker import BreakerPolicy, BreakerState, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@st.composite
def policies(draw: st.DrawFn) -> BreakerPolicy:
    min_timeout = draw(st.floats(0.01, 0.2))
    max_timeout = draw(st.floats(min_timeout, 5.0))
    backoff_initial = draw(st.floats(0.1, 5.0))
    # a maximum a few doublings away, so that runs reach it
    backoff_max = backoff_initial * draw(st.floats(1.0, 10.0))
    return BreakerPolicy(
        initial_timeout_s=draw(st.floats(min_timeout, max_timeout)),
        min_timeout_s=min_timeout,
        max_timeout_s=max_timeout,
        failures_to_open=draw(st.integers(1, 5)),
        retries=draw(st.integers(0, 3)),
        backoff_initial_s=backoff_initial,
        backoff_max_s=backoff_max,
        backoff_factor=draw(st.floats(1.0, 4.0)),
        jitter=draw(st.floats(0.0, 0.5)),
    )


latencies = st.floats(0.0, 3.0)


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker as the scheduler does and checks it against a few lines of model."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.changes: list[tuple[BreakerState, BreakerState]] = []
        self.expected_changes: list[tuple[BreakerState, BreakerState]] = []
        self.state = CLOSED
        self.failures = 0
        self.backoff = 0.0
        self.probe_at = 0.0
        self.probe_out = False

    @initialize(policy=policies(), seed=st.integers(0, 2**32))
    def start(self, policy: BreakerPolicy, seed: int) -> None:
        self.policy = policy
        self.breaker = CircuitBreaker(policy, random.Random(seed))
        self.breaker.on_change = lambda old, new: self.changes.append((old, new))
        self.backoff = policy.backoff_initial_s

    # -- the model ------------------------------------------------------------------------

    def expect(self, new: BreakerState) -> None:
        if new is not self.state:
            self.expected_changes.append((self.state, new))
        self.state = new

    def expect_open(self) -> None:
        """Opening schedules the probe one back-off (give or take the jitter) from now."""
        self.expect(OPEN)
        assert self.breaker.next_probe_at is not None
        delay = self.breaker.next_probe_at - self.now
        spread = self.backoff * self.policy.jitter
        assert self.backoff - spread - 1e-9 <= delay <= self.backoff + spread + 1e-9
        self.probe_at = self.breaker.next_probe_at

    # -- rules ----------------------------------------------------------------------------

    @rule(dt=st.floats(0.0, 40.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.state is OPEN)
    @rule()
    def time_reaches_the_probe(self) -> None:
        self.now = max(self.now, self.probe_at)

    @precondition(lambda self: self.state is OPEN)
    @rule()
    def time_stops_just_short_of_the_probe(self) -> None:
        if self.now < self.probe_at:
            self.now = max(self.now, self.probe_at - 1e-6)

    @rule()
    def allow(self) -> None:
        allowed = self.breaker.allow(self.now)
        if self.state is CLOSED:
            assert allowed
        elif self.state is OPEN and self.now < self.probe_at:
            assert not allowed, "an open breaker let a request through before its back-off"
        elif self.state is OPEN:
            assert allowed, "the probe was not handed out after the back-off"
            self.expect(HALF_OPEN)
            self.probe_out = True
        else:
            assert not allowed, "a second probe went out before the first one's outcome"

    @rule(latency=latencies)
    def success(self, latency: float) -> None:
        self.breaker.record_success(self.now, latency)
        self.answered()

    @rule(latency=latencies)
    def exception_response(self, latency: float) -> None:
        self.breaker.record_exception_response(self.now, latency)
        self.answered()

    def answered(self) -> None:
        self.failures = 0
        self.probe_out = False
        if self.state is not CLOSED:
            self.backoff = self.policy.backoff_initial_s
        self.expect(CLOSED)

    @rule()
    def failure(self) -> None:
        was = self.state
        previous_backoff = self.backoff
        self.breaker.record_failure(self.now)
        self.failures += 1
        self.probe_out = False
        if was is HALF_OPEN:
            self.backoff = min(
                previous_backoff * self.policy.backoff_factor, self.policy.backoff_max_s
            )
            assert self.backoff >= min(previous_backoff, self.policy.backoff_max_s)
            self.expect_open()
        elif was is CLOSED and self.failures >= self.policy.failures_to_open:
            self.expect_open()

    @rule()
    def the_request_is_abandoned(self) -> None:
        """Cancelled mid-transaction: no verdict. A probe goes back and is retried after the
        same back-off; a closed breaker does not count it."""
        self.breaker.abandon(self.now)
        if self.state is HALF_OPEN and self.probe_out:
            self.expect_open()
        self.probe_out = False

    @precondition(lambda self: self.state is OPEN)
    @rule()
    def the_probe_goes_unanswered(self) -> None:
        self.time_reaches_the_probe()
        self.allow()
        self.failure()

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def state_matches_the_model(self) -> None:
        assert self.breaker.state is self.state
        assert self.breaker.consecutive_failures == self.failures

    @invariant()
    def on_change_fires_exactly_once_per_real_change(self) -> None:
        assert self.changes == self.expected_changes
        assert all(old is not new for old, new in self.changes)
        assert self.breaker.transitions == len(self.changes)

    @invariant()
    def timeout_stays_within_the_policy(self) -> None:
        p = self.policy
        assert p.min_timeout_s <= self.breaker.timeout_s <= p.max_timeout_s

    @invariant()
    def only_a_closed_breaker_retries(self) -> None:
        expected = 1 + self.policy.retries if self.state is CLOSED else 1
        assert self.breaker.attempts == expected

    @invariant()
    def an_open_breaker_knows_when_to_probe(self) -> None:
        assert (self.breaker.next_probe_at is not None) == (self.state is OPEN)

    @invariant()
    def the_back_off_never_exceeds_its_maximum(self) -> None:
        assert self.backoff <= self.policy.backoff_max_s


TestBreakerRules = BreakerMachine.TestCase


# -- examples that read like the behaviour ----------------------------------------------------


def opened(policy: BreakerPolicy | None = None) -> CircuitBreaker:
    breaker = CircuitBreaker(policy or BreakerPolicy(jitter=0.0), random.Random(1))
    for _ in range(breaker.policy.failures_to_open):
        breaker.record_failure(0.0)
    assert breaker.state is OPEN
    return breaker


def test_a_silent_unit_is_probed_once_after_the_back_off_and_then_less_often() -> None:
    breaker = opened(BreakerPolicy(jitter=0.0, backoff_initial_s=1.0, backoff_max_s=3.0))
    assert not breaker.allow(0.999)
    assert breaker.allow(1.0)
    assert not breaker.allow(1.0)
    breaker.record_failure(1.5)
    assert breaker.next_probe_at == pytest.approx(3.5)
    assert breaker.allow(3.5)
    breaker.record_failure(3.5)
    assert breaker.next_probe_at == pytest.approx(6.5), "the back-off is capped at its maximum"


def test_a_unit_that_answers_the_probe_is_polled_normally_again() -> None:
    breaker = opened()
    assert breaker.allow(breaker.policy.backoff_initial_s)
    breaker.record_success(1.1, 0.02)
    assert breaker.state is CLOSED
    assert breaker.allow(1.2)
    assert breaker.attempts == 1 + breaker.policy.retries


def test_an_exception_answer_proves_the_unit_alive() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures_to_open=2))
    breaker.record_failure(0.0)
    breaker.record_exception_response(0.1, 0.02)
    breaker.record_failure(0.2)
    assert breaker.state is CLOSED, "failures around an exception answer are not consecutive"


def test_a_recovered_unit_starts_again_from_the_initial_back_off() -> None:
    breaker = opened()
    breaker.allow(1.0)
    breaker.record_failure(1.0)  # back-off doubles to 2 s
    breaker.allow(3.0)
    breaker.record_success(3.0, 0.02)
    for _ in range(breaker.policy.failures_to_open):
        breaker.record_failure(10.0)
    assert breaker.next_probe_at == pytest.approx(10.0 + breaker.policy.backoff_initial_s)


@given(latency=st.floats(0.001, 0.4), jitter=st.floats(0.0, 0.5))
def test_the_timeout_settles_between_the_steady_latency_and_four_times_it(
    latency: float, jitter: float
) -> None:
    policy = BreakerPolicy(min_timeout_s=0.001, max_timeout_s=5.0)
    breaker = CircuitBreaker(policy)
    rng = random.Random(0)
    for _ in range(200):
        breaker.record_success(0.0, latency * (1 + rng.uniform(-jitter, jitter) / 4))
    assert latency * (1 - jitter / 4) <= breaker.timeout_s <= 4 * latency


def test_a_steady_40_ms_unit_gets_a_timeout_near_40_ms() -> None:
    breaker = CircuitBreaker(BreakerPolicy(min_timeout_s=0.01))
    assert breaker.timeout_s == BreakerPolicy().initial_timeout_s
    for _ in range(50):
        breaker.record_success(0.0, 0.040)
    assert 0.040 <= breaker.timeout_s <= 0.045


def test_a_unit_that_slows_down_is_given_a_longer_timeout_not_declared_dead() -> None:
    breaker = CircuitBreaker(BreakerPolicy(min_timeout_s=0.01))
    for _ in range(50):
        breaker.record_success(0.0, 0.040)
    for _ in range(20):
        breaker.record_success(0.0, 0.400)
    assert breaker.timeout_s > 0.400


def test_the_timeout_is_clamped_to_the_policy_range() -> None:
    policy = BreakerPolicy(min_timeout_s=0.05, max_timeout_s=2.0)
    fast, slow = CircuitBreaker(policy), CircuitBreaker(policy)
    for _ in range(20):
        fast.record_success(0.0, 0.001)
        slow.record_success(0.0, 10.0)
    assert fast.timeout_s == 0.05
    assert slow.timeout_s == 2.0
