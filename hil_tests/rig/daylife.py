"""A day in the life of the community, scripted, seeded and time-compressed (``scenario day``).

Cars arrive at the carport in the evening and leave in the morning, visitors charge for an
hour or two; couriers deposit parcels during the day and residents collect them; people ride
the elevators, most in the morning and evening peaks; clouds pass over the PV; and a few
faults happen and clear again (an alarm button pressed by mistake, a locker board that stops
answering for a while, an inverter that overheats, a passenger stuck for an hour).

The script is a pure function of a seed and the site's layout (:func:`schedule`): the same
seed gives the same events. :class:`DayInTheLife` plays it on a running site, a day in 20
minutes by default (the demo sun's day), through the simulators' own methods: a courier opens
a compartment through its unlock coil, as the gateway's ``open_door`` does (the gateway takes
no unlock command from outside yet). While it plays, it owns the PV's sky and the elevators'
traffic; when it stops, the faults it raised clear and both go back to what they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from hil_tests.rig.registers import SimModbusError
from hil_tests.rig.sim.charger import Car, Charger
from hil_tests.rig.sim.elevator import OPEN, OPENING, Elevator
from hil_tests.rig.sim.locker import DOORS, LockerBoard
from hil_tests.rig.sim.pv import OVER_TEMP, PvInverter

if TYPE_CHECKING:
    from hil_tests.rig.site import SimulatedSite

HOUR = 3600.0
DAY_S = 24 * HOUR
START_HOUR = 6  # the script begins at 06:00, sunrise
DEFAULT_SPEED = 72.0  # a day in 20 minutes
ALARM_BUTTON = 90  # table 1.3
RIDE_WAIT_S = 90.0  # real seconds people wait for a car before they take the stairs
DOOR_OPEN_S = 3 * 60.0  # a locker door stands open while a parcel goes in or out


@dataclass(frozen=True)
class Layout:
    """What the script needs to know of a site: its devices by kind."""

    chargers: tuple[str, ...] = ()
    parked: frozenset[str] = frozenset()  # chargers with a car when the day starts
    lockers: tuple[str, ...] = ()
    elevators: tuple[tuple[str, int, int], ...] = ()  # name, lowest and highest floor
    inverters: tuple[str, ...] = ()

    @classmethod
    def of(cls, site: SimulatedSite) -> Layout:
        units = [(d.name, site.units.get(d.name)) for d in site.config.devices]
        return cls(
            chargers=tuple(n for n, u in units if isinstance(u, Charger)),
            parked=frozenset(n for n, u in units if isinstance(u, Charger) and u.car),
            lockers=tuple(n for n, u in units if isinstance(u, LockerBoard)),
            elevators=tuple((n, u.lowest, u.highest) for n, u in units if isinstance(u, Elevator)),
            inverters=tuple(n for n, u in units if isinstance(u, PvInverter)),
        )


@dataclass(frozen=True, order=True)
class Event:
    at_s: float  # simulated seconds since 06:00 of the first day
    seq: int  # order among events at the same time
    kind: str = field(compare=False)
    device: str = field(compare=False)
    text: str = field(compare=False)  # what a person reads
    args: tuple[Any, ...] = field(default=(), compare=False)

    @property
    def clock(self) -> str:
        """``day 1 07:12``."""
        day, rest = divmod(self.at_s + START_HOUR * HOUR, DAY_S)
        hours, minutes = divmod(int(rest // 60), 60)
        return f"day {int(day) + 1} {hours:02d}:{minutes:02d}"

    def __str__(self) -> str:
        return f"{self.clock}  {self.text}"


# -- the script -------------------------------------------------------------------------------


def schedule(seed: int, layout: Layout) -> Iterator[Event]:
    """The day's events in time order, day after day, for ever."""
    script = _Script(random.Random(seed), layout)
    for name in sorted(layout.parked):  # last night's cars leave in the morning
        script.add(script.between(0, 7, 9.5), "car-leaves", name, f"{name}: the car leaves")
    for day in itertools.count():
        script.plan(day)
        end = (day + 1) * DAY_S
        while script.pending and script.pending[0].at_s < end:
            yield heapq.heappop(script.pending)


class _Script:
    def __init__(self, rng: random.Random, layout: Layout) -> None:
        self.rng, self.layout = rng, layout
        self.pending: list[Event] = []
        self._seq = itertools.count()
        self._charger_free = {c: (DAY_S if c in layout.parked else 0.0) for c in layout.chargers}
        self._door_free = {(lk, n): 0.0 for lk in layout.lockers for n in range(1, DOORS + 1)}

    def add(self, at: float, kind: str, device: str, text: str, *args: Any) -> None:
        heapq.heappush(self.pending, Event(at, next(self._seq), kind, device, text, args))

    def between(self, day: int, from_h: float, to_h: float) -> float:
        """A moment of ``day`` between two hours of the clock (hours past 24: the next day)."""
        return day * DAY_S + (self.rng.uniform(from_h, to_h) - START_HOUR) * HOUR

    def plan(self, day: int) -> None:
        self._cars(day)
        self._parcels(day)
        self._rides(day)
        self._clouds(day)
        self._faults(day)

    def _cars(self, day: int) -> None:
        stays = [(self.between(day, 10, 15), self.rng.uniform(1, 3)) for _ in range(2)]
        for _ in range(self.rng.randint(3, 5)):  # residents home for the night
            arrive = self.between(day, 16, 21)
            stays.append((arrive, (self.between(day, 31, 33.5) - arrive) / HOUR))
        for arrive, hours in sorted(stays):
            free = [c for c in self.layout.chargers if self._charger_free[c] <= arrive]
            if not free:
                continue
            charger = self.rng.choice(free)
            amps, phases = self.rng.choice([16, 16, 32]), self.rng.choice([3, 3, 1])
            self._charger_free[charger] = leave = arrive + hours * HOUR
            text = f"{charger}: a car arrives ({phases}-phase, up to {amps} A) and plugs in"
            self.add(arrive, "car-arrives", charger, text, amps, phases)
            self.add(leave, "car-leaves", charger, f"{charger}: the car leaves")

    def _parcels(self, day: int) -> None:
        for at in sorted(self.between(day, 9, 17) for _ in range(self.rng.randint(6, 10))):
            free = sorted(k for k, t in self._door_free.items() if t <= at)
            if not free:
                continue
            locker, door = self.rng.choice(free)
            collect = self.between(day, 17, 22) + self.rng.choice([0.0, DAY_S])
            self._door_free[(locker, door)] = collect + 0.1 * HOUR
            where = f"{locker} door {door}"
            self.add(at, "deposit", locker, f"{where}: a courier deposits a parcel", door)
            self.add(at + DOOR_OPEN_S, "shut", locker, f"{where}: shut again", door)
            self.add(collect, "collect", locker, f"{where}: a resident collects a parcel", door)
            self.add(collect + DOOR_OPEN_S, "shut", locker, f"{where}: shut again", door)

    def _rides(self, day: int) -> None:
        for name, lowest, highest in self.layout.elevators:
            for _ in range(self.rng.randint(10, 16)):
                peak = self.rng.choice(["morning", "evening", "day"])
                upper = self.rng.randint(lowest + 1, highest)
                if peak == "morning":
                    at, origin, destination = self.between(day, 7, 9), upper, lowest
                elif peak == "evening":
                    at, origin, destination = self.between(day, 17, 20), lowest, upper
                else:
                    at = self.between(day, 9, 22)
                    origin, destination = self.rng.sample(range(lowest, highest + 1), 2)
                people = self.rng.choice([1, 1, 2, 3])
                who = "a resident rides" if people == 1 else f"{people} residents ride"
                text = f"{name}: {who} from floor {origin} to floor {destination}"
                self.add(at, "ride", name, text, origin, destination, people)

    def _clouds(self, day: int) -> None:
        clear_from = 0.0
        for at in sorted(self.between(day, 9, 16) for _ in range(self.rng.randint(2, 4))):
            minutes = self.rng.randint(10, 45)
            cover = round(self.rng.uniform(0.4, 0.9), 1)
            if at < clear_from:
                continue  # one cloud at a time
            clear_from = at + minutes * 60
            text = f"a cloud passes over the PV: {cover:.0%} less sun for {minutes} min"
            self.add(at, "cloud", "sky", text, cover)
            self.add(at + minutes * 60, "cloud", "sky", "the cloud has passed: full sun", 0.0)

    def _faults(self, day: int) -> None:
        makers: list[Callable[[int], None]] = []
        if self.layout.elevators:
            makers += [self._alarm_button, self._trapped]
        if self.layout.lockers:
            makers.append(self._silent_locker)
        if self.layout.inverters:
            makers.append(self._hot_inverter)
        for make in self.rng.sample(makers, min(len(makers), self.rng.randint(2, 3))):
            make(day)

    def _alarm_button(self, day: int) -> None:
        name = self.rng.choice(self.layout.elevators)[0]
        at, minutes = self.between(day, 8, 20), self.rng.randint(5, 15)
        self.add(at, "alarm-button", name, f"{name}: a child presses the alarm button", True)
        self.add(at + minutes * 60, "alarm-button", name, f"{name}: alarm button released", False)

    def _trapped(self, day: int) -> None:
        name = self.rng.choice(self.layout.elevators)[0]
        at, minutes = self.between(day, 8, 20), self.rng.randint(60, 120)
        self.add(at, "trapped", name, f"{name}: the car stops with a resident inside", True)
        text = f"{name}: the technician frees the resident after {minutes} min"
        self.add(at + minutes * 60, "trapped", name, text, False)

    def _silent_locker(self, day: int) -> None:
        name = self.rng.choice(self.layout.lockers)
        at, minutes = self.between(day, 8, 20), self.rng.randint(30, 90)
        self.add(at, "silent", name, f"{name}: the board stops answering (loose RS-485 plug)", True)
        self.add(at + minutes * 60, "silent", name, f"{name}: plug reseated, answers again", False)

    def _hot_inverter(self, day: int) -> None:
        name = self.rng.choice(self.layout.inverters)
        at, minutes = self.between(day, 11, 15), self.rng.randint(20, 60)
        self.add(at, "overheat", name, f"{name}: over temperature, output stops", True)
        self.add(at + minutes * 60, "overheat", name, f"{name}: cooled down, output resumes", False)


# -- playing it on a site -----------------------------------------------------------------------


class DaySky:
    """The PV's irradiance while the day plays: the sun by the script's clock, under clouds."""

    def __init__(self, day: DayInTheLife) -> None:
        self.day = day
        self.cloud = 0.0

    def __call__(self, now: float) -> float:
        hours = (self.day.simulated_s(now) / HOUR) % 24  # 0 = 06:00, sunrise
        return max(0.0, math.sin(2 * math.pi * hours / 24)) ** 1.5 * (1 - self.cloud)


class DayInTheLife:
    """Plays :func:`schedule` on a running site until :meth:`stop` or until it is exited; an
    async context manager owning the task group of the clock and the rides. What it does
    comes out of :meth:`lines`, one line per event."""

    def __init__(self, site: SimulatedSite, *, seed: int = 1, speed: float = DEFAULT_SPEED) -> None:
        if speed <= 0:
            raise ValueError(f"speed {speed}: expected more than 0 (72 plays a day in 20 min)")
        self.site, self.seed, self.speed = site, seed, speed
        self.events = 0
        self.sky = DaySky(self)
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._undo: dict[tuple[str, str], Callable[[], None]] = {}  # faults not cleared yet
        self._restore: list[Callable[[], None]] = []
        self._rides: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self._started = time.monotonic()

    def simulated_s(self, now: float) -> float:
        return (now - self._started) * self.speed

    async def __aenter__(self) -> Self:
        self._take_over()
        self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._clock = self._tg.create_task(self._play(), name="day-in-the-life")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        for task in list(self._rides):
            task.cancel()
        try:
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            with self.site.lock:
                for undo in [*self._undo.values(), *self._restore]:
                    undo()
            self._undo.clear()

    def stop(self) -> None:
        self._clock.cancel()
        self._lines.put_nowait(None)

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self._lines.get()) is not None:
            yield line

    # -- the clock ----------------------------------------------------------------------------

    def _take_over(self) -> None:
        """The day's own sky on every inverter, its own residents in the elevators."""
        for unit in self.site.units.values():
            if isinstance(unit, PvInverter):
                self._restore.append(_setter(unit, "irradiance", unit.irradiance))
                unit.irradiance = self.sky
            elif isinstance(unit, Elevator):
                self._restore.append(_setter(unit, "traffic", unit.traffic))
                unit.traffic = False

    async def _play(self) -> None:
        for event in schedule(self.seed, Layout.of(self.site)):
            due = self._started + event.at_s / self.speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            note = self._apply(event)
            self.events += 1
            self._lines.put_nowait(str(event) + (f"  ({note})" if note else ""))

    def _apply(self, event: Event) -> str | None:
        if event.kind == "ride":
            ride = self._tg.create_task(self._ride(event), name=f"ride {event.device}")
            self._rides.add(ride)
            ride.add_done_callback(self._rides.discard)
            return None
        if event.kind == "cloud":
            self.sky.cloud = event.args[0]
            return None
        unit = self.site.units[event.device]
        with self.site.lock:
            try:
                return _ACTIONS[event.kind](self, unit, event)
            except (SimModbusError, ValueError) as exc:
                return f"did not happen: {exc}"

    def note_fault(self, event: Event, on: bool, undo: Callable[[], None]) -> None:
        """Remember a fault raised (``on``) until its clearing event, or forget it."""
        if on:
            self._undo[(event.kind, event.device)] = undo
        else:
            self._undo.pop((event.kind, event.device), None)

    async def _ride(self, event: Event) -> None:
        elevator = self.site.units[event.device]
        assert isinstance(elevator, Elevator)
        origin, destination, people = event.args
        with self.site.lock:
            elevator.call(origin)
        if not await self._arrived(elevator, origin):
            self._lines.put_nowait(f"    {event.device}: no car came to floor {origin}; stairs")
            return
        with self.site.lock:
            elevator.board(people)
            elevator.call(destination)
        await self._arrived(elevator, destination)
        with self.site.lock:
            elevator.alight(people)

    async def _arrived(self, elevator: Elevator, floor: int) -> bool:
        """Whether the car stood at ``floor`` with its doors opening within the wait."""
        deadline = time.monotonic() + RIDE_WAIT_S
        while time.monotonic() < deadline:
            if elevator.floor == floor and elevator.at_floor and elevator.door in (OPENING, OPEN):
                return True
            await asyncio.sleep(0.1)
        return False


def _setter(obj: object, name: str, value: object) -> Callable[[], None]:
    return lambda: setattr(obj, name, value)


# -- what each kind of event does (under the site's lock) ---------------------------------------


def _car_arrives(day: DayInTheLife, charger: Any, event: Event) -> str | None:
    if charger.car is not None:
        return "the charger already has a car: it parks elsewhere"
    amps, phases = event.args
    charger.plug_in(Car(max_current_a=amps, phases=phases))
    return None


def _car_leaves(day: DayInTheLife, charger: Any, event: Event) -> str | None:
    if charger.car is None:
        return "no car there"
    charger.unplug()
    return None


def _unlock(board: LockerBoard, door: int) -> None:
    """The compartment's unlock coil, written as the gateway's ``open_door`` writes it."""
    point = board.point(f"unlock_{door}")
    assert point.address is not None
    board.write(point.table, point.address, [1])


def _deposit(day: DayInTheLife, board: Any, event: Event) -> str | None:
    (door,) = event.args
    _unlock(board, door)
    board.deposit(door)
    return None


def _collect(day: DayInTheLife, board: Any, event: Event) -> str | None:
    (door,) = event.args
    _unlock(board, door)
    board.pickup(door)
    return None


def _shut(day: DayInTheLife, board: Any, event: Event) -> str | None:
    (door,) = event.args
    board.close_door(door)
    return None


def _alarm_button(day: DayInTheLife, elevator: Any, event: Event) -> str | None:
    (pressed,) = event.args
    if pressed:
        elevator.raise_fault(ALARM_BUTTON)
    else:
        elevator.clear_fault(ALARM_BUTTON)
    day.note_fault(event, pressed, lambda: elevator.clear_fault(ALARM_BUTTON))
    return None


def _trapped(day: DayInTheLife, elevator: Any, event: Event) -> str | None:
    (stuck,) = event.args

    def free() -> None:
        elevator.release()
        elevator.alight(elevator.passengers)

    if stuck:
        elevator.trap_passengers(between_floors=True)
    elif elevator.trapped:
        free()
    day.note_fault(event, stuck, free)
    return None


def _silent(day: DayInTheLife, board: Any, event: Event) -> str | None:
    (silent,) = event.args
    faults, unit_id = day.site.faults_of(event.device)
    faults.of(unit_id).dead = silent
    day.note_fault(event, silent, lambda: setattr(faults.of(unit_id), "dead", False))
    return None


def _overheat(day: DayInTheLife, pv: Any, event: Event) -> str | None:
    (hot,) = event.args
    if hot:
        pv.raise_event(OVER_TEMP)
    else:
        pv.clear_event(OVER_TEMP)
    day.note_fault(event, hot, lambda: pv.clear_event(OVER_TEMP))
    return None


_ACTIONS: dict[str, Callable[[DayInTheLife, Any, Event], str | None]] = {
    "car-arrives": _car_arrives,
    "car-leaves": _car_leaves,
    "deposit": _deposit,
    "collect": _collect,
    "shut": _shut,
    "alarm-button": _alarm_button,
    "trapped": _trapped,
    "silent": _silent,
    "overheat": _overheat,
}
