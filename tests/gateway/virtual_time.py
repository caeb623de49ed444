"""An asyncio event loop on a virtual clock, for tests that control time instead of sleeping.

Its clock starts at 0 and moves only when every task is waiting: then it jumps straight to
the next timer. ``asyncio.sleep``, ``asyncio.timeout`` and ``loop.call_later`` behave as
usual, in no wall-clock time at all; code under test reads the clock as ``loop.time`` (the
clock asyncio itself uses), e.g. ``ControlLoop(..., clock=loop.time)``.

    virtual_time.run(scenario())
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import TypeVar

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_Selector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class _Selector(selectors.DefaultSelector):
    """Polls without blocking; where the loop would block until its next timer, the virtual
    clock moves to it instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("every task waits and no timer is set: the test would hang")
        self._loop.advance(timeout)
        return ready


def run(main: Coroutine[object, object, T]) -> T:
    """Run ``main`` to completion on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
