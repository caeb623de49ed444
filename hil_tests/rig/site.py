"""A whole community site in the simulator, built from the gateway's own site config.

Every device of the config becomes a simulated device of its profile; every RTU bus becomes
a line on a pseudo-terminal, every TCP bus a server on 127.0.0.1. :meth:`SimulatedSite.resolved`
is the same config pointing at those ports, for the gateway to use. The site meter sums the
chargers and the PV inverter. Physics advance on a fixed tick under the lock the servers
hold while they answer, so a response is always one consistent snapshot.

Run it on its own with ``python -m hil_tests.rig.site CONFIG --resolved OUT.toml``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.bus.config import RtuBus, TcpBus
from gateway.devices.profile import Table
from gateway.site import SiteConfig, load_site
from hil_tests.rig.fault_injection import Faults
from hil_tests.rig.registers import SimulatedUnit
from hil_tests.rig.rtu_line import RtuLineServer
from hil_tests.rig.sim import market
from hil_tests.rig.sim.charger import Car, Charger
from hil_tests.rig.sim.elevator import Elevator
from hil_tests.rig.sim.locker import LockerBoard
from hil_tests.rig.sim.meter import SiteMeter
from hil_tests.rig.sim.pv import PvInverter, clear_sky
from hil_tests.rig.sim.safety_io import SafetyIoBoard
from hil_tests.rig.tcp_slave import TcpSlaveServer

TICK_S = 0.02


class SimulatedSite:
    def __init__(self, config: SiteConfig, *, seed: int = 1, lively: bool = True) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.units: dict[str, SimulatedUnit] = {}
        self.faults: dict[str, Faults] = {b.name: Faults() for b in config.buses}
        self.lines: dict[str, RtuLineServer] = {}
        self.boards: dict[str, SafetyIoBoard] = {}  # SIO-1 devices by name
        self.board_buses: dict[str, SafetyIoBoard] = {}
        self.tcp: dict[str, TcpSlaveServer] = {}
        self._build_units(lively)
        self._stack = contextlib.AsyncExitStack()
        #: while True the physics stand still, so a test can compare values exactly
        self.paused = False

    def _build_units(self, lively: bool) -> None:
        meters: list[SiteMeter | market.MarketMeter] = []
        for dev in self.config.devices:
            unit: SimulatedUnit
            match dev.profile:
                case "ELV-24476":
                    unit = Elevator(
                        dev.unit_id, traffic=lively, rng=random.Random(self.rng.random())
                    )
                case "LCK-16":
                    unit = LockerBoard(dev.unit_id)
                case "EVSE-HEC":
                    unit = Charger(dev.unit_id, rng=random.Random(self.rng.random()))
                case "SUNSPEC-INV":
                    base = 40000 if dev.sunspec_base is None else dev.sunspec_base
                    unit = PvInverter(
                        dev.unit_id, base=base, irradiance=clear_sky() if lively else None
                    )
                case "SUNSPEC-METER":
                    base = 40000 if dev.sunspec_base is None else dev.sunspec_base
                    meter = SiteMeter(dev.unit_id, base=base)
                    meters.append(meter)
                    unit = meter
                case "SIO-1":
                    continue  # the real firmware on a line of its own: see _start
                case _:  # any other profile, the site's own too: simulated from its file
                    unit = market.simulate(self.config.profile(dev), dev.unit_id)
                    if isinstance(unit, market.MarketMeter):
                        meters.append(unit)
            self.units[dev.name] = unit
        sources: list[Callable[[], float]] = [
            u.power_w
            for u in self.units.values()
            if isinstance(u, (Charger, PvInverter, market.MarketCharger, market.MarketInverter))
        ]
        for site_meter in meters:
            site_meter.sources = sources
        if lively:
            self._plug_in_some_cars()

    def _plug_in_some_cars(self) -> None:
        """A carport in use: every other charger has a car, charging at 16 A. The gateway
        keeps the chargers' watchdogs alive; the HIL tests build their sites with
        ``lively=False`` and keep the defaults."""
        chargers = [u for u in self.units.values() if isinstance(u, Charger)]
        for i, charger in enumerate(chargers):
            if i % 2 == 0:
                charger.plug_in(Car(max_current_a=16 + 8 * (i % 3)))
                charger.write(Table.HOLDING, 261, [160])

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        self._advance(time.monotonic())
        for bus in self.config.buses:
            devices = self.config.devices_on(bus.name)
            sio = [d for d in devices if d.profile == "SIO-1"]
            if sio and isinstance(bus, RtuBus):
                board = SafetyIoBoard(sio[0].unit_id, bus.baudrate)
                self._stack.callback(board.stop)
                self.boards[sio[0].name] = board
                self.board_buses[bus.name] = board
                continue
            units = {d.unit_id: self.units[d.name] for d in devices}
            if isinstance(bus, RtuBus):
                line = RtuLineServer(
                    units, bus.baudrate, faults=self.faults[bus.name], lock=self.lock, name=bus.name
                )
                self.lines[bus.name] = await self._stack.enter_async_context(line)
            else:
                server = TcpSlaveServer(units, faults=self.faults[bus.name], lock=self.lock)
                self.tcp[bus.name] = await self._stack.enter_async_context(server)
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._physics = tg.create_task(self._run_physics(), name="site-physics")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._physics.cancel()
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _run_physics(self) -> None:
        next_tick = time.monotonic()
        while True:
            next_tick += TICK_S
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            if not self.paused:
                self._advance(time.monotonic())

    def _advance(self, now: float) -> None:
        with self.lock:
            for unit in self.units.values():
                unit.advance(now)  # type: ignore[attr-defined]

    # -- what the gateway connects to -------------------------------------------------------

    def unit(self, device: str) -> SimulatedUnit:
        return self.units[device]

    def faults_of(self, device: str) -> tuple[Faults, int]:
        dev = next(d for d in self.config.devices if d.name == device)
        return self.faults[dev.bus], dev.unit_id

    def resolved(self) -> SiteConfig:
        """The site config with every bus pointing at the simulator."""
        buses: list[RtuBus | TcpBus] = []
        for bus in self.config.buses:
            if bus.name in self.board_buses:
                buses.append(bus.model_copy(update={"port": self.board_buses[bus.name].path}))
            elif isinstance(bus, RtuBus):
                buses.append(bus.model_copy(update={"port": self.lines[bus.name].client_path}))
            else:
                buses.append(
                    bus.model_copy(update={"host": "127.0.0.1", "port": self.tcp[bus.name].port})
                )
        return self.config.model_copy(update={"buses": buses})


def to_toml(site: SiteConfig) -> str:
    """A site config as TOML: top-level tables and arrays of tables, anything deeper inline.

    The site's own profiles (from its profile_dirs, next to its file, or already inline) go
    in as ``[[profiles]]`` tables, so the document stands on its own wherever it is read."""
    data = site.model_dump(mode="json", by_alias=True, exclude_none=True)
    data.pop("profile_dirs", None)
    own = site.profile_library.site.values()
    data["profiles"] = [p.model_dump(mode="json", exclude_none=True) for p in own]
    out: list[str] = []
    for key, section in data.items():
        if isinstance(section, dict):
            out += [f"[{key}]", *_fields(section), ""]
        else:
            for item in section:
                out += [f"[[{key}]]", *_fields(item), ""]
    return "\n".join(out)


def _fields(fields: dict[str, object]) -> list[str]:
    return [f"{k} = {_inline(v)}" for k, v in fields.items()]


def _inline(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_inline(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_inline(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _serve(config: Path, resolved: Path) -> None:
    site_config = load_site(config)
    async with SimulatedSite(site_config) as site:
        partial = resolved.with_suffix(".partial")
        await asyncio.to_thread(partial.write_text, to_toml(site.resolved()))
        partial.replace(resolved)  # atomic: the demo never reads half a config
        print(f"simulated site ready: {resolved}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve a simulated site for a site config")
    parser.add_argument("config", type=Path)
    parser.add_argument(
        "--resolved",
        type=Path,
        required=True,
        help="write the config pointing at the simulator here",
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.config, args.resolved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
