"""Bus efficiency against the line model: how close one RTU line gets to its wire limit.

One simulated elevator sits on a line model (:class:`~hil_tests.rig.rtu_line.RtuLineServer`,
byte-paced, strict about t3.5) at 9600, 19200 and 115200 baud.

* ``transport``: the gateway's :class:`~gateway.bus.rtu.RtuTransport` reads 10 input
  registers (FC04) back to back. The wire limit is one transaction per request frame +
  response frame + two t3.5 gaps, with 11-bit characters as the transport and the line model
  count them; ``efficiency_BAUD`` is the measured rate as a fraction of it, and
  ``efficiency_p50_BAUD`` the same from the median period between requests on the line
  (which a stall of a busy machine barely moves).
* ``gateway``: the whole runtime (scheduler, breaker, decoding into the process image) polls
  the elevator's profile as fast as it can. Its blocks differ in size, so
  ``gateway_efficiency_BAUD`` is the line time those frames need (frames + two t3.5 each, as
  the line logged them) as a fraction of the time they took.

A strict line ignores a request sent inside t3.5, so every violation it counts is a lost
transaction.

Each is measured on a quiet machine and again with one busy process beside it (a busy loop
at normal priority, as an OTA install or a backup would be): metrics named ``…_busy_BAUD``.
The bench runs as ``gateway run`` does, at the control path's priority
(:func:`gateway.priority.raise_control_priority`; ``priority`` says which it got: 2
real-time, 1 raised nice, 0 normal), and the line model's thread above it, as hardware is.
``--runs N`` repeats everything and reports min and max; the load average is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time

from bench.report import write_result
from gateway.bus.pdu import Read, decode_response, encode_request
from gateway.bus.rtu import RtuTransport
from gateway.bus.transport import LineTiming
from gateway.devices.profile import Table
from gateway.priority import raise_control_priority
from gateway.site import SiteConfig
from hil_tests.gateway_rig import rtu_bus, running, site_config
from hil_tests.rig.cpu_load import CpuHogs
from hil_tests.rig.rtu_line import FrameTiming, LineStats
from hil_tests.rig.site import SimulatedSite

NAME = "bus_efficiency"
BAUDRATES = (9600, 19200, 115200)
REGISTERS = 10
SECONDS_PER_RUN = 4.0
WARM_UP_S = 0.5
RESPONSE_TIMEOUT_S = 0.5
#: every poll class always due: the scheduler keeps the line as busy as it can
FLAT_OUT = "safety = 0.001\ntelemetry = 0.001\nslow = 0.001"
TARGETS = {9600: ">= 0.97", 19200: ">= 0.97", 115200: ">= 0.95"}


def one_elevator(baudrate: int, poll: str = "") -> SiteConfig:
    return site_config(rtu_bus("line", baudrate), [("elevator", "ELV-24476", "line", 1)], poll)


def wire_limit(baudrate: int, registers: int = REGISTERS) -> float:
    """Transactions/s a line allows for an FC03/FC04 read with zero think time."""
    timing = LineTiming(baudrate)
    request, response = 8, 5 + 2 * registers
    return 1 / (timing.frame_time(request + response) + 2 * timing.t35)


def line_time(frames: list[FrameTiming], timing: LineTiming) -> float:
    """Seconds the logged frames need on an ideal line: both frames and two t3.5 gaps."""
    return sum(
        (f.request_end - f.request_start) + (f.response_end - f.response_start) + 2 * timing.t35
        for f in frames
    )


def median_period(frames: list[FrameTiming]) -> float:
    """Median time from one request to the next: robust to stalls of a busy machine."""
    starts = [f.request_start for f in frames]
    return statistics.median(b - a for a, b in itertools.pairwise(starts))


def line_metrics(prefix: str, baudrate: int, stats: LineStats) -> dict[str, float]:
    return {
        f"{prefix}t35_violations_{baudrate}": float(stats.t35_violations),
        f"{prefix}noise_bytes_{baudrate}": float(stats.noise_bytes),
    }


async def read_back_to_back(transport: RtuTransport, seconds: float) -> tuple[int, float]:
    """Read as fast as the transport allows for ``seconds``; (transactions, elapsed)."""
    request = Read(Table.INPUT, 0, REGISTERS)
    pdu = encode_request(request)
    await transport.transact(1, pdu, RESPONSE_TIMEOUT_S)  # warm-up: port and caches
    count = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        answer = await transport.transact(1, pdu, RESPONSE_TIMEOUT_S)
        values = decode_response(request, answer)
        if not isinstance(values, list) or len(values) != REGISTERS:
            raise RuntimeError(f"unit 1 answered {values!r} to a read of {REGISTERS} registers")
        count += 1
    return count, elapsed


async def measure_transport(baudrate: int) -> dict[str, float]:
    """The transport alone against a one-elevator line."""
    async with SimulatedSite(one_elevator(baudrate), lively=False) as site:
        line = site.lines["line"]
        async with RtuTransport("line", line.client_path, baudrate) as transport:
            count, elapsed = await read_back_to_back(transport, SECONDS_PER_RUN)
    tx_per_s = count / elapsed
    typical = 1 / median_period(list(line.stats.log)[1:])  # without the warm-up read
    return {
        f"tx_per_s_{baudrate}": tx_per_s,
        f"regs_per_s_{baudrate}": tx_per_s * REGISTERS,
        f"wire_limit_tx_per_s_{baudrate}": wire_limit(baudrate),
        f"efficiency_{baudrate}": tx_per_s / wire_limit(baudrate),
        f"efficiency_p50_{baudrate}": typical / wire_limit(baudrate),
        **line_metrics("", baudrate, line.stats),
    }


async def measure_gateway(baudrate: int) -> dict[str, float]:
    """The gateway runtime polling one elevator flat out."""
    async with running(one_elevator(baudrate, FLAT_OUT)) as rig:
        line = rig.site.lines["line"]
        await asyncio.sleep(WARM_UP_S)
        started = time.monotonic()
        await asyncio.sleep(SECONDS_PER_RUN)
        ended = time.monotonic()
        log = line.stats.log
        frames = [f for f in log if started <= f.request_start and f.response_end <= ended]
    busy = line_time(frames, line.timing)
    return {
        f"gateway_tx_per_s_{baudrate}": len(frames) / (ended - started),
        f"gateway_efficiency_{baudrate}": busy / (ended - started),
        **line_metrics("gateway_", baudrate, line.stats),
    }


async def run() -> dict[str, float]:
    """Every measurement at every baud rate, quiet and then with one busy process."""
    metrics: dict[str, float] = {}
    for baudrate in BAUDRATES:
        for busy in (False, True):
            hogs = CpuHogs()
            if busy:
                hogs.start(1, 2 * (SECONDS_PER_RUN + WARM_UP_S) + 10)
            try:
                measured = await measure_transport(baudrate)
                measured |= await measure_gateway(baudrate)
            finally:
                hogs.stop()
            metrics |= {_busy(key) if busy else key: value for key, value in measured.items()}
    return metrics


def _busy(key: str) -> str:
    """``efficiency_115200`` → ``efficiency_busy_115200``."""
    head, _, baudrate = key.rpartition("_")
    return f"{head}_busy_{baudrate}"


def units() -> dict[str, str]:
    units: dict[str, str] = {}
    for b in BAUDRATES:
        units |= {
            f"tx_per_s_{b}": "1/s",
            f"regs_per_s_{b}": "registers/s",
            f"wire_limit_tx_per_s_{b}": "1/s",
            f"efficiency_{b}": "fraction of wire limit",
            f"efficiency_p50_{b}": "fraction of wire limit, median period",
            f"gateway_tx_per_s_{b}": "1/s",
            f"gateway_efficiency_{b}": "fraction of line time",
        }
        for prefix in ("", "gateway_"):
            units[f"{prefix}t35_violations_{b}"] = "count"
            units[f"{prefix}noise_bytes_{b}"] = "bytes"
    units |= {_busy(key): unit for key, unit in units.items()}
    units |= {"priority": "2 real-time, 1 nice, 0 normal", "load_average_1min": "processes"}
    return units


def targets() -> dict[str, str]:
    targets: dict[str, str] = {}
    for b, target in TARGETS.items():
        targets |= {f"efficiency_{b}": target, f"gateway_efficiency_{b}": target}
        targets |= {f"t35_violations_{b}": "== 0", f"gateway_t35_violations_{b}": "== 0"}
    targets |= {_busy(key): target for key, target in targets.items()}
    return targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1, help="repetitions: min and max reported")
    args = parser.parse_args(argv)
    granted = raise_control_priority()  # as gateway run does, before any thread starts
    runs = [asyncio.run(run()) for _ in range(args.runs)]
    metrics = dict(runs[-1])
    if len(runs) > 1:
        for key in runs[0]:
            metrics[f"{key}_min"] = min(r[key] for r in runs)
            metrics[f"{key}_max"] = max(r[key] for r in runs)
    metrics["priority"] = {"rr": 2, "nice": 1}.get(granted.policy, 0)
    metrics["load_average_1min"] = os.getloadavg()[0]
    write_result(NAME, metrics, targets=targets(), units=units())


if __name__ == "__main__":
    main()
