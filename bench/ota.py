"""What an over-the-air update costs: ``python -m bench.ota`` (issue 15).

* **bundle size** — this repository's gateway wheel and the SIO-1 firmware, signed (a Pi's
  bundle also carries every dependency's wheel; the slots here share this environment's);
* **download + verify + install** — the OTA agent's own steps on one machine: fetch over
  loopback HTTP, check size, hash, signature and every file, build a slot with pip;
* **control-loop lateness during the install** — a 50 ms loop on the same event loop as the
  agent (as in ``gateway run``), p99 and max lateness while the slot is built at idle
  priority, against the same loop with nothing else running;
* **polling gap across the switch** — the real gateway under the launcher and a supervisor
  (restart delay 0.3 s; the systemd unit's is 1 s), a simulated SunSpec meter recording each
  request: the longest silence between two polls, which is the planned restart's;
* **the SIO-1 firmware step** — a running gateway (in this process) lets go of a simulated
  MicroPython board, the real mpremote copies the other of two firmware versions onto it,
  the board answers its new version and is claimed again: the whole step, and how long the
  board's relays were off (from the interrupt to the claim's outputs).

Each measurement runs ``--runs`` times (default 2); min and max are reported with the load
average. Targets: gap <= 3 s, lateness p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.report import write_result
from gateway.ota import slots
from gateway.ota.bundle import Expectation, open_bundle, this_platform, this_python
from gateway.ota.download import download
from gateway.trust import SigningKey, TrustedKeys
from hil_tests.ota_release import release

PERIOD_S = 0.05


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_dir(directory: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def loop_lateness(stop: asyncio.Event) -> list[float]:
    """A control-loop stand-in: wake on a 50 ms grid, record how late each wake-up was."""
    late: list[float] = []
    loop = asyncio.get_running_loop()
    due = loop.time() + PERIOD_S
    while not stop.is_set():
        await asyncio.sleep(max(0.0, due - loop.time()))
        late.append(max(0.0, loop.time() - due))
        due += PERIOD_S
    return late


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def facts(bundle: Path) -> tuple[int, str]:
    """A bundle's size and SHA-256, as a command carries them."""
    data = bundle.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


async def update_once(work: Path, bundle: Path, key: SigningKey) -> dict[str, float]:
    size, sha = facts(bundle)
    state = work / "state"
    stop = asyncio.Event()
    quiet_task = asyncio.create_task(loop_lateness(stop))
    await asyncio.sleep(3.0)
    stop.set()
    quiet = await quiet_task
    with http_dir(bundle.parent) as base:
        started = time.monotonic()
        downloads = state / "ota" / "downloads"
        downloads.mkdir(parents=True)
        path, _ = await download(f"{base}/{bundle.name}", "", size, sha, downloads)
        expect = Expectation(this_platform(), this_python(), "0.1.0")
        trusted = TrustedKeys.of(key.public)
        opened = await asyncio.to_thread(open_bundle, path, trusted, expect, state / "staging")
        verified = time.monotonic()
        stop = asyncio.Event()
        busy_task = asyncio.create_task(loop_lateness(stop))
        await slots.install(
            state, "a", opened.directory, opened.manifest.version, system_site_packages=True
        )
        stop.set()
        busy = await busy_task
        installed = time.monotonic()
    return {
        "download_verify_s": verified - started,
        "install_s": installed - verified,
        "update_s": installed - started,
        "lateness_p99_ms_quiet": p99(quiet) * 1000,
        "lateness_p99_ms_install": p99(busy) * 1000,
        "lateness_max_ms_install": max(busy, default=0.0) * 1000,
    }


async def switch_gap(work: Path, bundle_dir: Path, key: SigningKey) -> float:
    """The longest silence of the meter's polls across one planned restart."""
    from fleet.core.broker import BrokerUrl
    from fleet.core.outbound import Outbound
    from gateway import wire
    from gateway.wire.ota import OtaCommand
    from hil_tests.broker import Mosquitto
    from hil_tests.gateway_rig import site_config, tcp_bus
    from hil_tests.ota_release import Supervisor
    from hil_tests.rig.site import SimulatedSite, to_toml
    from hil_tests.uplink_helpers import recording

    bundle = bundle_dir / "doorstep-0.2.0.tar"
    size, sha = facts(bundle)
    state = work / "gw-state"
    (state / "trusted-keys").mkdir(parents=True)
    (state / "trusted-keys" / "ops.pub").write_bytes(key.public_pem())
    cfg = site_config(tcp_bus("meter"), [("meter", "SUNSPEC-METER", "meter", 1)])
    polls: list[float] = []
    with Mosquitto(work / "mq") as mq, http_dir(bundle_dir) as base:
        async with SimulatedSite(cfg, lively=False) as site:
            meter = site.unit("meter")
            original = meter.read

            def read(table: object, address: int, count: int) -> list[int]:
                polls.append(time.monotonic())
                return original(table, address, count)  # type: ignore[arg-type]

            meter.read = read  # type: ignore[method-assign]
            config = work / "site.toml"
            config.write_text(
                to_toml(site.resolved()) + f'\n[uplink]\nbroker = "mqtt://127.0.0.1:{mq.port}"\n'
            )
            out = Outbound(BrokerUrl("127.0.0.1", mq.port), client_id="bench-out")
            supervisor = Supervisor(state, config, work / "gateway.log")
            async with recording(mq.port) as rec, out.running(), supervisor.running():
                await asyncio.wait_for(out.connected.wait(), 10)
                deadline = time.monotonic() + 120
                while not any(m.kind == "ota/status" for m in rec.messages):
                    assert time.monotonic() < deadline, "no status from the gateway"
                    await asyncio.sleep(0.1)
                command = OtaCommand(
                    id=1, release="0.2.0", url=f"{base}/{bundle.name}", size=size,
                    sha256=sha, at=time.time(),
                )  # fmt: skip
                await out.send("hil", "gw-hil", wire.Kind.OTA_COMMAND, wire.encode(command))
                while not any(
                    m.kind == "ota/status" and m.body.get("state") in ("committed", "failed")
                    for m in rec.messages
                ):
                    assert time.monotonic() < deadline, "the update did not finish"
                    await asyncio.sleep(0.1)
                final = [m.body for m in rec.messages if m.kind == "ota/status"][-1]
                if final["state"] != "committed" or supervisor.starts != 2:
                    raise RuntimeError(f"the update did not commit: {final}")
    first = polls.index(next(t for t in polls if t > polls[0] + 2.0))  # past the first start
    gaps = [b - a for a, b in zip(polls[first:], polls[first + 1 :], strict=False)]
    return max(gaps, default=0.0)


async def sio1_step(work: Path, sources: dict[str, Path], runs: int) -> list[tuple[float, float]]:
    """(step s, relays off s) of ``runs`` firmware copies, alternating two versions."""
    from gateway.bus.config import RtuBus
    from gateway.flash.firmware import load_firmware
    from gateway.ota import sio1
    from gateway.runtime import Gateway
    from hil_tests.gateway_rig import rtu_bus, site_config
    from hil_tests.rig.micropython_board import MicroPythonBoard

    flash = work / "flash"
    flash.mkdir(parents=True)
    firmware = load_firmware(sources["1.1"])
    for name, data in firmware.build().items():
        (flash / name).write_bytes(data)
    (flash / firmware.identity_name).write_bytes(firmware.identity_file("hil", "gw", 7, "t"))
    board = MicroPythonBoard(flash, data_line=True).start()
    cfg = site_config(rtu_bus("usb", 115200), [("sio", "SIO-1", "usb", 7)])
    bus = cfg.buses[0]
    assert isinstance(bus, RtuBus)
    cfg = cfg.model_copy(update={"buses": [bus.model_copy(update={"port": board.data_path})]})
    relays: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            handle = board._firmware
            relays.append((time.monotonic(), int(handle.outputs) if handle else 0))
            await asyncio.sleep(0.005)

    results = []
    try:
        async with Gateway(cfg, state_dir=work / "gw-state") as gw:
            sio = gw.supervisor.safety_ios[0]
            watcher = asyncio.create_task(watch())
            for i in range(runs):
                while not (relays and relays[-1][1] == 0b0011):  # noqa: ASYNC110 - a board
                    await asyncio.sleep(0.05)
                version = "1.2" if i % 2 == 0 else "1.1"
                target = sio1.Board("sio", board.path, "usb", board.data_path, 7)
                started = time.monotonic()
                async with sio1.released(gw, sio):
                    await sio1.flash(target, sources[version])
                while not (sio.claimed and relays[-1][1] == 0b0011):  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
                ended = time.monotonic()
                off = [t for t, bits in relays if t >= started and bits == 0]
                results.append((ended - started, relays[-1][0] - off[0] if off else 0.0))
            stop.set()
            await watcher
    finally:
        board.close()
    return results


async def run(runs: int) -> dict[str, float]:
    key = SigningKey.generate()
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        root = Path(tmp)
        bundle = release(root / "release", "0.2.0", key)
        samples["bundle_bytes"] = [float(bundle.stat().st_size)]
        for i in range(runs):
            one = await update_once(root / f"update-{i}", bundle, key)
            for name, value in one.items():
                samples.setdefault(name, []).append(value)
            gap = await switch_gap(root / f"switch-{i}", bundle.parent, key)
            samples.setdefault("switch_gap_s", []).append(gap)
        from hil_tests.ota_release import ROOT, bumped_firmware

        sources = {"1.1": ROOT / "firmware", "1.2": bumped_firmware(root / "firmware-1.2")}
        for step, off in await sio1_step(root / "sio1", sources, runs):
            samples.setdefault("sio1_step_s", []).append(step)
            samples.setdefault("sio1_relays_off_s", []).append(off)
    metrics: dict[str, float] = {}
    for name, values in samples.items():
        metrics[f"{name}_min"] = min(values)
        metrics[f"{name}_max"] = max(values)
    metrics["load_average_1min"] = os.getloadavg()[0]
    metrics["runs"] = runs
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.ota")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv or [])
    metrics = asyncio.run(run(args.runs))
    write_result(
        "ota",
        metrics,
        targets={"switch_gap_s_max": "<= 3", "lateness_p99_ms_install_max": "<= 10"},
        units={
            "bundle_bytes": "bytes",
            "switch_gap_s": "s",
            "update_s": "s",
            "sio1_step_s": "s",
            "sio1_relays_off_s": "s",
        },
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
