"""The gateway runtime: every bus of a site polled in parallel into one process image.

``async with Gateway(site) as gw:`` opens every port and connection, starts one scheduler
task per bus (and a SunSpec discovery task per SunSpec device, :mod:`gateway.bus.discovery`)
in a task group it owns, and on exit cancels and awaits them and closes every port. A site
with an ``[uplink]`` table also runs the uplink to the fleet (:mod:`gateway.uplink.link`): it
hears every image update, every alarm event, and reports the buses' and the control loop's
statistics in its health message. Writes and commands to devices go through
``gw.commands`` (:mod:`gateway.commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.bus.breaker import BreakerPolicy, CircuitBreaker
from gateway.bus.coalesce import CostModel
from gateway.bus.config import Device, RtuBus, TcpBus
from gateway.bus.discovery import discover_sunspec
from gateway.bus.poller import DevicePoller
from gateway.bus.rtu import RtuTransport
from gateway.bus.scheduler import BusScheduler
from gateway.bus.tcp import TcpTransport
from gateway.bus.transport import Transport
from gateway.commands import DeviceCommands
from gateway.control.actuator import PRIORITY_OPERATOR, Actuator
from gateway.control.alarms import AlarmLog, read_journal
from gateway.control.command_socket import SOCKET_NAME, ControlServer
from gateway.control.engine import InterlockEngine
from gateway.control.loop import Supervisor
from gateway.control.safety_io import SafetyIo
from gateway.control.standard import controllers
from gateway.control.watchdogs import WatchdogKeeper
from gateway.devices import codec
from gateway.devices.profile import DeviceKind
from gateway.errors import GatewayError
from gateway.image import Listener, ProcessImage, Quality, Sample
from gateway.metrics import serving
from gateway.site import SiteConfig
from gateway.uplink.health import RuntimeStats
from gateway.uplink.link import Uplink


def open_transport(bus: RtuBus | TcpBus) -> Transport:
    if isinstance(bus, RtuBus):
        return RtuTransport(
            bus.name,
            bus.port,
            bus.baudrate,
            parity=bus.parity,
            stopbits=bus.stopbits,
            bytesize=bus.bytesize,
        )
    return TcpTransport(bus.name, bus.host, bus.port)


def cost_model(bus: RtuBus | TcpBus) -> CostModel:
    return CostModel.for_rtu(bus.baudrate) if isinstance(bus, RtuBus) else CostModel.for_tcp()


def gateway_version() -> str:
    try:
        return metadata.version("doorstep")
    except metadata.PackageNotFoundError:
        return ""


class Gateway:
    """A running site: buses, schedulers, pollers and the process image."""

    def __init__(
        self,
        site: SiteConfig,
        *,
        policy: BreakerPolicy | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.site = site
        self.image = ProcessImage()
        self.state_dir = state_dir
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
        self.alarms = AlarmLog(
            state_dir / "alarms.jsonl" if state_dir else None,
            chatter=self.site.alarms,
            write_behind=True,  # an fsync must not hold up the control loop
        )
        self.actuator = Actuator(self.image)
        self.keeper = WatchdogKeeper(self.image)
        self.started_at = time.monotonic()
        self.schedulers: dict[str, BusScheduler] = {}
        self.pollers: dict[str, DevicePoller] = {}
        self.uplink: Uplink | None = None
        #: blocking work for the stop, in order (files' last state on disk), run in a thread
        self._at_stop: list[Callable[[], None]] = []
        self.commands = DeviceCommands(self.image, self.actuator, self.pollers, self.schedulers)
        self._policy = policy or BreakerPolicy()
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        #: bus name → its scheduler's task, and the image points that wake the control loop:
        #: what a configuration applied in place (gateway.config.apply) stops and updates
        self.bus_tasks: dict[str, asyncio.Task[None]] = {}
        self.interlock_inputs: set[tuple[str, str]] = set()
        #: called with the uplink before it connects: register inbox handlers and hooks here
        self.before_uplink: list[Callable[[Uplink], None]] = []

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            for task in self._tasks:  # else the task group waits on the buses for ever
                task.cancel()
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            for close in self._at_stop:
                await asyncio.to_thread(close)
            await asyncio.to_thread(self.alarms.close)  # the journal's last events on disk

    async def _start(self) -> None:
        if self.site.uplink is not None:  # first in, last out: it hears the final values
            uplink = self._new_uplink()
            for compose in self.before_uplink:
                compose(uplink)
            self.uplink = await self._stack.enter_async_context(uplink)
            self.image.subscribe_batch(self.uplink.on_samples)
            self.alarms.listeners.append(self.uplink.alarm)
            if self.alarms.journal is not None and self.alarms.journal.exists():
                await self.uplink.replay(read_journal(self.alarms.journal))
        now = time.monotonic()
        transports = {}
        for bus in self.site.buses:
            transports[bus.name] = await self._stack.enter_async_context(open_transport(bus))
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        for bus in self.site.buses:
            pollers = []
            for dev in self.site.devices_on(bus.name):
                poller = self.new_poller(self.site, dev, now)
                pollers.append(poller)
                self.pollers[dev.name] = poller
            scheduler = BusScheduler(transports[bus.name], pollers)
            self.schedulers[bus.name] = scheduler
            self.bus_tasks[bus.name] = tg.create_task(scheduler.run(), name=f"bus:{bus.name}")
            self._tasks.append(self.bus_tasks[bus.name])
        for poller in self.pollers.values():
            if not poller.ready:
                self._tasks.append(
                    tg.create_task(
                        discover_sunspec(poller, self.schedulers[poller.device.bus]),
                        name=f"sunspec:{poller.name}",
                    )
                )
        self.engine = InterlockEngine(
            self.site.all_interlocks(),
            {name: p.profile for name, p in self.pollers.items()},
            self.image,
            self.actuator,
            self.alarms,
            self.state_dir / "latches.json" if self.state_dir else None,
            write_behind=True,  # an fsync must not hold up the control loop
        )
        self._at_stop.append(self.engine.close)  # the latches' last state on disk
        self._at_stop.append(self.engine.close)  # the latches' last state on disk
        self.engine.arm(time.monotonic() + self.site.control.startup_grace_s)
        for poller in self.pollers.values():
            wd = poller.profile.watchdog
            if wd is None:
                continue
            self.keeper.keep(poller.name, wd)
            if poller.device.watchdog_timeout_s is not None and poller.profile.kind is not (
                DeviceKind.SAFETY_IO  # its timeout is part of its claim sequence
            ):
                raw = round(poller.device.watchdog_timeout_s / wd.timeout_unit_s)
                self.actuator.demand(
                    "site-config", poller.name, wd.timeout, raw, PRIORITY_OPERATOR, limit=False
                )
        if self.state_dir is not None:
            await self._stack.enter_async_context(
                ControlServer(self.state_dir / SOCKET_NAME, self.engine)
            )
        safety_ios = [
            SafetyIo(name, self.actuator, self.image, self.alarms, _timeout_ms(p))
            for name, p in self.pollers.items()
            if p.profile.kind is DeviceKind.SAFETY_IO
        ]
        self.engine.controllers += controllers.build(self.site.safety, self.engine, self.pollers)
        self.interlock_inputs = self.engine.inputs()
        self.image.subscribe(_on_change(self.interlock_inputs, lambda: self.supervisor.loop.wake()))
        self.supervisor = await self._stack.enter_async_context(
            Supervisor(
                self.site.control,
                self.engine,
                self.actuator,
                self.keeper,
                self.commands.write,
                safety_ios,
            )
        )
        self._stack.enter_context(serving(self, self.site.metrics, gateway_version()))

    def new_poller(self, site: SiteConfig, dev: Device, now: float) -> DevicePoller:
        """The poller of one of ``site``'s devices, placed on its bus's plan when ready."""
        poller = DevicePoller(
            dev,
            site.profile(dev),
            site.periods(dev),
            self.image,
            cost_model(site.bus(dev.bus)),
            CircuitBreaker(self._policy),
        )
        if poller.ready:
            poller.place(poller.profile, now)
        return poller

    def _new_uplink(self) -> Uplink:
        assert self.site.uplink is not None
        if self.state_dir is None:
            raise GatewayError("the uplink keeps its outbox in the state directory: give one")
        profiles = {d.name: self.site.profile(d) for d in self.site.devices}
        units = {(dev, p.name): p.unit for dev, prof in profiles.items() for p in prof.points}
        return Uplink(
            self.site.uplink,
            site=self.site.gateway.site,
            gateway=self.site.gateway.id,
            state_dir=self.state_dir,
            version=gateway_version(),
            units=units,
            devices={name: prof.model for name, prof in profiles.items()},
            stats=self.stats,
            started_at=self.started_at,
        )

    def stats(self) -> RuntimeStats:
        """Control-loop and bus statistics for the uplink's health message."""
        now = time.monotonic()
        supervisor = getattr(self, "supervisor", None)  # not yet during start-up
        loop = dict(supervisor.loop.snapshot()) if supervisor is not None else {}
        engine = getattr(self, "engine", None)
        if engine is not None:  # what a rollout and the OTA agent wait for
            active = sorted(r.name for r in engine.rules.values() if r.active)
            loop["interlocks_active"] = len(active)
            loop["interlocks_active_names"] = ", ".join(active)[:500]
        buses = {name: s.stats.snapshot(now) for name, s in self.schedulers.items()}
        return RuntimeStats(loop, buses)


def _timeout_ms(poller: DevicePoller) -> int | None:
    seconds = poller.device.watchdog_timeout_s
    return None if seconds is None else round(seconds * 1000)


def _on_change(inputs: set[tuple[str, str]], wake: Callable[[], None]) -> Listener:
    """An image listener that wakes the control loop when an interlock input changes value
    or quality (not on every poll that reads the same value again)."""
    last: dict[tuple[str, str], tuple[codec.Value, Quality]] = {}

    def listener(device: str, point: str, sample: Sample) -> None:
        key = (device, point)
        if key not in inputs:
            return
        seen = (sample.value, sample.quality)
        if last.get(key) != seen:
            last[key] = seen
            wake()

    return listener
