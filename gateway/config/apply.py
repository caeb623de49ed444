"""Apply a new site document to the running gateway in place, keeping what did not change.

:class:`InPlace` brings a running :class:`~gateway.runtime.Gateway` from the site it runs to
another one without stopping it:

* a bus whose table did not change keeps its port or connection and its scheduler; its
  devices that did not change keep their pollers (plan, breaker, statistics); devices added,
  removed or changed on it are added to or taken from the running scheduler;
* a device the new document removes is first taken from the actuator's planning and every
  point the gateway wrote a demanded value to is written its release value (bounded: a device that
  does not answer is left to its own watchdog, and the apply goes on); if the apply fails
  after this, the points go back to the actuator as they were;
* a bus that changed (its port, speed, host, …) is stopped and reopened, with new pollers; a
  bus that is gone is stopped and closed, a new one opened. Ports are opened before anything
  else changes, so a port that cannot be opened fails the apply while the old site still runs
  everywhere else;
* then, in one synchronous step between two control cycles (the event loop runs nothing
  else meanwhile), the interlocks are swapped (:meth:`InterlockEngine.replace`: latches and
  state of those that still exist survive, demands of removed ones go back to their release
  values), the standard controllers rebuilt if the ``[safety]`` table or their devices
  changed (the export limit keeps its current setpoint), the watchdog keeper and the SIO-1
  claim protocols follow the devices (a SIO-1 that did not change keeps its claim), and the
  actuator forgets the points of removed devices.

The control loop is never stopped: it keeps its period through the apply. What cannot change
in place — the gateway's identity, the ``[uplink]`` table, the control period — is refused
before anything changes (:func:`restart_needed`). Rolling back is applying the previous
document the same way: the reconciliation looks at what runs, not at what was asked last, so
it also repairs an apply that failed half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self

from gateway.bus.config import Device, RtuBus, TcpBus
from gateway.bus.discovery import discover_sunspec
from gateway.bus.scheduler import BusScheduler
from gateway.bus.transport import Transport
from gateway.control.actuator import PRIORITY_OPERATOR, Target
from gateway.control.engine import RuleRuntime
from gateway.control.safety_io import SafetyIo
from gateway.control.standard import controllers
from gateway.devices.profile import DeviceKind
from gateway.errors import ApplyError
from gateway.site import SiteConfig

if TYPE_CHECKING:
    from gateway.bus.poller import DevicePoller
    from gateway.runtime import Gateway

log = logging.getLogger(__name__)

#: how long the release writes of removed devices may take together
RELEASE_TIMEOUT_S = 3.0


@dataclass
class Changes:
    """What an apply changed (or a plan would change), by name."""

    buses_reopened: list[str] = field(default_factory=list)  # opened anew (added or changed)
    buses_closed: list[str] = field(default_factory=list)  # removed (or changed: reopened)
    devices_added: list[str] = field(default_factory=list)  # new pollers (added or changed)
    devices_removed: list[str] = field(default_factory=list)  # pollers gone (removed or changed)
    #: removed devices' points written back to their release values ("charger-4.max_current")
    released: list[str] = field(default_factory=list)
    #: … and those whose release write failed (the device is left to its own watchdog)
    release_failed: list[str] = field(default_factory=list)
    interlocks: bool = False
    safety: bool = False

    def __str__(self) -> str:
        parts = [
            f"{what}: {', '.join(names)}"
            for what, names in (
                ("buses opened", self.buses_reopened),
                ("buses closed", self.buses_closed),
                ("devices added", self.devices_added),
                ("devices removed", self.devices_removed),
                ("released", self.released),
                ("release failed", self.release_failed),
            )
            if names
        ]
        if self.interlocks:
            parts.append("interlocks replaced")
        if self.safety:
            parts.append("standard interlocks rebuilt")
        return "; ".join(parts) or "nothing changed"


def restart_needed(old: SiteConfig, new: SiteConfig) -> list[str]:
    """Why ``new`` cannot be applied in place over ``old``: one message per key, each naming it."""
    problems = []
    if new.gateway != old.gateway:
        problems.append(
            f"gateway: this gateway is {old.gateway.site}/{old.gateway.id}; a document for "
            f"{new.gateway.site}/{new.gateway.id} cannot be applied to it"
        )
    if new.uplink != old.uplink:
        problems.append(
            "uplink: the [uplink] table cannot change while the gateway runs (it carries this "
            "very message); change it on the gateway and restart it"
        )
    if new.control.period_ms != old.control.period_ms:
        problems.append(
            f"control.period_ms: {new.control.period_ms:g} (running: {old.control.period_ms:g}): "
            "the control period cannot change while the loop runs; change it on the gateway "
            "and restart it"
        )
    return problems


def _transport(bus: RtuBus | TcpBus) -> Transport:
    from gateway.runtime import open_transport  # the runtime composes; this drives its parts

    return open_transport(bus)


class InPlace:
    """Applies site documents to one running gateway; ``async with`` it inside the gateway.

    It owns what it opened (ports, scheduler and discovery tasks) and closes it on exit,
    before the gateway closes the rest."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        #: what each running bus and poller was built from, to see what a document changes
        self._buses: dict[str, RtuBus | TcpBus] = {b.name: b for b in gateway.site.buses}
        self._devices: dict[str, tuple[Device, object, object]] = {
            d.name: _identity(gateway.site, d) for d in gateway.site.devices
        }
        self._transports: dict[str, Transport] = {}  # buses this opened
        self._buses_seen: set[str] = set(self._buses)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.last = Changes()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for transport in self._transports.values():
            with contextlib.suppress(Exception):
                await transport.__aexit__(None, None, None)

    def unchanged_devices(self, new: SiteConfig) -> set[str]:
        """The running devices ``new`` leaves as they are (same table, bus and profile)."""
        kept_buses = {b.name for b in new.buses if self._buses.get(b.name) == b}
        return {
            d.name
            for d in new.devices
            if d.bus in kept_buses
            and d.name in self.gateway.pollers
            and self._devices.get(d.name) == _identity(new, d)
        }

    async def apply(self, new: SiteConfig) -> Changes:
        """Make the gateway run ``new``; ApplyError (nothing changed yet, or changed only in
        part: apply the previous site to repair) when it cannot."""
        problems = restart_needed(self.gateway.site, new)
        if problems:
            raise ApplyError(problems)
        async with self._lock:
            changes = Changes()
            leaving = set(self.gateway.pollers) - {d.name for d in new.devices}
            held = self._hold(leaving)
            try:
                await self._release(held, changes)
                await self._buses_to(new, changes)  # may fail (a port): before the swap
            except BaseException:
                for target in held:  # the devices stay: planned as before
                    target.owned = False
                raise
            added = self._new_pollers(new, set(changes.buses_reopened))
            await asyncio.sleep(0)  # a control cycle may run between the preparations
            profiles = {name: p.profile for name, p in self.gateway.pollers.items()}
            profiles.update({p.name: p.profile for ps in added.values() for p in ps})
            rules = {spec.name: RuleRuntime(spec, profiles) for spec in new.all_interlocks()}
            await asyncio.sleep(0)
            self._swap(new, changes, added, rules)
            self.last = changes
            return changes

    # -- phase 0: removed devices let go (awaits; never fails) ------------------------------

    def _hold(self, devices: set[str]) -> list[Target]:
        """The targets of ``devices`` the actuator writes, taken from its planning (so the
        control loop does not write the demanded value back over the release value)."""
        held = []
        for (device, _point), target in self.gateway.actuator.targets.items():
            if device in devices and not target.owned:
                target.owned = True
                held.append(target)
        return held

    async def _release(self, held: list[Target], changes: Changes) -> None:
        """Write its release value to each held point the gateway last wrote another value
        to (a point never written has nothing to undo, and a device whose state was never
        read back is never written: :class:`~gateway.control.actuator.Actuator`)."""
        due = [
            t
            for t in held
            if t.release is not None
            and t.sent is not None
            and t.sent != t.release
            and t.device in self.gateway.pollers
        ]
        if not due:
            return
        names = [f"{t.device}.{t.point}" for t in due]
        writes = [self.gateway.commands.write(t.device, t.point, t.release) for t in due]
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                results = await asyncio.gather(*writes, return_exceptions=True)
        except TimeoutError:
            results = [TimeoutError(f"no answer within {RELEASE_TIMEOUT_S:g} s")] * len(due)
        for name, target, result in zip(names, due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("configuration: %s not released (%s)", name, result)
                changes.release_failed.append(name)
            else:
                log.info("configuration: %s released to %r", name, target.release)
                changes.released.append(name)

    # -- phase 1: buses (awaits; may fail) -------------------------------------------------

    async def _buses_to(self, new: SiteConfig, changes: Changes) -> None:
        gw = self.gateway
        wanted = {b.name: b for b in new.buses}
        for name in list(gw.schedulers):
            task = gw.bus_tasks.get(name)
            if wanted.get(name) != self._buses.get(name) or task is None or task.done():
                await self._stop_bus(name, changes)
                changes.buses_closed.append(name)
        opened: dict[str, Transport] = {}
        try:
            for bus in new.buses:
                if bus.name not in gw.schedulers:
                    transport = _transport(bus)
                    await transport.__aenter__()  # TransportClosed: the port cannot be opened
                    opened[bus.name] = transport
        except Exception as exc:
            for transport in opened.values():
                with contextlib.suppress(Exception):
                    await transport.__aexit__(None, None, None)
            raise ApplyError([f"buses: {exc}"]) from exc
        now = time.monotonic()
        for name, transport in opened.items():
            bus = wanted[name]
            pollers = []
            for dev in new.devices_on(name):
                poller = gw.new_poller(new, dev, now)
                self._add_poller(poller, new, changes)
                pollers.append(poller)
            scheduler = BusScheduler(transport, pollers)
            gw.schedulers[name] = scheduler
            self._transports[name] = transport
            self._buses[name] = bus
            task = asyncio.create_task(scheduler.run(), name=f"bus:{name}")
            self._track(task)
            gw.bus_tasks[name] = task
            self._discover(pollers, scheduler)
            changes.buses_reopened.append(name)

    async def _stop_bus(self, name: str, changes: Changes) -> None:
        gw = self.gateway
        # out of the dicts first: a write or command looks its device up there and queues
        # on the scheduler in the same step, so none reaches it once its task is stopping
        # (what was queued before is cancelled by the scheduler as it stops)
        scheduler = gw.schedulers.pop(name)
        for device in scheduler.pollers:
            gw.pollers.pop(device, None)
            changes.devices_removed.append(device)
            self._devices.pop(device, None)
        task = gw.bus_tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await scheduler.transport.__aexit__(None, None, None)
        self._transports.pop(name, None)
        self._buses.pop(name, None)

    # -- phase 2: one synchronous step between control cycles ------------------------------

    def _new_pollers(self, new: SiteConfig, reopened: set[str]) -> dict[str, list[DevicePoller]]:
        """Pollers for the devices added or changed on the buses kept, made before the swap
        (planning their reads takes a while): bus name → pollers."""
        now = time.monotonic()
        out: dict[str, list[DevicePoller]] = {}
        for name, scheduler in self.gateway.schedulers.items():
            if name in reopened:
                continue
            for dev in new.devices_on(name):
                if dev.name not in scheduler.pollers or self._devices.get(dev.name) != _identity(
                    new, dev
                ):
                    out.setdefault(name, []).append(self.gateway.new_poller(new, dev, now))
        return out

    def _swap(
        self,
        new: SiteConfig,
        changes: Changes,
        added_pollers: dict[str, list[DevicePoller]],
        rules: dict[str, RuleRuntime],
    ) -> None:
        gw = self.gateway
        old_site = gw.site
        before = set(gw.pollers)
        reopened = set(changes.buses_reopened)
        kept = {name: s for name, s in gw.schedulers.items() if name not in reopened}
        for name, scheduler in kept.items():  # buses kept: their devices follow; first out…
            wanted = {d.name: d for d in new.devices_on(name)}
            for device in list(scheduler.pollers):
                if device not in wanted or self._devices.get(device) != _identity(
                    new, wanted[device]
                ):
                    old = scheduler.pollers.pop(device)
                    if gw.pollers.get(device) is old:  # not moved to a bus opened above
                        del gw.pollers[device]
                        self._devices.pop(device, None)
                    changes.devices_removed.append(device)
        for name, scheduler in kept.items():  # … then in (a device may move between buses)
            added = added_pollers.get(name, [])
            for poller in added:
                scheduler.pollers[poller.name] = poller
                self._add_poller(poller, new, changes)
            self._discover(added, scheduler)
            scheduler.wake()
        removed = (before | set(changes.devices_removed)) - set(gw.pollers)
        self._forget(removed)
        profiles = {name: p.profile for name, p in gw.pollers.items()}
        changes.interlocks = new.interlocks != old_site.interlocks or bool(
            changes.devices_added or changes.devices_removed
        )
        gw.engine.replace(
            rules, profiles, arm_new_at=time.monotonic() + new.control.startup_grace_s
        )
        gw.interlock_inputs.clear()
        gw.interlock_inputs.update(gw.engine.inputs())
        if new.safety != old_site.safety or changes.devices_added or changes.devices_removed:
            changes.safety = True
            self._rebuild_controllers(new)
        self._follow_devices(set(changes.devices_added))
        gw.supervisor.config = new.control
        gw.alarms.chatter = new.alarms
        if gw.uplink is not None:  # the devices the next state message names
            gw.uplink.devices = {name: p.profile.model for name, p in gw.pollers.items()}
        gw.site = new
        gw.supervisor.loop.wake()

    def _add_poller(self, poller: DevicePoller, site: SiteConfig, changes: Changes) -> None:
        gw = self.gateway
        gw.pollers[poller.name] = poller
        self._devices[poller.name] = _identity(site, poller.device)
        changes.devices_added.append(poller.name)

    def _discover(self, pollers: Iterable[DevicePoller], scheduler: BusScheduler) -> None:
        for poller in pollers:
            if not poller.ready:
                self._track(
                    asyncio.create_task(
                        discover_sunspec(poller, scheduler), name=f"sunspec:{poller.name}"
                    )
                )

    def _forget(self, devices: set[str]) -> None:
        """Removed devices: no more writes to them, no heartbeats, no claim protocol, and
        their standing alarms about being silent cleared (nothing watches them any more)."""
        gw = self.gateway
        for key in [k for k in gw.actuator.targets if k[0] in devices]:
            del gw.actuator.targets[key]
            gw.actuator.read_back.discard(key)
        for device in devices:
            gw.keeper.kept.pop(device, None)
            for alarm in (f"comm-loss/{device}", f"watchdog/{device}"):
                gw.alarms.clear(alarm, by="configuration")
        for bus in set(self._buses_seen) - set(gw.schedulers):
            gw.alarms.clear(f"bus-down/{bus}", by="configuration")
        self._buses_seen = set(gw.schedulers)

    def _rebuild_controllers(self, new: SiteConfig) -> None:
        gw = self.gateway
        engine = gw.engine
        old = list(engine.controllers)
        fresh = controllers.build(new.safety, engine, gw.pollers)
        for controller in fresh:  # the export limit keeps its setpoint: no jump back to 100 %
            twin = next(
                (c for c in old if type(c) is type(controller) and _same_device(c, controller)),
                None,
            )
            if twin is not None and hasattr(twin, "pct"):
                controller.pct = twin.pct  # type: ignore[attr-defined]
        names = {c.name for c in fresh}
        for controller in old:
            if controller.name not in names:  # its limits go back to their release values
                for target in gw.actuator.targets.values():
                    target.demands.pop(controller.name, None)
        engine.controllers[:] = fresh

    def _follow_devices(self, added: set[str]) -> None:
        """Watchdog heartbeats, the site's watchdog timeouts and SIO-1 claim protocols for
        the devices that run now; a SIO-1 whose poller stayed keeps its claim."""
        gw = self.gateway
        for name, poller in gw.pollers.items():
            wd = poller.profile.watchdog
            if wd is None or (name in gw.keeper.kept and name not in added):
                continue
            gw.keeper.keep(name, wd)
            if poller.device.watchdog_timeout_s is not None and poller.profile.kind is not (
                DeviceKind.SAFETY_IO
            ):
                raw = round(poller.device.watchdog_timeout_s / wd.timeout_unit_s)
                gw.actuator.demand(
                    "site-config", name, wd.timeout, raw, PRIORITY_OPERATOR, limit=False
                )
        kept = {sio.device: sio for sio in gw.supervisor.safety_ios if sio.device in gw.pollers}
        ios = []
        for name, poller in gw.pollers.items():
            if poller.profile.kind is not DeviceKind.SAFETY_IO:
                continue
            sio = kept.get(name)
            if sio is None or name in added:
                seconds = poller.device.watchdog_timeout_s
                timeout_ms = None if seconds is None else round(seconds * 1000)
                sio = SafetyIo(name, gw.actuator, gw.image, gw.alarms, timeout_ms)
            ios.append(sio)
        gw.supervisor.safety_ios[:] = ios

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _identity(site: SiteConfig, dev: Device) -> tuple[Device, object, object]:
    """What a poller is built from: the device's table, its profile and poll periods."""
    return (dev, site.profile(dev), site.periods(dev))


def _same_device(a: object, b: object) -> bool:
    return getattr(a, "pv", None) == getattr(b, "pv", None)
