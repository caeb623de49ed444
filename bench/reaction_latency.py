"""Reaction latency: an input changing at one simulated device to the corrective write landing
at another, under full polling load, on Modbus TCP and on RTU at 115200 baud.

Ten chargers (EVSE-HEC) are polled at safety 50 ms, telemetry 100 ms and slow 1 s with a
50 ms control loop; on TCP each charger is its own endpoint, on RTU they share two lines of
five at 115200 baud (odd chargers on one, even on the other). One interlock watches
``charger-1.temperature`` and caps ``charger-2.max_current`` at 0 A. ``charger-2`` also
carries a standing operator setpoint of 16 A (priority 12), as a charger in service has one;
the cap wins over it while the interlock is active. Without it the actuator would keep 0 A as
the value it last sent after the release, and a trip within ``REASSERT_S`` (2 s) of that write
would wait out the 2 s as "sent, not read back yet".

Each trial waits a random 0–100 ms (so trials do not lock to the poll or control period),
sets charger-1's temperature register to 70 °C at time ``t0`` and waits for charger-2's
simulator to receive the write of 0 to register 261 (time ``t1``). The simulators run in this
process on the gateway's clock (``time.monotonic()``). The register is set directly, not
through the site physics: the physics tick (20 ms, ``hil_tests/rig/site.py`` ``TICK_S``)
would add up to 20 ms before the register changed. Between trials the simulator is put back
(30 °C, 16 A) and the trial waits until the gateway has seen it: interlock released, 16 A in
the image and in the actuator's record of what was sent.

Each latency is split at two more stamps: the image update that brought the hot value in
(``poll``: waiting for and reading the safety block), and the control cycle that handed the
write to the bus (``control``: waiting for the next cycle); ``write`` is the rest (bus queue
and transaction). Control-loop lateness (how late each 50 ms cycle woke) is the gateway's own
measure, over the trials only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.report import write_result
from gateway.bus.stats import LatencyWindow
from gateway.control.actuator import PRIORITY_OPERATOR
from gateway.devices.codec import Value
from gateway.devices.profile import PollClass, Table
from gateway.image import Quality, Sample
from gateway.site import SiteConfig, parse_site
from hil_tests.gateway_rig import Rig, rtu_bus, running, tcp_bus
from hil_tests.rig.rtu_line import FrameTiming
from hil_tests.rig.sim.charger import Charger

NAME = "reaction_latency"
CHARGERS = 10
RTU_BAUDRATE = 115200
RTU = f"rtu{RTU_BAUDRATE}"
#: trials per transport by default: the issue's 1000 on TCP, where the target is; an RTU
#: trial takes about 0.3 s (its overloaded lines need a safety cycle of ~120 ms to trip and
#: another to settle), so 1000 there would take 5 minutes on their own
TCP_TRIALS, RTU_TRIALS = 1000, 400
RTU_LINES = 2
POLL = {"safety": 0.05, "telemetry": 0.1, "slow": 1.0}
CONTROL_PERIOD_MS = 50
SOURCE, TARGET = "charger-1", "charger-2"
TRIP_C, HOT_C, NORMAL_C = 60.0, 70.0, 30.0
SETPOINT_A = 16.0
MAX_CURRENT_REGISTER = 261
#: a random wait before each trial, at least the longest of the periods involved
PHASE_S = 0.1
WARM_UP_S = 2.0
LANDING_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 10.0
WAIT_STEP_S = 0.005
SEED = 1
TARGETS = {"tcp_p99_ms": "<= 120", "loop_lateness_p99_ms_tcp": "< 5"}
INTERLOCK = f"""
[[interlocks]]
name = "bench"
when = {{ point = "{SOURCE}.temperature", gt = {TRIP_C} }}
actions = [ {{ write = "{TARGET}.max_current", value = 0.0, limit = true, priority = 1 }} ]
"""


# -- the site ---------------------------------------------------------------------------------


def site(kind: str) -> SiteConfig:
    """Ten chargers, each its own TCP endpoint (``tcp``) or five to an RTU line (``rtu``)."""
    if kind == "tcp":
        buses = [f"tcp-{i}" for i in range(1, CHARGERS + 1)]
        bus_of = dict(enumerate(buses, start=1))
        bus_text = "\n".join(tcp_bus(b) for b in buses)
    else:
        buses = [f"line-{chr(ord('a') + i)}" for i in range(RTU_LINES)]
        bus_of = {i: buses[(i - 1) % RTU_LINES] for i in range(1, CHARGERS + 1)}
        bus_text = "\n".join(rtu_bus(b, RTU_BAUDRATE) for b in buses)
    poll = "\n".join(f"{cls} = {period}" for cls, period in POLL.items())
    text = (
        f'[gateway]\nsite = "bench"\nid = "gw-bench"\n\n[poll]\n{poll}\n\n'
        f"[control]\nperiod_ms = {CONTROL_PERIOD_MS}\n\n{bus_text}\n"
    )
    for i, bus in bus_of.items():
        text += (
            f'\n[[devices]]\nname = "charger-{i}"\nprofile = "EVSE-HEC"\n'
            f'bus = "{bus}"\nunit_id = {i}\n'
        )
    return parse_site(text + INTERLOCK, "reaction-latency.toml")


# -- the stamps of one trial ------------------------------------------------------------------


@dataclass
class Trial:
    """Monotonic times of one trial: the input change and the three places it shows up."""

    changed: float
    read: float | None = None
    issued: float | None = None
    landed: float | None = None

    def parts(self) -> tuple[float, float, float]:
        """Seconds from the change to the read, from the read to the write handed to the
        bus, and from there to the write landing."""
        if self.read is None or self.issued is None or self.landed is None:
            raise RuntimeError(f"a trial missed a stamp: {self}")
        return self.read - self.changed, self.issued - self.read, self.landed - self.issued


class Probe:
    """Stamps the trial in flight from the image, the control loop's writer and the target's
    simulator (whose writes arrive in an RTU line's thread, or in this loop for TCP)."""

    def __init__(self) -> None:
        self.trial: Trial | None = None
        self._loop = asyncio.get_running_loop()
        self._landed = asyncio.Event()

    def start(self, changed: float) -> Trial:
        self._landed.clear()
        self.trial = Trial(changed)
        return self.trial

    async def landing(self) -> Trial:
        """Wait for the corrective write of the trial in flight."""
        async with asyncio.timeout(LANDING_TIMEOUT_S):
            await self._landed.wait()
        trial, self.trial = self.trial, None
        assert trial is not None
        return trial

    def on_image(self, device: str, point: str, sample: Sample) -> None:
        """The first image update that shows the hot input (the gateway has read it)."""
        trial = self.trial
        if trial is None or trial.read is not None or (device, point) != (SOURCE, "temperature"):
            return
        hot = isinstance(sample.value, int | float) and sample.value > TRIP_C
        if hot and sample.quality is Quality.GOOD:
            trial.read = sample.at

    def on_issue(self, device: str, point: str, value: Value) -> None:
        """The control loop hands the corrective write to the bus scheduler."""
        trial = self.trial
        corrective = (device, point, value) == (TARGET, "max_current", 0.0)
        if trial is not None and trial.issued is None and corrective:
            trial.issued = time.monotonic()

    def on_landing(self, table: Table, address: int, values: Sequence[int]) -> None:
        """A write reaches the target's simulator (any thread)."""
        trial = self.trial
        if trial is None or trial.landed is not None or table is not Table.HOLDING:
            return
        offset = MAX_CURRENT_REGISTER - address
        if 0 <= offset < len(values) and values[offset] == 0:
            trial.landed = time.monotonic()
            self._loop.call_soon_threadsafe(self._landed.set)


def instrument(rig: Rig, probe: Probe) -> None:
    """Hook the probe into the image, the control loop's writer and charger-2's simulator."""
    rig.gw.image.subscribe(probe.on_image)
    supervisor = rig.gw.supervisor
    writer = supervisor.writer

    async def write(device: str, point: str, value: Value) -> None:
        probe.on_issue(device, point, value)
        await writer(device, point, value)

    supervisor.writer = write
    target = rig.site.unit(TARGET)
    on_write = target.on_write

    def landed(table: Table, address: int, values: Sequence[int]) -> None:
        probe.on_landing(table, address, values)
        on_write(table, address, values)

    target.on_write = landed  # type: ignore[method-assign]


# -- driving the simulator ---------------------------------------------------------------------


def charger(rig: Rig, name: str) -> Charger:
    """The simulated charger of a device."""
    unit = rig.site.unit(name)
    assert isinstance(unit, Charger)
    return unit


def hold_temperatures(rig: Rig) -> None:
    """No heating or cooling: a temperature stays where the benchmark puts it."""
    for unit in rig.site.units.values():
        if isinstance(unit, Charger):
            unit.heat_per_a2 = unit.cooling_per_s = 0.0


def set_input(rig: Rig, celsius: float) -> float:
    """Put charger-1's temperature (model and register) at ``celsius``; the time it changed."""
    unit = charger(rig, SOURCE)
    with rig.site.lock:
        unit.temperature_c = celsius
        unit.set("temperature", celsius)
        return time.monotonic()


async def put_back(rig: Rig) -> None:
    """The simulator as before a trial: a normal temperature, and — once the interlock has
    stood down, or the gateway would rightly correct it again — 16 A at charger-2."""
    set_input(rig, NORMAL_C)
    await wait_until(lambda: not rig.gw.engine.rules["bench"].active, SETTLE_TIMEOUT_S, "release")
    with rig.site.lock:
        charger(rig, TARGET).set("max_current", SETPOINT_A)


def settled(rig: Rig) -> bool:
    """The gateway has seen the site back to normal and knows charger-2 holds 16 A, so the
    next trip needs a write at once."""
    gw = rig.gw
    if gw.engine.rules["bench"].active:
        return False
    if gw.image.value(TARGET, "max_current") != SETPOINT_A:
        return False
    return gw.actuator.targets[(TARGET, "max_current")].sent == SETPOINT_A


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Check ``condition`` every few milliseconds (finer than ``Rig.wait_for``)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(WAIT_STEP_S)


# -- one transport --------------------------------------------------------------------------------


async def prepare(rig: Rig, probe: Probe) -> None:
    """The operator setpoint, the probes, and a site settled and polled for a while."""
    hold_temperatures(rig)
    await put_back(rig)
    rig.gw.actuator.demand(
        "operator", TARGET, "max_current", SETPOINT_A, PRIORITY_OPERATOR, limit=False
    )
    instrument(rig, probe)
    names = [f"charger-{i}" for i in range(1, CHARGERS + 1)]
    await wait_until(lambda: all(rig.all_good(n) for n in names), 20.0, "every charger GOOD")
    await wait_until(lambda: settled(rig), SETTLE_TIMEOUT_S, "the site to settle")
    await asyncio.sleep(WARM_UP_S)
    loop = rig.gw.supervisor.loop
    loop.lateness = LatencyWindow(size=1_000_000)  # the trials only, not the start-up
    loop.max_lateness_s = 0.0


async def one_trial(rig: Rig, probe: Probe, rng: random.Random) -> Trial:
    """Trip the interlock at a random phase, time the corrective write, then put it back."""
    await asyncio.sleep(rng.uniform(0.0, PHASE_S))
    trial = probe.start(set_input(rig, HOT_C))
    await probe.landing()
    await put_back(rig)
    await wait_until(lambda: settled(rig), SETTLE_TIMEOUT_S, "the site to settle")
    return trial


def spread(prefix: str, samples: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max of seconds, in ms (nearest rank, as the gateway's own windows)."""
    window = LatencyWindow(size=len(samples))
    for s in samples:
        window.add(s)
    p50, p99 = window.p50, window.p99
    assert p50 is not None
    assert p99 is not None
    return {
        f"{prefix}_p50_ms": p50 * 1000,
        f"{prefix}_p99_ms": p99 * 1000,
        f"{prefix}_max_ms": max(samples) * 1000,
    }


def breakdown(prefix: str, trials: Sequence[Trial]) -> dict[str, float]:
    """The total and its three parts: poll, control cycle, write on the bus."""
    parts = [t.parts() for t in trials]
    metrics = spread(prefix, [sum(p) for p in parts])
    for i, part in enumerate(("poll", "control", "write")):
        metrics |= spread(f"{prefix}_{part}", [p[i] for p in parts])
    return metrics


def load(prefix: str, rig: Rig, transactions: int, seconds: float) -> dict[str, float]:
    """How busy the site was: transactions per second, charger-1's safety cycle, and how
    late the control loop woke (the gateway's own measure)."""
    cycle = rig.gw.pollers[SOURCE].cycles[PollClass.SAFETY].durations
    lateness = rig.gw.supervisor.loop.snapshot()
    return {
        f"{prefix}_seconds": seconds,
        f"{prefix}_tx_per_s": transactions / seconds,
        f"{prefix}_safety_cycle_p50_ms": (cycle.p50 or 0.0) * 1000,
        f"{prefix}_safety_cycle_p99_ms": (cycle.p99 or 0.0) * 1000,
        f"loop_lateness_p50_ms_{prefix}": float(lateness["lateness_p50_ms"] or 0.0),
        f"loop_lateness_p99_ms_{prefix}": float(lateness["lateness_p99_ms"] or 0.0),
        f"loop_lateness_max_ms_{prefix}": float(lateness["lateness_max_ms"] or 0.0),
        f"loop_skipped_{prefix}": float(lateness["skipped"] or 0),
    }


def line_busy(prefix: str, rig: Rig, started: float, ended: float) -> dict[str, float]:
    """RTU only: the fraction of each line's time its frames and t3.5 gaps took (mean)."""
    fractions = []
    for line in rig.site.lines.values():
        frames: list[FrameTiming] = [f for f in line.stats.log if started <= f.request_start]
        busy = sum(
            (f.request_end - f.request_start) + (f.response_end - f.response_start) for f in frames
        )
        fractions.append((busy + 2 * line.timing.t35 * len(frames)) / (ended - started))
    return {f"{prefix}_line_busy": sum(fractions) / len(fractions)} if fractions else {}


def transactions(rig: Rig) -> int:
    """Transactions so far on every bus of the gateway."""
    return sum(s.stats.transactions for s in rig.gw.schedulers.values())


async def measure(kind: str, prefix: str, trials: int) -> dict[str, float]:
    """``trials`` trials on one site; the latencies, their parts and the load."""
    rng = random.Random(SEED)
    async with running(site(kind)) as rig:
        probe = Probe()
        await prepare(rig, probe)
        tx_before, started = transactions(rig), time.monotonic()
        results = [await one_trial(rig, probe, rng) for _ in range(trials)]
        ended = time.monotonic()
        metrics = breakdown(prefix, results)
        metrics |= load(prefix, rig, transactions(rig) - tx_before, ended - started)
        metrics |= line_busy(prefix, rig, started, ended)
    return metrics


# -- the benchmark ----------------------------------------------------------------------------


async def run(tcp_trials: int, rtu_trials: int) -> dict[str, float]:
    """TCP, then RTU: one site at a time, so neither loads the other's event loop."""
    metrics = {"tcp_trials": float(tcp_trials), RTU + "_trials": float(rtu_trials)}
    metrics |= await measure("tcp", "tcp", tcp_trials)
    metrics |= await measure("rtu", RTU, rtu_trials)
    return metrics


def units(metrics: dict[str, float]) -> dict[str, str]:
    """The unit of every metric, by its name."""
    out = {}
    for key in metrics:
        if key.endswith("_ms") or "_ms_" in key:
            out[key] = "ms"
        elif key.endswith("_tx_per_s"):
            out[key] = "1/s"
        elif key.endswith("_seconds"):
            out[key] = "s"
        elif key.endswith("_line_busy"):
            out[key] = "fraction of line time"
        else:
            out[key] = "count"
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="reaction latency, input change to write")
    parser.add_argument(
        "--trials",
        type=int,
        help=f"trials per transport (default {TCP_TRIALS} on TCP, {RTU_TRIALS} on RTU)",
    )
    args = parser.parse_args(argv)
    # every trial activates the interlock, and the engine logs each activation as a warning
    logging.getLogger("gateway.control.engine").setLevel(logging.ERROR)
    metrics = asyncio.run(run(args.trials or TCP_TRIALS, args.trials or RTU_TRIALS))
    write_result(NAME, metrics, targets=TARGETS, units=units(metrics))


if __name__ == "__main__":
    main()
