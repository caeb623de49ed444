"""RTU against TCP: the gateway's CPU for polling the same site over serial lines or over TCP.

The site of ``bench.uplink_e2e`` without the uplink: 10 devices × 50 holding registers (the
bench profile ``BENCH-50``), their values changing every 100 ms, polled every 100 ms; here on
two buses of five devices. Once as two RS-485 lines at 115200 baud (the rig's line model,
byte-paced and strict about t3.5; about 70 % busy), once as two Modbus TCP endpoints of five
units each, as a TCP-to-RTU gateway per line would serve them. Both carry the same
transactions per second.

A simulator process serves the devices (``--simulate``), and the gateway runtime polls them in
another (``--gateway``, no status table) and measures its own process CPU and transactions
over a steady window after start-up. The kinds run interleaved, ``--runs`` times each, so a
change of load on the machine hits both; ``cpu_ratio`` is RTU's CPU per transaction over
TCP's, from each RTU run and the TCP run after it. The load average seen is reported with
the numbers.

The rig's TCP devices answer within a fraction of a millisecond, so the TCP gateway hardly
ever sleeps waiting for an answer, while an RTU answer takes its line time: the RTU side pays
at least two wake-ups per transaction (the answer, the end of t3.5) that the TCP side does
not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.report import write_result
from bench.uplink_e2e import PROFILE, REGISTERS
from hil_tests.rig.processes import terminate

NAME = "rtu_cpu"
BUSES = 2
UNITS_PER_BUS = 5
BAUDRATE = 115200
POLL_S = 0.1
CHANGE_S = 0.1
WARM_UP_S = 3.0
MEASURE_S = 10.0
RUNS = 3
READY_TIMEOUT_S = 20.0
KINDS = ("rtu", "tcp")


def site_toml(kind: str, addresses: list[str]) -> str:
    """The site for the gateway: one bus per address (a pty path, or a TCP port)."""
    text = f'[gateway]\nsite = "bench"\nid = "gw-bench"\n\n[poll]\ntelemetry = {POLL_S}\n\n'
    for b, address in enumerate(addresses):
        text += f'[[buses]]\nname = "bus{b}"\nkind = "{kind}"\n'
        if kind == "rtu":
            text += f'port = "{address}"\nbaudrate = {BAUDRATE}\n\n'
        else:
            text += f'host = "127.0.0.1"\nport = {address}\n\n'
    for b in range(len(addresses)):
        for unit in range(1, UNITS_PER_BUS + 1):
            text += f'[[devices]]\nname = "dev-{b}-{unit}"\nprofile = "BENCH-50"\n'
            text += f'bus = "bus{b}"\nunit_id = {unit}\n\n'
    return text


# -- the simulator's process ----------------------------------------------------------------


async def simulate(kind: str, config: Path) -> None:
    """Serve the devices until SIGTERM; write the gateway's site config to ``config``."""
    from gateway.devices import profile
    from gateway.devices.profile import Table
    from hil_tests.rig.registers import RegisterMap, SimulatedUnit
    from hil_tests.rig.rtu_line import RtuLineServer
    from hil_tests.rig.tcp_slave import TcpSlaveServer

    bench = profile.parse_profile(PROFILE, "bench/BENCH-50")
    lock = threading.Lock()
    ids = range(1, UNITS_PER_BUS + 1)
    buses = [
        {u: SimulatedUnit(bench, RegisterMap.from_points(bench.points), u) for u in ids}
        for _ in range(BUSES)
    ]
    async with contextlib.AsyncExitStack() as stack:
        addresses = []
        for b, units in enumerate(buses):
            if kind == "rtu":
                line = RtuLineServer(units, BAUDRATE, lock=lock, name=f"bus{b}")
                addresses.append((await stack.enter_async_context(line)).client_path)
            else:
                server = TcpSlaveServer(units, lock=lock)
                addresses.append(str((await stack.enter_async_context(server)).port))
        partial = config.with_suffix(".partial")
        partial.write_text(site_toml(kind, addresses), encoding="utf-8")
        (config.parent / "BENCH-50.toml").write_text(PROFILE, encoding="utf-8")  # found there
        partial.replace(config)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        k = 0
        while not stop.is_set():
            k += 1
            with lock:
                for units in buses:
                    for unit in units.values():
                        unit.regs.put(Table.HOLDING, 0, [k % 65536] * REGISTERS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHANGE_S)


# -- the gateway's process ------------------------------------------------------------------


async def poll_and_measure(config: Path) -> dict[str, float]:
    """Run the gateway runtime on ``config``; its CPU and transactions in a steady window."""
    from gateway.runtime import Gateway
    from gateway.site import load_site

    def transactions(gw: Gateway) -> int:
        return sum(s.stats.transactions for s in gw.schedulers.values())

    async with Gateway(load_site(config)) as gw:
        await asyncio.sleep(WARM_UP_S)
        t0, cpu0, tx0 = time.monotonic(), time.process_time(), transactions(gw)
        await asyncio.sleep(MEASURE_S)
        t1, cpu1, tx1 = time.monotonic(), time.process_time(), transactions(gw)
        errors = sum(s.stats.timeouts + s.stats.crc_errors for s in gw.schedulers.values())
    return {
        "cpu_s": cpu1 - cpu0,
        "wall_s": t1 - t0,
        "transactions": float(tx1 - tx0),
        "errors": float(errors),
    }


# -- this process: simulator and gateway as two processes -----------------------------------


def start_simulator(kind: str, config: Path) -> subprocess.Popen[bytes]:
    sim = subprocess.Popen([sys.executable, "-m", "bench.rtu_cpu", "--simulate", kind, str(config)])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not config.exists():
        if sim.poll() is not None:
            raise RuntimeError(f"the simulator exited with {sim.returncode} before it was ready")
        if time.monotonic() > deadline:
            terminate(sim)
            raise RuntimeError(f"the simulator was not ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    return sim


def measure(kind: str, tmp: Path) -> dict[str, float]:
    """One run of one kind: simulator up, gateway measured, both stopped."""
    config = tmp / f"{kind}.toml"
    config.unlink(missing_ok=True)
    sim = start_simulator(kind, config)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.rtu_cpu", "--gateway", str(config)],
            capture_output=True,
            text=True,
            timeout=WARM_UP_S + MEASURE_S + 60,
            check=False,
        )
    finally:
        terminate(sim)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} gateway exited with {done.returncode}:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def summary(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    per_tx: dict[str, list[float]] = {}
    for kind, results in runs.items():
        fractions = [r["cpu_s"] / r["wall_s"] for r in results]
        per_tx[kind] = [1000 * r["cpu_s"] / r["transactions"] for r in results]
        rates = [r["transactions"] / r["wall_s"] for r in results]
        metrics |= {
            f"{kind}_cpu_fraction_min": min(fractions),
            f"{kind}_cpu_fraction_max": max(fractions),
            f"{kind}_cpu_ms_per_tx_min": min(per_tx[kind]),
            f"{kind}_cpu_ms_per_tx_max": max(per_tx[kind]),
            f"{kind}_tx_per_s_min": min(rates),
            f"{kind}_tx_per_s_max": max(rates),
            f"{kind}_errors": sum(r["errors"] for r in results),
        }
    ratios = [r / t for r, t in zip(per_tx["rtu"], per_tx["tcp"], strict=True)]
    return metrics | {
        "cpu_ratio_min": min(ratios),
        "cpu_ratio_median": statistics.median(ratios),
        "cpu_ratio_max": max(ratios),
    }


def run(repetitions: int) -> dict[str, float]:
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="doorstep-rtu-cpu-") as tmp:
        for _ in range(repetitions):
            for kind in KINDS:
                runs[kind].append(measure(kind, Path(tmp)))
    return summary(runs) | {
        "runs": float(repetitions),
        "load_1min_before": load_before,
        "load_1min_after": os.getloadavg()[0],
    }


UNITS = {
    **{
        f"{kind}_{name}": unit
        for kind in KINDS
        for name, unit in (
            ("cpu_fraction_min", "fraction of one core"),
            ("cpu_fraction_max", "fraction of one core"),
            ("cpu_ms_per_tx_min", "CPU ms"),
            ("cpu_ms_per_tx_max", "CPU ms"),
            ("tx_per_s_min", "1/s"),
            ("tx_per_s_max", "1/s"),
            ("errors", "count"),
        )
    },
    "cpu_ratio_min": "RTU / TCP CPU per transaction",
    "cpu_ratio_median": "RTU / TCP CPU per transaction",
    "cpu_ratio_max": "RTU / TCP CPU per transaction",
    "runs": "count per kind",
    "load_1min_before": "load average",
    "load_1min_after": "load average",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=RUNS, help="runs of each kind")
    parser.add_argument("--gateway", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--simulate", nargs=2, metavar=("KIND", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gateway:
        print(json.dumps(asyncio.run(poll_and_measure(Path(args.gateway)))), flush=True)
        return
    if args.simulate:
        asyncio.run(simulate(args.simulate[0], Path(args.simulate[1])))
        return
    write_result(
        NAME,
        run(args.runs),
        targets={"cpu_ratio_max": "<= 1.3", "rtu_errors": "== 0", "tcp_errors": "== 0"},
        units=UNITS,
    )


if __name__ == "__main__":
    main()
