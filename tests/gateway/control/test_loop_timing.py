"""The control loop's timing on a virtual clock: its grid, its lateness, the cycles it skips.

Every test runs on :class:`~tests.gateway.virtual_time.VirtualTimeLoop`: a step "takes" its
time by ``asyncio.sleep`` and no test waits on the wall clock. The period is a binary
fraction, so the clock adds periods up without rounding and the grid can be compared exactly.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control.loop import ControlLoop
from tests.gateway import virtual_time

PERIOD = 1 / 16


@dataclass(frozen=True)
class Cycle:
    """What a step saw when it started."""

    now: float
    dt: float
    cycles: int
    skipped: int


async def _cycles(durations: list[float]) -> tuple[ControlLoop, list[Cycle]]:
    """Run a loop whose i-th step takes ``durations[i]``; stop at the cycle after the last."""
    seen: list[Cycle] = []
    pending = iter(durations)
    done = asyncio.Event()

    async def step(now: float, dt: float) -> None:
        seen.append(Cycle(now, dt, loop.cycles, loop.skipped))
        duration = next(pending, None)
        if duration is None:
            done.set()
        else:
            await asyncio.sleep(duration)

    loop = ControlLoop(PERIOD, step, clock=asyncio.get_running_loop().time)
    task = asyncio.create_task(loop.run())
    await done.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return loop, seen


def test_cycles_start_on_the_grid_however_long_the_work_inside_them_takes() -> None:
    durations = [PERIOD / 4, PERIOD / 2, 0.0, PERIOD * 15 / 16] * 10
    loop, seen = virtual_time.run(_cycles(durations))
    start = seen[0].now
    assert [c.now - start for c in seen] == [k * PERIOD for k in range(len(seen))]
    assert [c.dt for c in seen[1:]] == [PERIOD] * len(durations)
    assert loop.skipped == 0
    assert loop.max_lateness_s == 0.0


def test_a_step_that_overruns_skips_the_lost_periods_and_resumes_on_the_grid() -> None:
    # the third step takes two and a half periods: slot 3 is lost, slot 4 runs half a period
    # late, and from slot 5 on the loop is back on its grid, with no burst to catch up
    durations = [0.0, 0.0, 2.5 * PERIOD, 0.0, 0.0, 0.0]
    loop, seen = virtual_time.run(_cycles(durations))
    start = seen[0].now
    assert [(c.now - start) / PERIOD for c in seen] == [0, 1, 2, 4.5, 5, 6, 7]
    assert loop.skipped == 1
    assert loop.max_lateness_s == PERIOD / 2
    assert loop.lateness.p50 == 0.0
    assert seen[3].dt == 2.5 * PERIOD, "the step after a stall is told how long it was"


def test_a_step_stalled_for_whole_periods_resumes_on_time_at_the_next_slot() -> None:
    durations = [0.0, 10 * PERIOD, 0.0, 0.0]
    loop, seen = virtual_time.run(_cycles(durations))
    start = seen[0].now
    assert [(c.now - start) / PERIOD for c in seen] == [0, 1, 11, 12, 13]
    assert loop.skipped == 9
    assert loop.max_lateness_s == 0.0


# step durations in 1/256 s, up to five periods: exact binary fractions, like the period
step_durations = st.lists(
    st.integers(0, 5 * 16).map(lambda n: n / 256),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(durations=step_durations)
def test_for_any_step_durations_cycles_and_skipped_periods_account_for_the_elapsed_time(
    durations: list[float],
) -> None:
    loop, seen = virtual_time.run(_cycles(durations))
    start = seen[0].now
    for c in seen:
        slot = c.cycles + c.skipped - 1  # the grid slot this cycle runs for
        late = c.now - start - slot * PERIOD
        assert 0 <= late < PERIOD, "a cycle ran before its slot, or a whole period late"
    elapsed = seen[-1].now - start
    assert len(seen) <= math.floor(elapsed / PERIOD) + 1, "more cycles than the grid has slots"
    if all(d < PERIOD for d in durations):
        assert loop.skipped == 0
        assert loop.max_lateness_s == 0.0
    assert loop.max_lateness_s == max(
        c.now - start - (c.cycles + c.skipped - 1) * PERIOD for c in seen
    )


def test_a_wake_up_reacts_at_once_and_leaves_the_grid_where_it_was() -> None:
    async def scenario() -> tuple[list[float], list[float], float]:
        clock = asyncio.get_running_loop().time
        ticks: list[float] = []
        reactions: list[float] = []

        async def step(now: float, dt: float) -> None:
            ticks.append(now)

        loop = ControlLoop(PERIOD, step, reactions.append, clock=clock)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(PERIOD / 4)
        loop.wake()  # an interlock input changed between cycles
        await asyncio.sleep(3 * PERIOD)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return ticks, reactions, loop.max_lateness_s

    ticks, reactions, max_lateness = virtual_time.run(scenario())
    start = ticks[0]
    assert [r - start for r in reactions] == [PERIOD / 4], "not acted on at once"
    assert [t - start for t in ticks] == [k * PERIOD for k in range(len(ticks))]
    assert max_lateness == 0.0
