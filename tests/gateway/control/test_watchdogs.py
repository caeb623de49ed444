"""Keeping device watchdogs alive: the heartbeat cadence, and silence while the loop is sick.

The keeper is driven by a plain number as its clock; the supervisor runs on a virtual-time
event loop (:mod:`tests.gateway.virtual_time`), so a stall of seconds takes no time at all.
"""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control.actuator import Actuator
from gateway.control.alarms import AlarmLog
from gateway.control.engine import InterlockEngine
from gateway.control.loop import ControlConfig, Supervisor
from gateway.control.watchdogs import WatchdogKeeper
from gateway.devices.codec import Value
from gateway.devices.profile import Watchdog, load_profile
from gateway.image import ProcessImage, Quality
from tests.gateway import virtual_time

SIO = load_profile("SIO-1").watchdog  # counter heartbeat; timeout in ms, default 0.5 s
CHARGER = load_profile("EVSE-HEC").watchdog  # no heartbeat register: rewrites its timeout
assert SIO is not None
assert CHARGER is not None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def keeper_of(device: str, watchdog: Watchdog, clock: Clock) -> tuple[WatchdogKeeper, ProcessImage]:
    image = ProcessImage(clock)
    keeper = WatchdogKeeper(image, clock=clock)
    keeper.keep(device, watchdog)
    return keeper, image


def beat_times(keeper: WatchdogKeeper, clock: Clock, period: float, seconds: float) -> list[float]:
    """Tick the keeper once per control period, as a healthy loop does; every beat lands."""
    times = []
    for _ in range(round(seconds / period)):
        for beat in keeper.due(clock.now):
            keeper.sent(beat)
            times.append(clock.now)
        clock.now += period
    return times


def pairs(times: list[float]) -> list[tuple[float, float]]:
    assert len(times) >= 2
    return list(itertools.pairwise(times))


@settings(max_examples=60, deadline=None)
@given(timeout_ms=st.integers(300, 10_000), period_ms=st.sampled_from([10, 20, 50, 100]))
def test_heartbeats_go_out_every_third_of_the_timeout_give_or_take_one_control_period(
    timeout_ms: int, period_ms: int
) -> None:
    clock = Clock()
    keeper, image = keeper_of("sio", SIO, clock)
    image.update("sio", "watchdog_timeout", timeout_ms)
    timeout, period = timeout_ms / 1000, period_ms / 1000
    times = beat_times(keeper, clock, period, seconds=10 * timeout)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= timeout / 3 - 1e-9, "heartbeats more often than the device needs"
    assert max(gaps) < timeout / 3 + period + 1e-9, "a heartbeat late by more than a cycle"


def test_the_cadence_follows_the_timeout_the_device_reports() -> None:
    clock = Clock()
    keeper, image = keeper_of("sio", SIO, clock)
    before = beat_times(keeper, clock, 0.05, seconds=2.0)
    image.update("sio", "watchdog_timeout", 3000)  # read from the board: 3 s
    after = beat_times(keeper, clock, 0.05, seconds=6.0)
    # until it is read, the profile's default of 0.5 s: a beat every 1/6 s (and a cycle)
    assert all(0.5 / 3 - 1e-9 <= b - a <= 0.5 / 3 + 0.05 + 1e-9 for a, b in pairs(before))
    assert all(1.0 - 1e-9 <= b - a <= 1.05 + 1e-9 for a, b in pairs(after))
    assert after[0] - before[-1] <= 1.05 + 1e-9


def test_a_counter_heartbeat_counts_only_the_beats_that_reached_the_device() -> None:
    clock = Clock()
    keeper, _ = keeper_of("sio", SIO, clock)
    values = []
    for landed in (True, True, False, True):
        (beat,) = keeper.due(clock.now)
        values.append(beat.value)
        if landed:
            keeper.sent(beat)
        clock.now += 1.0
    assert [b.point for b in keeper.due(clock.now)] == ["heartbeat"]
    assert values == [0, 1, 2, 2], "a lost beat was counted as if the device had seen it"


def test_a_device_without_a_heartbeat_register_has_its_timeout_rewritten_once_it_is_read() -> None:
    clock = Clock()
    keeper, image = keeper_of("charger", CHARGER, clock)
    assert keeper.due(clock.now) == [], "a timeout invented before the device's was read"
    image.update("charger", "watchdog_timeout", 15_000)
    (beat,) = keeper.due(clock.now)
    assert (beat.point, beat.value) == ("watchdog_timeout", 15_000)
    clock.now += 4.9
    assert keeper.due(clock.now) == []
    clock.now += 0.1
    assert [b.value for b in keeper.due(clock.now)] == [15_000]


def test_low_remaining_time_is_reported_only_after_a_whole_timeout_of_heartbeats() -> None:
    clock = Clock()
    keeper, image = keeper_of("sio", SIO, clock)
    image.update("sio", "watchdog_timeout", 1500)
    image.update("sio", "watchdog_remaining", 40)  # 0.4 s left of 1.5 s: below a third
    assert not keeper.remaining_low("sio"), "no heartbeat sent yet: the reading is from before"
    for beat in keeper.due(clock.now):
        keeper.sent(beat)
    clock.now += 1.4
    assert not keeper.remaining_low("sio"), "judged before a whole timeout of heartbeats"
    clock.now += 0.2
    assert keeper.remaining_low("sio")
    image.update("sio", "watchdog_remaining", 120)
    assert not keeper.remaining_low("sio")
    image.update("sio", "watchdog_remaining", 40)
    image.mark("sio", "watchdog_remaining", Quality.STALE)
    assert not keeper.remaining_low("sio"), "a stale reading raised the alarm"
    image.update("sio", "watchdog_timeout", 0)  # the watchdog is off
    assert not keeper.remaining_low("sio")


# -- through the supervisor's control loop ------------------------------------------------


async def _heartbeats(
    stall_at: float | None = None, stall_s: float = 0.0, run_s: float = 8.0
) -> tuple[list[float], list[tuple[float, bool]]]:
    """Heartbeat write times of a kept SIO-1 (timeout 1.5 s) under a supervisor on the
    virtual clock (50 ms period, unhealthy after 500 ms), and its health sampled every
    0.1 s; the loop stalls once if asked."""
    clock = asyncio.get_running_loop().time
    image = ProcessImage(clock)
    image.update("sio", "watchdog_timeout", 1500)
    actuator, alarms = Actuator(image), AlarmLog()
    keeper = WatchdogKeeper(image, clock=clock)
    keeper.keep("sio", SIO)
    engine = InterlockEngine([], {}, image, actuator, alarms)
    written: list[float] = []
    health: list[tuple[float, bool]] = []

    async def writer(device: str, point: str, value: Value) -> None:
        assert (device, point) == ("sio", "heartbeat")
        written.append(clock() - start)

    async def sample_health() -> None:
        while True:
            health.append((clock() - start, supervisor.healthy()))
            await asyncio.sleep(0.1)

    config = ControlConfig(period_ms=50, unhealthy_after_ms=500)
    start = clock()
    async with Supervisor(config, engine, actuator, keeper, writer, clock=clock) as supervisor:
        sampler = asyncio.create_task(sample_health())
        if stall_at is not None:
            await asyncio.sleep(stall_at)
            supervisor.inject_stall(stall_s)
        await asyncio.sleep(run_s - (stall_at or 0.0))
        sampler.cancel()
    return written, health


def test_a_healthy_loop_keeps_heartbeats_within_a_third_of_the_timeout_and_a_cycle() -> None:
    written, health = virtual_time.run(_heartbeats(run_s=6.0))
    gaps = [b - a for a, b in itertools.pairwise(written)]
    assert written[0] < 0.05, "the first heartbeat waited"
    assert len(written) >= 11
    assert max(gaps) <= 0.5 + 0.05 + 1e-9
    assert all(ok for _, ok in health)


def test_heartbeats_stop_while_the_loop_stalls_so_the_device_falls_back_on_its_own() -> None:
    # set between two cycles at 2.01 s, the stall hangs the cycle of 2.05 s until 5.07 s
    written, health = virtual_time.run(_heartbeats(stall_at=2.01, stall_s=3.02, run_s=8.0))
    assert [w for w in written if 2.05 < w < 5.07] == [], "a stalled loop kept the device managed"
    gaps = [b - a for a, b in itertools.pairwise(written)]
    assert max(gaps) > 1.5, "no gap as long as the device's timeout: it never fell back"
    resumed = [w for w in written if w >= 5.07]
    # the cycle that ends the stall knows it was stalled (dt > 0.5 s) and writes nothing;
    # the next one, on time again, does
    assert resumed, "heartbeats did not resume after the stall"
    assert 5.07 < resumed[0] <= 5.07 + 0.05 + 1e-9, resumed[0]
    sick = [t for t, ok in health if not ok]
    assert sick, "the supervisor called a stalled loop healthy"
    assert min(sick) >= 2.55 - 1e-9, "unhealthy before 500 ms without a cycle"
    assert max(sick) < 5.07, "still unhealthy after the loop resumed"


def test_a_device_back_from_silence_is_not_judged_on_what_it_reports_right_away() -> None:
    # offline, its watchdog ran out; its first readings after it answers again say so, until
    # heartbeats have reached it for a whole timeout: no "time running low" alarm for that
    clock = Clock()
    keeper, image = keeper_of("sio", SIO, clock)
    image.update("sio", "watchdog_timeout", 1500)
    for beat in keeper.due(clock.now):
        keeper.sent(beat)
    clock.now += 2.0
    for beat in keeper.due(clock.now):
        keeper.failed(beat)  # it stopped answering
    clock.now += 5.0
    image.update("sio", "watchdog_remaining", 0)  # back: its watchdog ran out meanwhile
    (beat,) = keeper.due(clock.now)
    keeper.sent(beat)
    assert not keeper.remaining_low("sio")
    clock.now += 1.6
    assert keeper.remaining_low("sio"), "heartbeats land, yet it reports time running out"
