"""The standard interlocks that compute setpoints each period: I2, I3 and I8.

They read the process image, place *limit* demands on the actuator (so a fire stop or a
lockout at a higher priority still caps them) and raise alarms; the arithmetic is in
:mod:`gateway.control.standard.allocation`, pure and property-tested.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING

from gateway.control.actuator import PRIORITY_CONTROL, Actuator
from gateway.control.alarms import Severity
from gateway.control.engine import Controller, InterlockEngine
from gateway.control.standard import allocation
from gateway.control.standard.interlocks import ExportLimit, FeederLimit, Safety, Scope, of_kind
from gateway.devices.profile import DeviceKind, Profile
from gateway.devices.roles import Role, RoleBinding
from gateway.image import ProcessImage, Quality

if TYPE_CHECKING:
    from gateway.bus.poller import DevicePoller

log = logging.getLogger(__name__)

OTHER_LOAD_HOLD_S = 5.0


def code(profile: Profile, point: str, value: str | int | None) -> int | str | None:
    """A role's label as the code the device stores (``"ENABLED"`` → 1); numbers pass."""
    enum = profile.point(point).enum
    if isinstance(value, str) and enum:
        return next(c for c, label in enum.items() if label == value)
    return value


def _need(profile: Profile, role: Role) -> RoleBinding:
    """A role the site config has already been checked to bind (role_problems)."""
    binding = profile.role(role)
    assert binding is not None, f"{profile.model}: {role} (checked by role_problems)"
    return binding


class _Periodic:
    """Runs ``step`` every ``period_s`` of control-loop time."""

    name = "periodic"

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._next = 0.0

    def tick(self, now: float, dt: float) -> None:
        if now < self._next:
            return
        self._next = now + self.period_s
        self.step(now)

    def step(self, now: float) -> None:
        raise NotImplementedError


class FeederAllocation(_Periodic):
    """I3 + I8: every active charger gets a fair share of the feeder, >= 6 A or paused; an
    offline charger counts at its maximum and a stale meter as an overload."""

    name = "feeder-limit"

    def __init__(
        self,
        cfg: FeederLimit,
        meter: str,
        chargers: list[str],
        image: ProcessImage,
        actuator: Actuator,
        profiles: dict[str, Profile],
    ) -> None:
        super().__init__(cfg.period_s)
        self.cfg, self.meter, self.chargers = cfg, meter, chargers
        self.image, self.actuator = image, actuator
        self.meter_phases = _need(profiles[meter], Role.METER_PHASE_CURRENTS).names
        self.setpoint = {
            c: _need(profiles[c], Role.CHARGER_CURRENT_SETPOINT).names[0] for c in chargers
        }
        self.phases = {c: _need(profiles[c], Role.CHARGER_PHASE_CURRENTS).names for c in chargers}
        self.state: dict[str, tuple[str, set[int | str | None]]] = {}
        for c in chargers:
            state = _need(profiles[c], Role.CHARGER_STATE)
            active = {code(profiles[c], state.names[0], label) for label in state.active}
            self.state[c] = (state.names[0], active)
        self.hw_max = {c: profiles[c].role_point(Role.CHARGER_MAX_CURRENT) for c in chargers}
        #: chargers whose setpoint cannot take 0 A: paused with their lock (point, on code)
        self.pause_lock: dict[str, tuple[str, int | str | None]] = {}
        for c in chargers:
            lock = profiles[c].role(Role.CHARGER_LOCK)
            if profiles[c].roles[Role.CHARGER_CURRENT_SETPOINT].pause_by_lock and lock:
                point = lock.names[0]
                self.pause_lock[c] = (point, code(profiles[c], point, lock.on))
                actuator.target(c, point, release=code(profiles[c], point, lock.off))
        self.setpoints: dict[str, float] = {}
        self._other: deque[tuple[float, float]] = deque()

    def step(self, now: float) -> None:
        loads = [self._load(c) for c in self.chargers]
        meter_a = self._max_phase(self.meter, self.meter_phases)
        feeder = allocation.Feeder(self.cfg.limit_a, self.cfg.min_a)
        self.setpoints = allocation.allocate(feeder, loads, self._held(now, meter_a, loads))
        for name, amps in self.setpoints.items():
            if name in self.pause_lock:
                lock, on = self.pause_lock[name]
                if amps <= 0:  # a pause: the lock, the setpoint left as it is
                    self.actuator.demand(self.name, name, lock, on, PRIORITY_CONTROL, limit=False)
                    self.actuator.withdraw(self.name, name, self.setpoint[name])
                    continue
                self.actuator.withdraw(self.name, name, lock)
            self.actuator.demand(
                self.name, name, self.setpoint[name], amps, PRIORITY_CONTROL, limit=True
            )

    def _held(
        self, now: float, meter_a: float | None, loads: list[allocation.ChargerLoad]
    ) -> float | None:
        """The non-charger load, held at its peak over ``OTHER_LOAD_HOLD_S``: the meter and
        the chargers are read at different moments, and while a car ramps the difference
        looks like spare capacity that is not there."""
        other = allocation.other_load(meter_a, loads)
        if other is None:
            self._other.clear()
            return None
        self._other.append((now, other))
        while self._other[0][0] < now - OTHER_LOAD_HOLD_S:
            self._other.popleft()
        return max(v for _, v in self._other)

    def _load(self, charger: str) -> allocation.ChargerLoad:
        state, active = self.state[charger]
        cp = self.image.find(charger, state)
        online = cp is not None and cp.quality is Quality.GOOD
        hw_point = self.hw_max[charger]
        hw_max = None if hw_point is None else self.image.reading(charger, hw_point)
        max_a = self.cfg.charger_max_a
        if isinstance(hw_max, int | float) and hw_max > 0:
            max_a = min(max_a, float(hw_max))
        return allocation.ChargerLoad(
            name=charger,
            online=online,
            active=online and cp is not None and cp.value in active,
            drawn_a=self._max_phase(charger, self.phases[charger]),
            max_a=max_a,
        )

    def _max_phase(self, device: str, points: tuple[str, ...]) -> float | None:
        values = [self.image.reading(device, p) for p in points]
        if any(not isinstance(v, int | float) for v in values):
            return None
        return max(float(v) for v in values if isinstance(v, int | float))


class ExportCurtailment(_Periodic):
    """I2: PV limited so the site exports at most the limit; 1–100 %, <= 20 % per step."""

    name = "export-limit"

    def __init__(
        self,
        cfg: ExportLimit,
        meter: str,
        pv: str,
        image: ProcessImage,
        actuator: Actuator,
        profiles: dict[str, Profile],
    ) -> None:
        super().__init__(cfg.period_s)
        self.cfg, self.meter, self.pv = cfg, meter, pv
        self.image, self.actuator = image, actuator
        self.limit = allocation.ExportPolicy(cfg.limit_w, cfg.max_step)
        self.pct: float | None = None
        inverter = profiles[pv]
        self.meter_w = _need(profiles[meter], Role.METER_GRID_POWER).names[0]
        self.pv_w = _need(inverter, Role.PV_POWER).names[0]
        self.rated = _need(inverter, Role.PV_RATED_POWER).names[0]
        self.limit_point = inverter.point(_need(inverter, Role.PV_POWER_LIMIT_PCT).names[0])
        enable = inverter.role(Role.PV_POWER_LIMIT_ENABLE)
        self.enable = (
            None
            if enable is None
            else (enable.names[0], code(inverter, enable.names[0], enable.on))
        )
        revert = inverter.role_point(Role.PV_POWER_LIMIT_REVERT)
        # The inverter drops the limit RvrtTms after the last write: refreshed at a third of
        # it while the gateway runs, it reverts on its own when the gateway is gone.
        actuator.target(pv, self.limit_point.name, refresh_s=cfg.revert_s / 3)
        if revert is not None:
            actuator.demand(self.name, pv, revert, cfg.revert_s, PRIORITY_CONTROL, limit=False)

    def step(self, now: float) -> None:
        rated = self.image.reading(self.pv, self.rated)
        if not isinstance(rated, int | float) or rated <= 0:
            return  # not discovered yet: nothing sensible to command
        if self.pct is None:
            reported = self.image.reading(self.pv, self.limit_point.name)
            self.pct = float(reported) if isinstance(reported, int | float) else 100.0
        meter_w = self.image.reading(self.meter, self.meter_w)
        pv_w = self.image.reading(self.pv, self.pv_w)
        pct = allocation.curtail(
            self.limit,
            float(meter_w) if isinstance(meter_w, int | float) else None,
            float(pv_w) if isinstance(pv_w, int | float) else None,
            float(rated),
            self.pct,
        )
        self.pct = self._resolution(pct, towards=self.pct)
        self.actuator.demand(
            self.name, self.pv, self.limit_point.name, self.pct, PRIORITY_CONTROL, limit=True
        )
        if self.enable is not None:
            point, on = self.enable
            self.actuator.demand(self.name, self.pv, point, on, PRIORITY_CONTROL, limit=False)

    def _resolution(self, pct: float, towards: float) -> float:
        """``pct`` in the inverter's own steps (10^WMaxLimPct_SF %), rounded towards the
        last limit so that rounding never makes a step bigger than the step limit allows."""
        step = self.limit_point.scale or 0.1
        if self.limit_point.scale_factor is not None:
            sf = self.image.reading(self.pv, self.limit_point.scale_factor)
            step = 10.0**sf if isinstance(sf, int) else 0.1
        rounding = math.ceil if pct < towards else math.floor
        return max(self.limit.min_pct, round(rounding(pct / step - 1e-9) * step, 6))


class CommLoss:
    """I8: a device that stops answering is reported offline once, and recovered once.

    Reads the process image's OFFLINE mark (set by the device's poller when its breaker
    opens, cleared by its next answer), not the bus. One cause, one alarm: the device's alarm
    lists the interlocks that hold their fail-safe actions only because of it (their own
    "input not available" alarms are suppressed under it), and when every watched device of
    a bus (two or more) is silent, one bus alarm stands and the devices' alarms are
    suppressed under it. Runs before the interlocks each cycle (``before_rules``), so the
    alarms they suppress under exist when they look."""

    name = "comm-loss"
    before_rules = True

    def __init__(self, devices: dict[str, tuple[str, int]], engine: InterlockEngine) -> None:
        """``devices``: name → (bus, unit id) of every watched device."""
        self.devices, self.engine = devices, engine
        self.buses: dict[str, set[str]] = {}
        for name, (bus, _) in devices.items():
            self.buses.setdefault(bus, set()).add(name)

    def tick(self, now: float, dt: float) -> None:
        alarms, image = self.engine.alarms, self.engine.image
        offline = {name for name in self.devices if image.offline(name)}
        down = set()
        for bus, members in self.buses.items():
            key = f"bus-down/{bus}"
            if len(members) > 1 and members <= offline:
                down.add(bus)
                names = ", ".join(sorted(members))
                alarms.raise_(
                    key, Severity.MAJOR, self.name, f"bus {bus}: no device answers ({names})"
                )
            else:
                alarms.clear(key)
        for name, (bus, unit) in self.devices.items():
            key = f"comm-loss/{name}"
            if name not in offline:
                alarms.clear(key)
                continue
            message = f"{name} not answering (unit {unit} on {bus})"
            holding = self.engine.holding_for(name)
            if holding:
                message += f"; fail-safe actions held by {', '.join(holding)}"
            parent = f"bus-down/{bus}" if bus in down else None
            if key in alarms.active:
                alarms.update(key, message=message, suppressed_by=parent)
            else:
                alarms.raise_(
                    key, Severity.MINOR, self.name, message, device=name, suppressed_by=parent
                )


def build(
    safety: Safety, engine: InterlockEngine, pollers: dict[str, DevicePoller]
) -> list[Controller]:
    """The controllers of the standard interlocks the ``[safety]`` table enables."""
    profiles: dict[str, Profile] = {name: p.profile for name, p in pollers.items()}
    meters = of_kind(profiles, DeviceKind.METER)
    for name, profile in profiles.items():
        for binding in profile.roles.values():
            if binding.keep_alive_s is not None:
                # the device forgets the value: whoever demands it, it is rewritten in time
                for point in binding.names:
                    engine.actuator.target(name, point, refresh_s=binding.keep_alive_s / 3)
    out: list[Controller] = []
    if safety.feeder_limit is not None:
        meter = safety.feeder_limit.meter or meters[0]
        chargers = of_kind(profiles, DeviceKind.CHARGER, safety.feeder_limit)
        out.append(
            FeederAllocation(
                safety.feeder_limit, meter, chargers, engine.image, engine.actuator, profiles
            )
        )
    if safety.export_limit is not None:
        meter = safety.export_limit.meter or meters[0]
        for pv in of_kind(profiles, DeviceKind.PV_INVERTER, safety.export_limit):
            out.append(
                ExportCurtailment(
                    safety.export_limit, meter, pv, engine.image, engine.actuator, profiles
                )
            )
    if safety.comm_loss is not None:
        scope: Scope = safety.comm_loss
        watched = {
            n: (p.device.bus, p.unit_id)
            for n, p in pollers.items()
            if scope.devices is None or n in scope.devices
        }
        out.append(CommLoss(watched, engine))
    return out
