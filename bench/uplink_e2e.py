"""End to end through the uplink: a register changes at a simulated device → its telemetry is
on the broker.

10 devices × 50 holding registers, each device on its own Modbus TCP endpoint (as TCP devices
are), polled every 100 ms by ``gateway`` in a process of its own, reporting through the uplink
(``batch_interval_s`` 20 ms) to Debian's mosquitto. This process serves the devices: every
100 ms (at its own phase per device) it writes a new counter value into all 50 registers of
a device at once and notes when; a subscriber notes when each (device, counter) first
arrives. Measured:

* latency register change → message on the broker, p50/p95/p99 (includes the value's age,
  0–100 ms, since the gateway reads it at its own poll);
* updates per device per second, and snapshots split or mixed (a batch where one device's
  50 readings do not all carry the same counter);
* gateway CPU as a fraction of one core (from /proc, steady window) and peak RSS (VmHWM).

The bench device profile (``BENCH-50``, 50 u16 holding registers) is not a shipped profile:
it is written next to the site file (``BENCH-50.toml``), where a site finds its own profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench.report import write_result
from gateway import wire

NAME = "uplink_e2e"
DEVICES = 10
REGISTERS = 50
POLL_S = 0.1
CHANGE_S = 0.1
BATCH_S = 0.02
WARM_UP_S = 5.0
MEASURE_S = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROFILE = (
    'model = "BENCH-50"\nkind = "meter"\ndescription = "bench: 50 holding registers"\n'
    "points = [\n"
    + "".join(
        f'  {{ name = "r{i}", table = "holding", address = {i}, type = "u16", '
        f'poll = "telemetry" }},\n'
        for i in range(REGISTERS)
    )
    + "]\n"
)


def site_toml(ports: list[int], broker_port: int, wire_format: str = "compact") -> str:
    text = '[gateway]\nsite = "bench"\nid = "gw-bench"\n\n[poll]\ntelemetry = 0.1\n\n'
    for i, port in enumerate(ports):
        text += f'[[buses]]\nname = "dev{i}"\nkind = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
    for i in range(len(ports)):
        text += (
            f'[[devices]]\nname = "dev-{i}"\nprofile = "BENCH-50"\nbus = "dev{i}"\nunit_id = 1\n\n'
        )
    text += (
        f'[uplink]\nbroker = "mqtt://127.0.0.1:{broker_port}"\nbatch_interval_s = {BATCH_S}\n'
        f'max_batch = 500\nmax_interval_s = 60\nwire_format = "{wire_format}"\n'
    )
    return text


def broker_bytes(topic: str, payload: bytes) -> int:
    """A QoS 1 PUBLISH as the broker takes it: fixed header, topic, packet id, payload."""
    rest = 2 + len(topic.encode()) + 2 + len(payload)
    return 1 + (1 if rest < 128 else 2 if rest < 16384 else 3) + rest


def gateway_main(config: str, state: str) -> None:
    """The gateway process: ``gateway run`` on the bench's site."""
    from gateway.cli import main as cli

    sys.exit(cli.main(["run", "--config", config, "--state-dir", state]))


def write_site(config: Path, text: str) -> None:
    """The site file, and the bench profile next to it where the site finds it."""
    (config.parent / "BENCH-50.toml").write_text(PROFILE, encoding="utf-8")
    config.write_text(text, encoding="utf-8")


class Devices:
    """The simulated devices, and when each counter value appeared at each of them."""

    def __init__(self) -> None:
        from gateway.devices import profile
        from hil_tests.rig.registers import RegisterMap, SimulatedUnit

        bench = profile.parse_profile(PROFILE, "bench/BENCH-50")
        self.lock = threading.Lock()
        self.units = [
            SimulatedUnit(bench, RegisterMap.from_points(bench.points), 1) for _ in range(DEVICES)
        ]
        self.changed_at: list[dict[int, float]] = [{} for _ in range(DEVICES)]

    async def run(self) -> None:
        from gateway.devices.profile import Table

        start = time.monotonic()
        k = 0
        while True:
            k += 1
            for d, unit in enumerate(self.units):
                due = start + k * CHANGE_S + d * CHANGE_S / DEVICES
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                value = k % 65536
                with self.lock:
                    unit.regs.put(Table.HOLDING, 0, [value] * REGISTERS)
                self.changed_at[d][value] = time.monotonic()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(broker_port: int, tmp: Path, wire_format: str) -> dict[str, float]:
    from gateway.mqtt import Client
    from hil_tests.rig.tcp_slave import TcpSlaveServer

    devices = Devices()
    arrivals: dict[tuple[int, int], float] = {}
    mixed = 0
    batches = 0
    sent = readings = snapshots = 0  # bytes on the broker, and what they carried
    counting = False

    async def subscribe(ready: asyncio.Event) -> None:
        nonlocal mixed, batches, sent, readings, snapshots
        async with Client("127.0.0.1", broker_port, identifier="bench-sub") as client:
            await client.subscribe("doorstep/v1/bench/gw-bench/telemetry", qos=1)
            ready.set()
            async for message in client.messages:
                now = time.monotonic()
                assert isinstance(message.payload, bytes)
                body = wire.decode(wire.TelemetryBatch, message.payload)
                per_device: dict[int, set[int]] = defaultdict(set)
                for r in body.readings:
                    assert isinstance(r.v, int)
                    per_device[int(r.d.split("-")[1])].add(r.v)
                if counting:
                    batches += 1
                    sent += broker_bytes(str(message.topic), message.payload)
                    readings += len(body.readings)
                    snapshots += len({(r.d, r.t) for r in body.readings})
                for d, seen in per_device.items():
                    if counting and len(seen) > 1:
                        mixed += 1
                    for value in seen:
                        arrivals.setdefault((d, value), now)

    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(TcpSlaveServer({1: unit}, lock=devices.lock))
            for unit in devices.units
        ]
        config = tmp / "site.toml"
        write_site(config, site_toml([s.port for s in servers], broker_port, wire_format))
        group = await stack.enter_async_context(asyncio.TaskGroup())
        ready = asyncio.Event()
        sub = group.create_task(subscribe(ready))
        await ready.wait()
        changer = group.create_task(devices.run())
        with (tmp / "gateway.log").open("wb") as log:
            gateway = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "bench.uplink_e2e", "--gateway", str(config)],
                str(tmp / "st"),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            await asyncio.sleep(WARM_UP_S)
            counting = True
            cpu0, t0 = cpu_seconds(gateway.pid), time.monotonic()
            seen0 = len(arrivals)
            await asyncio.sleep(MEASURE_S)
            cpu1, t1 = cpu_seconds(gateway.pid), time.monotonic()
            counting = False
            rss = peak_rss_mib(gateway.pid)
            updates = len(arrivals) - seen0
        finally:
            gateway.terminate()
            await asyncio.wait_for(gateway.wait(), 10)
            changer.cancel()
            sub.cancel()
    latencies = [
        (arrived - devices.changed_at[d][v]) * 1000
        for (d, v), arrived in arrivals.items()
        if v in devices.changed_at[d] and t0 <= arrived <= t1
    ]
    return {
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "latency_p99_ms": percentile(latencies, 99),
        "updates_per_device_per_s": updates / DEVICES / (t1 - t0),
        "mixed_snapshots": mixed,
        "batches_per_s": batches / (t1 - t0),
        "gateway_cpu_fraction": (cpu1 - cpu0) / (t1 - t0),
        "gateway_peak_rss_mib": rss,
        "broker_bytes_per_reading": sent / max(readings, 1),
        "broker_bytes_per_snapshot": sent / max(snapshots, 1),
        "broker_kbytes_per_s": sent / 1000 / (t1 - t0),
        "samples": len(latencies),
        "load_average_1min": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--gateway", nargs=2, metavar=("CONFIG", "STATE"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--wire",
        choices=("compact", "json"),
        default="compact",
        help="the gateway's [uplink] wire_format (json: version 1, the before)",
    )
    parser.add_argument("--runs", type=int, default=1, help="repetitions: min and max reported")
    args = parser.parse_args(argv)
    if args.gateway:
        gateway_main(*args.gateway)
        return
    from hil_tests.broker import Mosquitto

    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "mosquitto") as mq:
            runs.append(asyncio.run(measure(mq.port, Path(tmp), args.wire)))
    metrics = dict(runs[-1])
    if len(runs) > 1:
        for key in runs[0]:
            metrics[f"{key}_min"] = min(r[key] for r in runs)
            metrics[f"{key}_max"] = max(r[key] for r in runs)
    write_result(
        NAME if args.wire == "compact" else f"{NAME}_json",
        metrics,
        targets={
            "latency_p50_ms": "<= 70",
            "latency_p95_ms": "<= 120",
            "updates_per_device_per_s": ">= 10",
            "mixed_snapshots": "== 0",
            "gateway_cpu_fraction": "<= 0.08",
            "gateway_peak_rss_mib": "<= 60",
            "broker_bytes_per_reading": "<= 4",
        },
        units={
            "latency_p50_ms": "ms",
            "latency_p95_ms": "ms",
            "latency_p99_ms": "ms",
            "updates_per_device_per_s": "1/s",
            "mixed_snapshots": "count",
            "batches_per_s": "1/s",
            "gateway_cpu_fraction": "fraction of one core",
            "gateway_peak_rss_mib": "MiB",
            "broker_bytes_per_reading": "bytes",
            "broker_bytes_per_snapshot": "bytes",
            "broker_kbytes_per_s": "kB/s",
            "samples": "count",
            "load_average_1min": "runnable processes",
        },
    )


if __name__ == "__main__":
    main()
