"""What a person can make happen on the demo's simulated site, and the rig side that does it.

:data:`SCENARIOS` is the catalogue: each scenario's name, one line of help, and its arguments,
read by the client (``python -m hil_tests.rig.scenario``) to build its command line and by
the :class:`Director` to check a request. The Director lives in the process that owns the
:class:`~hil_tests.rig.site.SimulatedSite` and applies a scenario, or clears it (``--clear``),
through the simulators' own methods — the fire panel opens the SIO-1's loop, the charger's
RCD trips and latches, the elevator stops with people inside — so the gateway sees what it
would see on site.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from hil_tests.rig.control_channel import Reply, Request
from hil_tests.rig.cpu_load import CpuHogs
from hil_tests.rig.daylife import DEFAULT_SPEED, DayInTheLife
from hil_tests.rig.registers import SimModbusError
from hil_tests.rig.sim.charger import RESET_MAGIC, Charger
from hil_tests.rig.sim.elevator import Elevator
from hil_tests.rig.sim.meter import SiteMeter

if TYPE_CHECKING:
    from hil_tests.rig.site import SimulatedSite

EXPORT_MARGIN_W = 2000.0  # the default export reading: this far above the site's limit
MAX_HOGS = 64
MAX_LOAD_S = 3600.0


@dataclass(frozen=True)
class Param:
    """One argument: positional (``device``) or an option (``--watts``)."""

    name: str
    help: str
    type: type = str
    default: Any = None
    flag: bool = False  # an option without a value: true when given

    @property
    def key(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str  # one line, for --list
    undo: str  # what --clear does, completing "run `… --clear` …"
    params: tuple[Param, ...] = ()


_DEVICE = "the device (default: %s)"
SCENARIOS = {
    s.name: s
    for s in (
        Scenario("fire", "open the SIO-1 fire-alarm loop, as the fire panel does", "to close it"),
        Scenario(
            "rcd",
            "trip a charger's residual-current device: contactor open, locked out",
            "to clear the fault and reset the box",
            (
                Param("device", _DEVICE % "the first charger charging"),
                Param("--ac", "an AC residual current (default: DC)", flag=True),
            ),
        ),
        Scenario(
            "trapped",
            "stop an elevator with its doors closed and a passenger inside",
            "to free the passenger",
            (
                Param("device", _DEVICE % "the first elevator"),
                Param("--between-floors", "stop between two floors", flag=True),
                Param("--people", "how many are inside", type=int, default=1),
            ),
        ),
        Scenario(
            "dead",
            "make a device stop answering, as if its supply or cable were cut",
            "to bring it back",
            (Param("device", "any device of the site (with --clear: default every dead one)"),),
        ),
        Scenario(
            "export",
            "make the site meter read an export above the export limit (a test set on its CTs)",
            "to take the test set off",
            (Param("--watts", "the export to read, W (default: limit + 2 kW)", type=float),),
        ),
        Scenario(
            "load",
            "heavy CPU load: busy-loop processes at normal priority, for a while",
            "to stop them early",
            (
                Param("--procs", "how many", type=int, default=8),
                Param("--seconds", "for how long", type=float, default=120.0),
            ),
        ),
        Scenario(
            "day",
            "a scripted day in the life of the community, printing each event (Ctrl-C stops it)",
            "in another terminal to stop it",
            (
                Param(
                    "--seed", "the script's seed: the same seed, the same day", type=int, default=1
                ),
                Param(
                    "--speed",
                    "time compression (72: a day in 20 min)",
                    type=float,
                    default=DEFAULT_SPEED,
                ),
            ),
        ),
    )
}


class ScenarioError(Exception):
    """A request the Director refuses; the message goes back to the person."""


Args = dict[str, Any]
U = TypeVar("U")


class Director:
    """Applies and clears scenarios on a running site, one request at a time (the handler of
    the demo's :class:`~hil_tests.rig.control_channel.ControlChannel`). An async context
    manager: on exit it stops the CPU load and the day in the life it started."""

    def __init__(
        self,
        site: SimulatedSite,
        *,
        gateway_state_dir: Path | None = None,
        priority: str = "",
    ) -> None:
        self.site = site
        self.gateway_state_dir = gateway_state_dir
        self.priority = priority  # the rig's priority, as raise_priority reported it
        self.hogs = CpuHogs()
        self.day: DayInTheLife | None = None
        self._actions: dict[tuple[str, bool], Callable[[Args], str]] = {
            ("fire", False): self.fire,
            ("fire", True): self.fire_clear,
            ("rcd", False): self.rcd,
            ("rcd", True): self.rcd_clear,
            ("trapped", False): self.trapped,
            ("trapped", True): self.trapped_clear,
            ("dead", False): self.dead,
            ("dead", True): self.dead_clear,
            ("export", False): self.export,
            ("export", True): self.export_clear,
            ("load", False): self.load,
            ("load", True): self.load_clear,
            ("day", True): self.day_clear,
        }

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.day is not None:
            self.day.stop()
        self.hogs.stop()

    async def handle(self, request: Request) -> AsyncGenerator[Reply, None]:
        """The replies to one request: ``{"ok": …}`` or ``{"error": …}``; the day in the life
        first streams ``{"event": …}`` until it is stopped."""
        try:
            scenario, clear, args = parse(request)
            if scenario.name == "day" and not clear:
                async with contextlib.aclosing(self._play_day(args)) as replies:
                    async for reply in replies:
                        yield reply
                return
            yield {"ok": self._actions[(scenario.name, clear)](args)}
        except ScenarioError as exc:
            yield {"error": str(exc)}

    # -- fire ---------------------------------------------------------------------------------

    def fire(self, args: Args) -> str:
        return self._fire_loop(closed=False)

    def fire_clear(self, args: Args) -> str:
        return self._fire_loop(closed=True)

    def _fire_loop(self, *, closed: bool) -> str:
        if not self.site.boards:
            raise ScenarioError("this site has no SIO-1 board: the fire-alarm loop is its DI 0")
        for board in self.site.boards.values():
            board.set_input("fire_alarm_loop", closed)
        names = ", ".join(self.site.boards)
        if closed:
            return f"fire-alarm loop closed on {names}: the fire alarm clears"
        return f"fire-alarm loop opened on {names} (DI 0, the fire panel's contact): a fire alarm"

    # -- a charger's residual-current trip ------------------------------------------------------

    def rcd(self, args: Args) -> str:
        name, charger = self._unit(args["device"], Charger, "charger", prefer=_charging)
        kind = "ac" if args["ac"] else "dc"
        with self.site.lock:
            charger.trip_rcd(kind)
        return (
            f"{name}: {kind.upper()} residual current: the box opened its contactor and locked "
            "itself out"
        )

    def rcd_clear(self, args: Args) -> str:
        name, charger = self._unit(args["device"], Charger, "charger", prefer=_tripped)
        if args["device"] is None and not _tripped(charger):
            return "no charger has a residual-current trip"
        with self.site.lock:
            car = charger.car
            charger.clear_rcd()
            charger.unplug()
            point = charger.point("fault_reset")
            assert point.address is not None
            try:
                charger.write(point.table, point.address, [RESET_MAGIC])
            except SimModbusError as exc:
                raise ScenarioError(f"{name}: the box refused its fault reset: {exc}") from None
            finally:
                if car is not None:
                    charger.plug_in(car)
        state_dir = f" --state-dir {self.gateway_state_dir}" if self.gateway_state_dir else ""
        return (
            f"{name}: residual current gone; the electrician unplugged the car, reset the box "
            "(fault_reset 0xA5) and plugged the car in again. The gateway holds the charger "
            f"until its latch is reset: gateway reset-latch lockout-{name}{state_dir}"
        )

    # -- a trapped passenger ----------------------------------------------------------------------

    def trapped(self, args: Args) -> str:
        name, elevator = self._unit(args["device"], Elevator, "elevator")
        people = args["people"]
        if not 1 <= people <= 8:
            raise ScenarioError(f"trapped: --people {people} is outside 1..8 (a 630 kg car)")
        with self.site.lock:
            elevator.trap_passengers(between_floors=args["between_floors"], people=people)
        where = "between two floors" if args["between_floors"] else f"at floor {elevator.floor}"
        cfg = self.site.config.safety.trapped_passenger
        expect = (
            "this site has no [safety.trapped_passenger] to notice it"
            if cfg is None
            else f"the gateway should call it a trapped passenger after "
            f"{cfg.occupied_s + cfg.confirm_s:g} s (occupied_s + confirm_s)"
        )
        return f"{name}: stopped {where}, doors closed, {people} inside; {expect}"

    def trapped_clear(self, args: Args) -> str:
        elevators = self._all(args["device"], Elevator, "elevator", lambda e: e.trapped)
        if not elevators:
            return "no elevator has a trapped passenger"
        with self.site.lock:
            for _, elevator in elevators:
                elevator.release()
                elevator.alight(elevator.passengers)  # out they go, or the car stays occupied
        return "; ".join(
            f"{n}: passengers freed, doors opening at floor {e.floor}" for n, e in elevators
        )

    # -- a device that stops answering ----------------------------------------------------------

    def dead(self, args: Args) -> str:
        name = args["device"]
        if name is None:
            raise ScenarioError(f"dead: which device? ({', '.join(self._devices())})")
        self._check_device(name)
        with self.site.lock:
            self._answering(name, False)
        return f"{name} stops answering (no reply to any request)"

    def dead_clear(self, args: Args) -> str:
        if args["device"] is not None:
            self._check_device(args["device"])
        names = (
            [args["device"]] if args["device"] else [d for d in self._devices() if self._is_dead(d)]
        )
        if not names:
            return "every device answers"
        with self.site.lock:
            for name in names:
                self._answering(name, True)
        return f"{', '.join(names)} answering again"

    def _answering(self, name: str, alive: bool) -> None:
        board = self.site.boards.get(name)
        if board is not None:  # the real SIO-1 firmware: its supply
            (board.power_on if alive else board.power_off)()
            return
        faults, unit_id = self.site.faults_of(name)
        faults.of(unit_id).dead = not alive

    def _is_dead(self, name: str) -> bool:
        board = self.site.boards.get(name)
        if board is not None:
            return not board.powered
        faults, unit_id = self.site.faults_of(name)
        return faults.of(unit_id).dead

    def _devices(self) -> list[str]:
        return [d.name for d in self.site.config.devices]

    def _check_device(self, name: str) -> None:
        if name not in self._devices():
            raise ScenarioError(f"no device {name!r} on this site ({', '.join(self._devices())})")

    # -- the export limit -------------------------------------------------------------------------

    def export(self, args: Args) -> str:
        name, meter = self._meter()
        cfg = self.site.config.safety.export_limit
        watts = args["watts"]
        if watts is None:
            watts = (cfg.limit_w if cfg else 5000.0) + EXPORT_MARGIN_W
        if watts <= 0:
            raise ScenarioError(f"export: --watts {watts:g} is not an export (expected > 0 W)")
        with self.site.lock:
            meter.inject(-watts)
        if cfg is None:
            expect = "this site has no [safety.export_limit]"
        elif watts <= cfg.limit_w:
            expect = f"below the export limit of {cfg.limit_w:g} W"
        else:
            expect = (
                f"above the export limit of {cfg.limit_w:g} W: the gateway curtails the PV, "
                "step by step, down to its floor while the reading stays"
            )
        return f"{name} reads {watts:g} W of export (a test set on its CT inputs), {expect}"

    def export_clear(self, args: Args) -> str:
        name, meter = self._meter()
        with self.site.lock:
            meter.inject(None)
        return f"test set off: {name} measures the site again"

    def _meter(self) -> tuple[str, SiteMeter]:
        cfg = self.site.config.safety.export_limit
        return self._unit(cfg.meter if cfg else None, SiteMeter, "meter")

    # -- CPU load ---------------------------------------------------------------------------------

    def load(self, args: Args) -> str:
        procs, seconds = args["procs"], args["seconds"]
        if not 1 <= procs <= MAX_HOGS:
            raise ScenarioError(f"load: --procs {procs} is outside 1..{MAX_HOGS}")
        if not 0 < seconds <= MAX_LOAD_S:
            raise ScenarioError(f"load: --seconds {seconds:g} is outside (0, {MAX_LOAD_S:g}]")
        pids = self.hogs.start(procs, seconds)
        return (
            f"{procs} busy-loop processes at normal priority for {seconds:g} s "
            f"(pids {' '.join(map(str, pids))}); {self.priority or 'rig priority unchanged'}"
        )

    def load_clear(self, args: Args) -> str:
        return f"stopped {self.hogs.stop()} busy-loop processes"

    # -- a day in the life ----------------------------------------------------------------------

    async def _play_day(self, args: Args) -> AsyncGenerator[Reply, None]:
        if self.day is not None:
            raise ScenarioError("a day in the life is already playing; `day --clear` stops it")
        try:
            day = DayInTheLife(self.site, seed=args["seed"], speed=args["speed"])
        except ValueError as exc:
            raise ScenarioError(f"day: {exc}") from None
        minutes = 24 * 60 / args["speed"]
        async with day:
            self.day = day
            try:
                yield {"event": f"a day in the life: seed {args['seed']}, 24 h in {minutes:g} min"}
                async for line in day.lines():
                    yield {"event": line}
            finally:
                self.day = None
        yield {"ok": f"the day in the life stopped after {day.events} events; its faults cleared"}

    def day_clear(self, args: Args) -> str:
        if self.day is None:
            raise ScenarioError("no day in the life is playing")
        self.day.stop()
        return "the day in the life stops"

    # -- finding devices ----------------------------------------------------------------------

    def _unit(
        self,
        name: str | None,
        kind: type[U],
        what: str,
        prefer: Callable[[Any], bool] = lambda _: True,
    ) -> tuple[str, U]:
        """The named unit of a kind, or the first of that kind ``prefer`` likes (else the
        first); a message that lists the candidates otherwise."""
        units = self._all(None, kind, what)
        if name is None:
            return next(((n, u) for n, u in units if prefer(u)), units[0])
        unit = dict(units).get(name)
        if unit is None:
            known = ", ".join(n for n, _ in units)
            raise ScenarioError(f"{name!r} is not a {what} of this site ({what}s: {known})")
        return name, unit

    def _all(
        self,
        name: str | None,
        kind: type[U],
        what: str,
        where: Callable[[Any], bool] = lambda _: True,
    ) -> list[tuple[str, U]]:
        units = [(n, u) for n, u in self.site.units.items() if isinstance(u, kind)]
        if not units:
            raise ScenarioError(f"this site has no {what}")
        if name is not None:
            units = [self._unit(name, kind, what)]
        return [(n, u) for n, u in units if where(u)]


def _charging(charger: Charger) -> bool:
    return charger.car is not None and charger.contactor == 1


def _tripped(charger: Charger) -> bool:
    return charger.rcd_status != 0


def parse(request: Request) -> tuple[Scenario, bool, Args]:
    """A request's scenario, whether it clears it, and its checked arguments."""
    name = request.get("scenario")
    scenario = SCENARIOS.get(name) if isinstance(name, str) else None
    if scenario is None:
        raise ScenarioError(f"no scenario {name!r} (scenarios: {', '.join(SCENARIOS)})")
    raw = request.get("args") or {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{scenario.name}: args must be an object, got {raw!r}")
    keys = {p.key for p in scenario.params}
    if unknown := sorted(set(raw) - keys):
        raise ScenarioError(f"{scenario.name}: no argument {', '.join(unknown)}")
    args = {}
    for p in scenario.params:
        value = raw.get(p.key, p.default)
        if p.flag:
            value = bool(value)
        elif value is not None:
            try:
                value = p.type(value)
            except (TypeError, ValueError):
                raise ScenarioError(
                    f"{scenario.name}: {p.name} {value!r} is not a {p.type.__name__}"
                ) from None
        args[p.key] = value
    return scenario, bool(request.get("clear", False)), args
