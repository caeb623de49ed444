"""Poll-cycle time of the example site, coalesced vs one request per point.

The example community site (``gateway/examples/community.toml``) runs in the simulator with
the real gateway runtime polling it, twice: with the planner's cost model (``coalesced``)
and with a cost model under which a request costs nothing beyond its payload (``per_point``):
merging across a gap then never pays and merging neighbours only ties, which the planner
breaks by keeping them apart, so every point span gets a request of its own.

For every bus and in total: requests per full cycle (every poll class once), the line time of
such a cycle (RTU only), the measured safety-class cycle time (p50 of the slowest device on
the bus) and the bus utilisation over the window; then the per-point/coalesced speed-up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from unittest import mock

from bench.bus_efficiency import line_time
from bench.report import write_result
from gateway.bus.coalesce import Block, CostModel
from gateway.bus.config import RtuBus, TcpBus
from gateway.bus.pdu import Read, encode_request
from gateway.bus.scheduler import BusScheduler
from gateway.bus.stats import LatencyWindow
from gateway.devices.profile import PollClass
from gateway.site import load_site
from hil_tests.gateway_rig import Rig, running
from hil_tests.rig.rtu_line import RtuLineServer

NAME = "poll_cycle"
EXAMPLE = Path(str(resources.files("gateway.examples").joinpath("community.toml")))
READY_WITHIN_S = 15.0
WARM_UP_S = 2.0
WINDOW_S = 8.0
MODES = ("coalesced", "per_point")


def per_point_cost(bus: RtuBus | TcpBus) -> CostModel:
    """A request costs only its payload: merging never wins, so each span is read alone."""
    return CostModel(request_overhead=0.0, per_register=1.0, per_bit=1.0)


@dataclass
class BusResult:
    requests_per_cycle: int
    safety_p50_s: float
    tx_per_s: float
    #: line time of a full cycle and the line's busy fraction: RTU buses only
    full_cycle_wire_s: float | None = None
    utilisation: float | None = None


def full_cycle(scheduler: BusScheduler) -> list[Block]:
    """The read requests of one full cycle (every poll class once) of every device on a bus."""
    # The poller keeps its plan private; a benchmark may look at what the scheduler runs.
    return [
        block
        for poller in scheduler.pollers.values()
        for blocks in poller._blocks_of.values()
        for block in blocks
    ]


def wire_s(scheduler: BusScheduler, blocks: list[Block]) -> float:
    """Line time of these reads by the transport's own model (0 for TCP)."""
    reads = [Read(b.table, b.start, b.count) for b in blocks]
    return sum(
        scheduler.transport.wire_time(len(encode_request(r)), r.response_bytes()) for r in reads
    )


def safety_p50_s(scheduler: BusScheduler) -> float:
    """Median safety-class cycle time of the slowest device on the bus."""
    p50s = [
        p.cycles[PollClass.SAFETY].durations.p50 or 0.0
        for p in scheduler.pollers.values()
        if PollClass.SAFETY in p.cycles
    ]
    return max(p50s, default=0.0)


def line_busy_s(line: RtuLineServer, since: float) -> float:
    """Wire time (request + response frames, two t3.5 each) the line logged since ``since``."""
    return line_time([f for f in line.stats.log if f.request_start >= since], line.timing)


def restart_windows(rig: Rig) -> dict[str, int]:
    """Forget warm-up cycle times; return each bus's transaction count so far."""
    for poller in rig.gw.pollers.values():
        for cycle in poller.cycles.values():
            cycle.durations = LatencyWindow()
    return {name: s.stats.transactions for name, s in rig.gw.schedulers.items()}


async def measure_site() -> dict[str, BusResult]:
    """Run the example site for a window and collect every bus's numbers."""
    async with running(load_site(EXAMPLE)) as rig:
        await rig.wait_for(
            lambda: all(p.ready for p in rig.gw.pollers.values()),
            within=READY_WITHIN_S,
            what="SunSpec discovery",
        )
        await asyncio.sleep(WARM_UP_S)
        tx_before = restart_windows(rig)
        started = time.monotonic()
        await asyncio.sleep(WINDOW_S)
        elapsed = time.monotonic() - started
        results = {}
        for name, scheduler in rig.gw.schedulers.items():
            blocks = full_cycle(scheduler)
            result = BusResult(
                requests_per_cycle=len(blocks),
                safety_p50_s=safety_p50_s(scheduler),
                tx_per_s=(scheduler.stats.transactions - tx_before[name]) / elapsed,
            )
            if line := rig.site.lines.get(name):
                result.full_cycle_wire_s = wire_s(scheduler, blocks)
                result.utilisation = line_busy_s(line, started) / elapsed
            results[name] = result
        return results


async def measure(mode: str) -> dict[str, BusResult]:
    if mode == "coalesced":
        return await measure_site()
    with mock.patch("gateway.runtime.cost_model", per_point_cost):
        return await measure_site()


def bus_metrics(mode: str, bus: str, r: BusResult) -> dict[str, float]:
    metrics = {
        f"{mode}_requests_per_cycle_{bus}": float(r.requests_per_cycle),
        f"{mode}_safety_p50_ms_{bus}": r.safety_p50_s * 1000,
        f"{mode}_tx_per_s_{bus}": r.tx_per_s,
    }
    if r.full_cycle_wire_s is not None and r.utilisation is not None:
        metrics[f"{mode}_full_cycle_wire_ms_{bus}"] = r.full_cycle_wire_s * 1000
        metrics[f"{mode}_utilisation_{bus}"] = r.utilisation
    return metrics


def site_metrics(mode: str, results: dict[str, BusResult]) -> dict[str, float]:
    """Totals: buses run in parallel, so the site's cycle is its slowest bus's."""
    rs = results.values()
    return {
        f"{mode}_requests_per_cycle": float(sum(r.requests_per_cycle for r in rs)),
        f"{mode}_full_cycle_wire_ms": max(r.full_cycle_wire_s or 0.0 for r in rs) * 1000,
        f"{mode}_safety_p50_ms": max(r.safety_p50_s for r in rs) * 1000,
    }


def speedups(metrics: dict[str, float], buses: list[str]) -> dict[str, float]:
    out = {}
    for suffix in ["", *(f"_{b}" for b in buses)]:
        for what in ("safety_p50_ms", "full_cycle_wire_ms", "requests_per_cycle"):
            coalesced = metrics.get(f"coalesced_{what}{suffix}", 0.0)
            if coalesced > 0:
                name = "speedup" if what == "safety_p50_ms" else f"{what}_ratio"
                out[f"{name}{suffix}"] = metrics[f"per_point_{what}{suffix}"] / coalesced
    return out


async def run() -> dict[str, float]:
    metrics: dict[str, float] = {}
    buses: list[str] = []
    for mode in MODES:
        results = await measure(mode)
        buses = list(results)
        for bus, r in results.items():
            metrics |= bus_metrics(mode, bus, r)
        metrics |= site_metrics(mode, results)
    return metrics | speedups(metrics, buses)


def units_of(metrics: dict[str, float]) -> dict[str, str]:
    kinds = {  # first match wins
        "speedup": "per_point / coalesced",
        "_ratio": "per_point / coalesced",
        "requests_per_cycle": "requests",
        "_ms": "ms",
        "utilisation": "fraction of line time",
        "tx_per_s": "1/s",
    }
    return {
        name: next((unit for key, unit in kinds.items() if key in name), "") for name in metrics
    }


def targets() -> dict[str, str]:
    """A safety cycle should fit in the safety period it repeats at."""
    period_ms = load_site(EXAMPLE).poll.safety * 1000
    return {f"{mode}_safety_p50_ms": f"<= {period_ms:g}" for mode in MODES}


def main() -> None:
    metrics = asyncio.run(run())
    write_result(NAME, metrics, targets=targets(), units=units_of(metrics))


if __name__ == "__main__":
    main()
