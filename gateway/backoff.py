"""Exponential back-off with jitter and reset: the one way the gateway and the fleet wait
before trying again (a broker, a TCP device, a SunSpec chain, a silent unit, the database).

Delays come in steps. The first step is ``first``; every :meth:`Backoff.next` hands out a
delay of the current step and multiplies the step by ``factor``, up to ``most``;
:meth:`Backoff.reset` starts again from ``first``. A delay is its step scaled by a factor
drawn uniformly from ``jitter = (low, high)``:

* :data:`NO_JITTER` ``(1, 1)``, the default: exactly the step (1, 2, 4, … s);
* :data:`EQUAL_JITTER` ``(0.5, 1)``: between half the step and the step, so that gateways
  that lost the broker together do not all come back in the same instant;
* ``(1 - j, 1 + j)``: the step give or take ``j`` of it (the circuit breaker's probes).
"""

from __future__ import annotations

import random

NO_JITTER = (1.0, 1.0)
EQUAL_JITTER = (0.5, 1.0)


class Backoff:
    """Delays that grow from ``first`` by ``factor`` up to ``most``, each scaled by a uniform
    draw from ``jitter``; ``rng`` makes the draws reproducible in tests."""

    def __init__(
        self,
        first: float,
        most: float,
        *,
        factor: float = 2.0,
        jitter: tuple[float, float] = NO_JITTER,
        rng: random.Random | None = None,
    ) -> None:
        low, high = jitter
        if not 0 < first <= most:
            raise ValueError(f"back-off: need 0 < first <= most, got first={first} most={most}")
        if factor < 1:
            raise ValueError(f"back-off: factor {factor} is below 1")
        if not 0 <= low <= high:
            raise ValueError(f"back-off: jitter {jitter} is not (low, high) with 0 <= low <= high")
        self.first = first
        self.most = most
        self.factor = factor
        self.jitter = (low, high)
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._step = first  # the step of the next delay
        self._last = first  # the step of the delay handed out last

    @property
    def step(self) -> float:
        """The step the next delay is drawn from (``first`` after a reset)."""
        return self._step

    def next(self) -> float:
        """A delay of the current step; the step then grows by ``factor`` (up to ``most``)."""
        self._last = self._step
        self._step = min(self._step * self.factor, self.most)
        return self._draw(self._last)

    def again(self) -> float:
        """Another delay of the step :meth:`next` used last, without growing: for an attempt
        that ended without a verdict and is simply made again."""
        return self._draw(self._last)

    def reset(self) -> None:
        """Start again from ``first`` (the thing came back)."""
        self._step = self._last = self.first

    def _draw(self, step: float) -> float:
        low, high = self.jitter
        if low == high:
            return step * low
        return self._rng.uniform(step * low, step * high)
