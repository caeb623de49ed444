"""Devices from the market, simulated from their profile files alone.

A meter, charger or inverter whose profile binds the roles the interlocks use
(:mod:`gateway.devices.roles`) is simulated by what those roles mean: the meter measures the
site, the charger lets a car draw what its setpoint, lock and fail-safe allow, the inverter
follows its power limit. Every other readable point holds a plausible nameplate value, and
every write is stored where the device keeps it. The device's own fail-safe comes from the
same file: the ``[watchdog]`` trio (KEBA's failsafe timeout and current) or a setpoint's
``keep_alive_s`` and ``fallback`` (Alfen's max-current valid time and safe current). So a
site's own profile is simulated too, with nothing to write but the file.

The few things a profile cannot say (KEBA reports the failsafe values it was sent at other
addresses than it takes them; Alfen reports the remaining valid time) are the subclasses at
the end, each a few lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.devices import codec
from gateway.devices.profile import DeviceKind, Point, PointType, Profile, Table
from gateway.devices.roles import Role, RoleBinding
from hil_tests.rig.registers import ExceptionCode, RegisterMap, SimModbusError, SimulatedUnit

VOLTS = 230.0
FREQUENCY_HZ = 50.0
#: what a point with this unit reads when nothing drives it
NAMEPLATE = {"V": VOLTS, "Hz": FREQUENCY_HZ, "°C": 31.5, "kWh": 1234.0, "Wh": 56789.0}


class ProfileUnit(SimulatedUnit):
    """Registers from the profile, nameplate values in them, identity registers as declared."""

    def __init__(self, profile: Profile, unit_id: int) -> None:
        regs = RegisterMap.from_points(profile.points, profile.unreadable)
        super().__init__(profile, regs, unit_id)
        self._now: float | None = None
        self.written: list[tuple[str, codec.Value]] = []  # every write, decoded, in order
        for point in profile.points:
            if point.readable:
                self._nameplate(point)
        for name, raw in profile.identity.items():
            point = self.point(name)
            assert point.address is not None
            self.regs.put(point.table, point.address, codec.encode_raw(point, raw))

    def _nameplate(self, p: Point) -> None:
        match p.type:
            case PointType.STRING:
                self.set(p.name, f"SIM-{self.profile.model}"[: 2 * p.width])
            case PointType.ENUM:
                assert p.enum is not None
                self.set_raw(p.name, next(iter(p.enum)))
            case PointType.BITFIELD | PointType.BIT:
                self.set_raw(p.name, 0)
            case _:
                value = NAMEPLATE.get(p.unit or "", 1.0 if p.scale is None else 0.0)
                self.set(p.name, value)

    def set_raw(self, name: str, raw: int) -> None:
        p = self.point(name)
        assert p.address is not None
        self.regs.put(p.table, p.address, codec.encode_raw(p, raw))

    def role(self, role: Role) -> RoleBinding | None:
        return self.profile.role(role)

    def set_label(self, name: str, label: str | int) -> None:
        """An enum point to a label (or a code), a text point to the text."""
        p = self.point(name)
        if p.type is PointType.STRING:
            self.set(name, str(label))
        elif isinstance(label, str) and p.enum:
            self.set_raw(name, next(c for c, v in p.enum.items() if v == label))
        else:
            self.set_raw(name, int(label))

    def is_label(self, name: str, label: str | int | None) -> bool:
        """Whether a point holds a label (enum) or a code (anything else)."""
        p = self.point(name)
        assert p.address is not None
        raw = codec.decode_raw(p, self.regs.get(p.table, p.address, p.width))
        if isinstance(label, str) and p.enum:
            return p.enum.get(int(raw)) == label
        return raw == label

    def on_write(self, table: Table, address: int, values: Sequence[int]) -> None:
        self.regs.put(table, address, values)
        for p in self.profile.points:
            if p.table is table and p.address == address and p.width == len(values):
                self.written.append((p.name, self.get(p.name)))
                self.wrote(p, self._now or 0.0)

    def wrote(self, point: Point, now: float) -> None:
        """A device model's reaction to a write of a whole point."""

    def advance(self, now: float) -> None:
        self._now = now

    def power_w(self) -> float:
        """Power drawn from the site (W, + = consumption), for the site meter."""
        return 0.0


class MarketMeter(ProfileUnit):
    """Measures the site: a base load plus every source (chargers draw, PV feeds in)."""

    def __init__(
        self,
        profile: Profile,
        unit_id: int,
        sources: Sequence[Callable[[], float]] = (),
        *,
        base_load_w: float = 3000.0,
    ) -> None:
        super().__init__(profile, unit_id)
        self.sources = list(sources)
        self.base_load_w = base_load_w
        self.injected_w: float | None = None
        self.w = 0.0

    def inject(self, w: float | None) -> None:
        self.injected_w = w

    def advance(self, now: float) -> None:
        super().advance(now)
        self.w = self.base_load_w + sum(source() for source in self.sources)
        if self.injected_w is not None:
            self.w = self.injected_w
        if power := self.role(Role.METER_GRID_POWER):
            self.set(power.names[0], round(self.w, 1))
        if phases := self.role(Role.METER_PHASE_CURRENTS):
            for name in phases.names:
                self.set(name, round(self.w / 3 / VOLTS, 2))


class MarketCharger(ProfileUnit):
    """A car on a charger: it draws what the setpoint, the lock and the fail-safe allow.

    Fail-safe, from the profile: with a ``[watchdog]``, no write for the timeout it reports
    makes the charger apply its safe value; a setpoint with ``keep_alive_s`` falls back to
    its ``fallback`` point that long after it was last written."""

    def __init__(self, profile: Profile, unit_id: int, *, hw_max_a: float = 32.0) -> None:
        super().__init__(profile, unit_id)
        self.hw_max_a = hw_max_a
        self.car_max_a: float | None = None  # None: no car plugged in
        self.current_a = 0.0
        self.failsafe = False
        self._last_write: float | None = None
        self._setpoint_at: float | None = None
        setpoint = self.role(Role.CHARGER_CURRENT_SETPOINT)
        assert setpoint is not None, f"{profile.model}: no charger_current_setpoint role"
        self.setpoint = setpoint
        if hw := self.role(Role.CHARGER_MAX_CURRENT):
            self.set(hw.names[0], hw_max_a)
        if lock := self.role(Role.CHARGER_LOCK):
            self.set_label(lock.names[0], lock.off if lock.off is not None else 1)
        if rcd := self.role(Role.CHARGER_RESIDUAL_CURRENT):
            self.set_label(rcd.names[0], rcd.ok[0])
        if temperature := self.role(Role.CHARGER_TEMPERATURE):
            self.set(temperature.names[0], 31.5)
        self._publish()

    def plug_in(self, max_current_a: float = 32.0) -> None:
        self.car_max_a = max_current_a

    def unplug(self) -> None:
        self.car_max_a = None

    def wrote(self, point: Point, now: float) -> None:
        self._last_write = now
        if point.name == self.setpoint.names[0]:
            self._setpoint_at = now
            self.failsafe = False

    def timeout_s(self) -> float | None:
        """The watchdog timeout the charger reports (None: none, or switched off)."""
        wd = self.profile.watchdog
        if wd is None:
            return None
        value = self.get(wd.timeout)
        return (
            float(value) * wd.timeout_unit_s if isinstance(value, int | float) and value else None
        )

    def limit_a(self, now: float) -> float:
        """What the charger allows now: 0 when locked, its safe value after a fail-safe."""
        lock = self.role(Role.CHARGER_LOCK)
        if lock is not None and self.is_label(lock.names[0], lock.on):
            return 0.0
        wd = self.profile.watchdog
        timeout = self.timeout_s()
        since = self._last_write if self._last_write is not None else 0.0
        if wd is not None and wd.safe_value and timeout and now - since > timeout:
            self.failsafe = True
            return _amps(self.get(wd.safe_value))
        keep = self.setpoint.keep_alive_s
        expired = keep is not None and (self._setpoint_at is None or now - self._setpoint_at > keep)
        if expired and self.setpoint.fallback is not None:
            self.failsafe = True
            return _amps(self.get(self.setpoint.fallback))
        return _amps(self.get(self.setpoint.names[0]))

    def advance(self, now: float) -> None:
        super().advance(now)
        if self._last_write is None:
            self._last_write = now
        allowed = min(self.limit_a(now), self.hw_max_a, self.car_max_a or 0.0)
        self.current_a = allowed if allowed >= 6.0 else 0.0
        self._publish()

    def _publish(self) -> None:
        if phases := self.role(Role.CHARGER_PHASE_CURRENTS):
            for name in phases.names:
                self.set(name, round(self.current_a, 2))
        if state := self.role(Role.CHARGER_STATE):
            if self.car_max_a is None:
                label: str | int = state.off if state.off is not None else 0
            else:
                label = state.active[-1] if self.current_a > 0 else state.active[0]
            self.set_label(state.names[0], label)

    def power_w(self) -> float:
        return self.current_a * VOLTS * 3


class MarketInverter(ProfileUnit):
    """Feeds in what the sun gives, capped by its power limit; nothing when disconnected."""

    def __init__(self, profile: Profile, unit_id: int, *, rated_w: float = 10000.0) -> None:
        super().__init__(profile, unit_id)
        self.rated_w = rated_w
        self.available_w = rated_w * 0.6
        self.w = 0.0
        if rated := self.role(Role.PV_RATED_POWER):
            self.set(rated.names[0], rated_w)
        if limit := self.role(Role.PV_POWER_LIMIT_PCT):
            self.set(limit.names[0], 100.0)
        if enable := self.role(Role.PV_POWER_LIMIT_ENABLE):
            self.set_label(enable.names[0], enable.off if enable.off is not None else 0)
        if conn := self.role(Role.PV_CONNECT):
            self.set_label(conn.names[0], conn.on if conn.on is not None else 1)

    def advance(self, now: float) -> None:
        super().advance(now)
        cap = self.rated_w
        limit = self.role(Role.PV_POWER_LIMIT_PCT)
        enable = self.role(Role.PV_POWER_LIMIT_ENABLE)
        if limit is not None and (enable is None or self.is_label(enable.names[0], enable.on)):
            pct = self.get(limit.names[0])
            cap = self.rated_w * (float(pct) if isinstance(pct, int | float) else 100.0) / 100
        conn = self.role(Role.PV_CONNECT)
        if conn is not None and self.is_label(conn.names[0], conn.off):
            cap = 0.0
        self.w = round(max(0.0, min(self.available_w, cap)))
        if power := self.role(Role.PV_POWER):
            self.set(power.names[0], self.w)

    def power_w(self) -> float:
        return -self.w


def _amps(value: codec.Value) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


KEBA_MIN_MA, KEBA_MAX_MA = 6000, 63000  # the guide's range for 5004
KEBA_MIRRORS = {
    "failsafe_current": "failsafe_current_setting",
    "failsafe_timeout": "failsafe_timeout_setting",
}


class KebaP30(MarketCharger):
    """KEBA reports the failsafe values it was sent at 1600/1602, the allowed current at 1100,
    and refuses a charging current outside 6000..63000 mA (exception 03)."""

    def __init__(self, profile: Profile, unit_id: int) -> None:
        super().__init__(profile, unit_id)
        # as commissioned (a one-time write of 5016/5018): stop charging 60 s after the last
        # write; the gateway keeps it from expiring by rewriting the timeout
        self.set("failsafe_timeout_setting", 60)
        self.set("failsafe_current_setting", 0.0)
        self.set("set_current", 0.0)

    def on_write(self, table: Table, address: int, values: Sequence[int]) -> None:
        setpoint = self.point("set_current")
        if (table, address) == (setpoint.table, setpoint.address) and not (
            KEBA_MIN_MA <= values[0] <= KEBA_MAX_MA
        ):
            raise SimModbusError(
                ExceptionCode.ILLEGAL_DATA_VALUE, f"5004: {values[0]} mA outside 6000..63000"
            )
        super().on_write(table, address, values)

    def wrote(self, point: Point, now: float) -> None:
        super().wrote(point, now)
        if mirror := KEBA_MIRRORS.get(point.name):
            self.set(mirror, self.get(point.name))

    def _publish(self) -> None:
        super()._publish()
        self.set("max_charging_current", round(self.limit_a(self._now or 0.0), 3))
        self.set("active_power", round(self.power_w(), 3))


class AlfenSocket(MarketCharger):
    """Alfen reports the current it applies and how long the setpoint still holds."""

    def __init__(self, profile: Profile, unit_id: int) -> None:
        super().__init__(profile, unit_id)
        self.set("safe_current", 6.0)
        self.set("max_current", 0.0)
        self.set_label("availability", "operative")

    def _publish(self) -> None:
        super()._publish()
        now = self._now or 0.0
        self.set("applied_max_current", self.limit_a(now))
        keep = self.setpoint.keep_alive_s or 0.0
        since = self._setpoint_at
        self.set(
            "max_current_valid_time", 0 if since is None else max(0, round(keep - (now - since)))
        )
        self.set_label("setpoint_accounted_for", "no" if self.failsafe else "yes")
        self.set("real_power_sum", round(self.power_w(), 1))


#: Models whose simulation needs more than their profile says.
SPECIAL: dict[str, type[MarketCharger]] = {"KEBA-P30": KebaP30, "ALFEN-NG9XX": AlfenSocket}


def simulate(profile: Profile, unit_id: int) -> ProfileUnit:
    """A simulated device for any meter, charger or inverter profile with roles."""
    if profile.model in SPECIAL:
        return SPECIAL[profile.model](profile, unit_id)
    match profile.kind:
        case DeviceKind.METER:
            return MarketMeter(profile, unit_id)
        case DeviceKind.CHARGER:
            return MarketCharger(profile, unit_id)
        case DeviceKind.PV_INVERTER:
            return MarketInverter(profile, unit_id)
        case _:
            return ProfileUnit(profile, unit_id)
