"""A per-device circuit breaker for a shared bus.

On RS-485 every silent unit costs the whole line a timeout. The breaker opens after a few
consecutive failed transactions, so the scheduler stops sending to the unit, and probes it
with a single request after a back-off that grows (with jitter) up to a maximum — instead of
closing the port, which would break every other unit on the line (pymodbus #3012/#3014).

The per-attempt timeout adapts to the unit's measured latency like TCP's retransmission
timeout (Jacobson/Karels: srtt + 4·rttvar), clamped to a policy range, so a slow but alive
unit is not declared dead and a fast one does not cost a long wait when it misses a frame.

The probing schedule is a :class:`gateway.backoff.Backoff` from the policy: the first probe one
``backoff_initial_s`` (give or take ``jitter`` of it) after opening, each unanswered probe
multiplying the wait by ``backoff_factor`` up to ``backoff_max_s``, a probe given back
(:meth:`CircuitBreaker.abandon`) retried after the same wait, and a unit that answers starting
again from the initial wait.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.backoff import Backoff


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    initial_timeout_s: float = 0.5
    min_timeout_s: float = 0.05
    max_timeout_s: float = 2.0
    failures_to_open: int = 3
    retries: int = 1
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    jitter: float = 0.1


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy | None = None, rng: random.Random | None = None):
        self.policy = policy or BreakerPolicy()
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.next_probe_at: float | None = None
        self.transitions = 0
        self.on_change: Callable[[BreakerState, BreakerState], None] | None = None
        self._probes = Backoff(
            self.policy.backoff_initial_s,
            self.policy.backoff_max_s,
            factor=self.policy.backoff_factor,
            jitter=(1 - self.policy.jitter, 1 + self.policy.jitter),
            rng=rng,
        )
        self._probe_out = False
        self._srtt: float | None = None
        self._rttvar = 0.0

    @property
    def timeout_s(self) -> float:
        p = self.policy
        if self._srtt is None:
            return p.initial_timeout_s
        return min(p.max_timeout_s, max(p.min_timeout_s, self._srtt + 4 * self._rttvar))

    @property
    def attempts(self) -> int:
        return 1 + self.policy.retries if self.state is BreakerState.CLOSED else 1

    def allow(self, now: float) -> bool:
        """Whether a request may be sent now. In OPEN past the back-off this hands out the
        single probe (moving to HALF_OPEN): call it only for a request about to be sent."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            assert self.next_probe_at is not None
            if now < self.next_probe_at:
                return False
            self._set(BreakerState.HALF_OPEN)
            self.next_probe_at = None
            self._probe_out = True
            return True
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def record_success(self, now: float, latency_s: float) -> None:
        self._sample(latency_s)
        self.consecutive_failures = 0
        self._probe_out = False
        if self.state is not BreakerState.CLOSED:
            self._probes.reset()
            self.next_probe_at = None
            self._set(BreakerState.CLOSED)

    def record_exception_response(self, now: float, latency_s: float) -> None:
        """A Modbus exception answer proves the unit is alive."""
        self.record_success(now, latency_s)

    def record_failure(self, now: float) -> None:
        p = self.policy
        self.consecutive_failures += 1
        self._probe_out = False
        probe_failed = self.state is BreakerState.HALF_OPEN
        too_many = (
            self.state is BreakerState.CLOSED and self.consecutive_failures >= p.failures_to_open
        )
        if probe_failed or too_many:  # from CLOSED the first step: it was reset when it closed
            self._open(now, self._probes.next())

    def abandon(self, now: float) -> None:
        """A request handed out by :meth:`allow` ended without a verdict (cancelled, or an
        error that says nothing about the unit): a probe is given back, so the breaker goes
        back to OPEN with the same back-off and probes again later instead of waiting for an
        outcome that never comes."""
        if self.state is BreakerState.HALF_OPEN and self._probe_out:
            self._open(now, self._probes.again())
        self._probe_out = False

    def _open(self, now: float, wait: float) -> None:
        self.next_probe_at = now + wait
        self._set(BreakerState.OPEN)

    def _sample(self, latency_s: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = latency_s, latency_s / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - latency_s)
            self._srtt = 0.875 * self._srtt + 0.125 * latency_s

    def _set(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old is not new:
            self.transitions += 1
            if self.on_change is not None:
                self.on_change(old, new)
