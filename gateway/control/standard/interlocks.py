"""The standard interlocks I1–I10 (docs/interlocks.md), built from a site's ``[safety]`` table.

A site enables an interlock by giving its table (``[safety.fire_alarm]``) and parameterises
it there; each applies to every device of its kind on the site unless ``devices`` names them.
They never name a device's points: they ask each profile for the point that plays a role
(:mod:`gateway.devices.roles`), so a site mixing charger models gets the same protection; a
device whose profile lacks a role an enabled interlock needs is a config error naming both
(:func:`role_problems`), and what a device cannot do for an interlock that it could do
without (no remote lock, no watchdog) is said by :func:`capability_notes`.
Those expressible as rules become :class:`~gateway.control.rules.Interlock` data run by the same
engine as a site's own interlocks (fire, over-temperature, lockout, trapped passenger,
elevator safety faults, PV faults); those that compute setpoints are controllers (export
curtailment, feeder allocation, communication loss). I9 (restart) is the actuator's rule:
read back before the first write, never replay.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator

from gateway.control.actuator import PRIORITY_LIFE_SAFETY, PRIORITY_PROTECTION
from gateway.control.alarms import Severity
from gateway.control.rules import Interlock, PointRef
from gateway.devices.profile import DeviceKind, Profile
from gateway.devices.roles import SPECS, Role, RoleBinding
from gateway.validation import Strict


class Scope(Strict):
    #: The devices it applies to; default every device of its kind on the site.
    devices: list[str] | None = None
    #: The severity of its "input not available" alarm (its condition cannot be read: it
    #: still acts, but does not claim its own fault).
    unknown_severity: Severity = Severity.MAJOR


class FireAlarm(Scope):
    """I1. Trips on SIO-1 DI 0 open and/or a fire-panel input."""

    panel_input: PointRef | None = None
    panel_alarm_value: int | bool = 0
    recall_timeout_s: float = Field(default=90.0, gt=0, le=600)


class ExportLimit(Scope):
    """I2. Curtails PV so the site exports at most ``limit_w``."""

    meter: str | None = None
    limit_w: float = Field(ge=0)
    max_step: float = Field(default=0.20, gt=0, lt=1)
    period_s: float = Field(default=1.0, ge=0.1, le=60)
    #: WMaxLimPct_RvrtTms: the inverter drops the limit this long after the gateway is gone.
    revert_s: int = Field(default=60, ge=3, le=3600)


class FeederLimit(Scope):
    """I3. Shares the feeder's current among the chargers."""

    meter: str | None = None
    limit_a: float = Field(gt=0)
    min_a: float = Field(default=6.0, gt=0)
    charger_max_a: float = Field(default=32.0, gt=0)
    period_s: float = Field(default=1.0, ge=0.1, le=60)


class ChargerTemperature(Scope):
    """I4. Derate at ``warn_c``, stop at ``trip_c``, resume below ``resume_c``."""

    warn_c: float = 60.0
    trip_c: float = 80.0
    resume_c: float = 55.0
    derate_a: float = Field(default=8.0, ge=6)

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        """``trip_c 50 must be above warn_c 60``: the thresholds in the order they act."""
        if self.trip_c <= self.warn_c:
            raise ValueError(f"trip_c {self.trip_c:g} must be above warn_c {self.warn_c:g}")
        if self.resume_c >= self.warn_c:
            raise ValueError(f"resume_c {self.resume_c:g} must be below warn_c {self.warn_c:g}")
        return self


class TrappedPassenger(Scope):
    """I6. Stopped, doors closed and occupied for ``occupied_s``, confirmed ``confirm_s``."""

    occupied_s: float = Field(default=40.0, gt=0)
    confirm_s: float = Field(default=5.0, ge=0)


class Safety(Strict):
    fire_alarm: FireAlarm | None = None
    export_limit: ExportLimit | None = None
    feeder_limit: FeederLimit | None = None
    charger_temperature: ChargerTemperature | None = None
    charger_lockout: Scope | None = None  # I5
    trapped_passenger: TrappedPassenger | None = None
    elevator_safety: Scope | None = None  # I7
    comm_loss: Scope | None = None  # I8
    pv_faults: Scope | None = None  # I10


#: I7: faults after which an elevator must not be returned to service remotely.
ELEVATOR_SAFETY_BITS = (
    "door_open_while_running",
    "unintended_movement",
    "overspeed",
    "top_overtravel",
    "bottom_overtravel",
    "safety_circuit_open",
)

#: The roles each interlock needs of each kind of device it acts on (an error when missing)
#: and those it uses when a device has them (a note when missing).
NEEDS: dict[str, dict[DeviceKind, tuple[Role, ...]]] = {
    "fire_alarm": {
        DeviceKind.CHARGER: (Role.CHARGER_CURRENT_SETPOINT,),
        DeviceKind.PV_INVERTER: (Role.PV_POWER_LIMIT_PCT,),
    },
    "export_limit": {
        DeviceKind.PV_INVERTER: (Role.PV_POWER, Role.PV_RATED_POWER, Role.PV_POWER_LIMIT_PCT),
        DeviceKind.METER: (Role.METER_GRID_POWER,),
    },
    "feeder_limit": {
        DeviceKind.CHARGER: (
            Role.CHARGER_CURRENT_SETPOINT,
            Role.CHARGER_STATE,
            Role.CHARGER_PHASE_CURRENTS,
        ),
        DeviceKind.METER: (Role.METER_PHASE_CURRENTS,),
    },
    "charger_temperature": {
        DeviceKind.CHARGER: (Role.CHARGER_TEMPERATURE, Role.CHARGER_CURRENT_SETPOINT),
    },
    "charger_lockout": {
        DeviceKind.CHARGER: (Role.CHARGER_RESIDUAL_CURRENT, Role.CHARGER_CURRENT_SETPOINT),
    },
    "pv_faults": {DeviceKind.PV_INVERTER: (Role.PV_FAULTS,)},
}
USES: dict[str, dict[DeviceKind, tuple[Role, ...]]] = {
    "fire_alarm": {
        DeviceKind.CHARGER: (Role.CHARGER_LOCK,),
        DeviceKind.PV_INVERTER: (Role.PV_CONNECT,),
    },
    "export_limit": {DeviceKind.PV_INVERTER: (Role.PV_POWER_LIMIT_REVERT,)},
    "charger_lockout": {
        DeviceKind.CHARGER: (
            Role.CHARGER_LOCK,
            Role.CHARGER_CONTACTOR,
            Role.CHARGER_LOCKOUT_LATCHED,
        )
    },
}
#: What a missing optional role means for the site, in words a technician acts on.
WITHOUT: dict[Role, str] = {
    Role.CHARGER_LOCK: "has no remote lock: a fire alarm or lockout holds it at 0 A but "
    "cannot lock it",
    Role.PV_CONNECT: "cannot be disconnected remotely: a fire alarm caps it at 0 % (the SIO-1 "
    "rapid shutdown is the hard-wired path)",
    Role.PV_POWER_LIMIT_REVERT: "has no revert timer for its power limit: if the gateway "
    "stops, the last limit stays until someone changes it",
    Role.CHARGER_CONTACTOR: "does not report a welded contactor: the lockout trips on "
    "residual current only",
    Role.CHARGER_LOCKOUT_LATCHED: "has no lockout latch of its own: the lockout may be reset "
    "as soon as its fault is gone",
}
#: The interlocks whose devices fall back to a safe state on their own only with a watchdog.
WATCHDOG_FOR = ("fire_alarm", "feeder_limit", "export_limit")


def of_kind(
    profiles: dict[str, Profile], kind: DeviceKind, scope: Scope | None = None
) -> list[str]:
    names = [d for d, p in profiles.items() if p.kind is kind]
    if scope is not None and scope.devices is not None:
        return [d for d in names if d in scope.devices]
    return names


def build(safety: Safety, profiles: dict[str, Profile]) -> list[Interlock]:
    """The rule-based standard interlocks a site enabled, as engine data."""
    specs: list[dict[str, Any]] = []
    if safety.fire_alarm is not None:
        specs += _fire(safety.fire_alarm, profiles)
    if safety.charger_temperature is not None:
        specs += _temperature(safety.charger_temperature, profiles)
    if safety.charger_lockout is not None:
        specs += _lockout(safety.charger_lockout, profiles)
    if safety.trapped_passenger is not None:
        specs += _trapped(safety.trapped_passenger, profiles)
    if safety.elevator_safety is not None:
        specs += _elevator_safety(safety.elevator_safety, profiles)
    if safety.pv_faults is not None:
        specs += _pv_faults(safety.pv_faults, profiles)
    return [Interlock.model_validate(s) for s in specs]


def scope_problems(safety: Safety, profiles: dict[str, Profile]) -> list[str]:
    """Devices named in a scope that are not on the site or not of the right kind."""
    kinds = {
        "fire_alarm": None,
        "export_limit": DeviceKind.PV_INVERTER,
        "feeder_limit": DeviceKind.CHARGER,
        "charger_temperature": DeviceKind.CHARGER,
        "charger_lockout": DeviceKind.CHARGER,
        "trapped_passenger": DeviceKind.ELEVATOR,
        "elevator_safety": DeviceKind.ELEVATOR,
        "comm_loss": None,
        "pv_faults": DeviceKind.PV_INVERTER,
    }
    problems = []
    for key, kind in kinds.items():
        scope = getattr(safety, key)
        if scope is None or scope.devices is None:
            continue
        for i, name in enumerate(scope.devices):
            profile = profiles.get(name)
            if profile is None:
                problems.append(f"safety.{key}.devices[{i}]: no device {name!r} on this site")
            elif kind is not None and profile.kind is not kind:
                problems.append(
                    f"safety.{key}.devices[{i}]: {name!r} is a {profile.kind.value}, "
                    f"expected a {kind.value}"
                )
    for key in ("export_limit", "feeder_limit"):
        cfg = getattr(safety, key)
        if cfg is not None and cfg.meter is None and not of_kind(profiles, DeviceKind.METER):
            problems.append(f"safety.{key}.meter: this site has no meter device")
    if not problems:
        problems += role_problems(safety, profiles)
    return problems


def _enabled(safety: Safety) -> list[tuple[str, Scope]]:
    return [(key, cfg) for key in Safety.model_fields if (cfg := getattr(safety, key)) is not None]


def _acted_on(key: str, cfg: Scope, kind: DeviceKind, profiles: dict[str, Profile]) -> list[str]:
    """The devices of a kind an enabled interlock acts on (meters: the one it reads)."""
    if kind is DeviceKind.METER:
        meter = getattr(cfg, "meter", None)
        meters = of_kind(profiles, DeviceKind.METER)
        return [meter] if meter in profiles else meters[:1]
    return of_kind(profiles, kind, cfg)


def role_problems(safety: Safety, profiles: dict[str, Profile]) -> list[str]:
    """Each device an enabled interlock acts on whose profile lacks a role it needs."""
    problems = []
    for key, cfg in _enabled(safety):
        for kind, roles in NEEDS.get(key, {}).items():
            for name in _acted_on(key, cfg, kind, profiles):
                profile = profiles[name]
                for role in roles:
                    if profile.role(role) is None:
                        problems.append(
                            f"safety.{key}: {name} (profile {profile.model}) has no role "
                            f"{role.value!r} ({SPECS[role].what}), which {key} needs; bind "
                            f"it in the profile's [roles] or leave {name} out of "
                            f"safety.{key}.devices"
                        )
    return problems


def capability_notes(safety: Safety, profiles: dict[str, Profile]) -> list[str]:
    """What a device cannot do for an enabled interlock that protects it anyway."""
    notes: dict[str, None] = {}
    for key, cfg in _enabled(safety):
        for kind, roles in USES.get(key, {}).items():
            for name in _acted_on(key, cfg, kind, profiles):
                profile = profiles[name]
                for role in roles:
                    if profile.role(role) is None:
                        notes[f"{name} ({profile.model}) {WITHOUT[role]} [{key}]"] = None
        if key in WATCHDOG_FOR:
            for kind in (DeviceKind.CHARGER, DeviceKind.PV_INVERTER):
                for name in _acted_on(key, cfg, kind, profiles):
                    profile = profiles[name]
                    kept = any(b.keep_alive_s for b in profile.roles.values())
                    revert = profile.role(Role.PV_POWER_LIMIT_REVERT)
                    if profile.watchdog is None and revert is None and not kept:
                        notes[
                            f"{name} ({profile.model}) has no communication watchdog: if the "
                            f"gateway stops, it keeps its last setpoint [{key}]"
                        ] = None
    return list(notes)


def _role(profiles: dict[str, Profile], device: str, role: Role) -> RoleBinding | None:
    return profiles[device].role(role)


def _ref(device: str, binding: RoleBinding) -> str:
    return f"{device}.{binding.names[0]}"


def _stop(profile: Profile, charger: str, priority: int) -> dict[str, Any]:
    """The write that stops a charger: 0 A, or its lock where its setpoint cannot take 0."""
    setpoint = profile.roles[Role.CHARGER_CURRENT_SETPOINT]
    lock = profile.role(Role.CHARGER_LOCK)
    if setpoint.pause_by_lock and lock is not None:
        return _write(_ref(charger, lock), lock.on, priority, release=lock.off)
    return _write(_ref(charger, setpoint), 0.0, priority, limit=True)


def _able(profiles: dict[str, Profile], devices: list[str], *roles: Role) -> list[str]:
    """The devices whose profiles play every role (the others are config errors already)."""
    return [d for d in devices if all(profiles[d].role(r) is not None for r in roles)]


# -- the rules ------------------------------------------------------------------------------


def _write(
    ref: str, value: object, priority: int, *, release: object = None, limit: bool = False
) -> dict[str, Any]:
    action: dict[str, Any] = {"write": ref, "value": value, "priority": priority}
    if release is not None:
        action["release"] = release
    if limit:
        action["limit"] = True
    return action


def _out_of_service(elevator: str) -> dict[str, Any]:
    return _write(f"{elevator}.req_out_of_service", 1, PRIORITY_LIFE_SAFETY, release=0)


def _fire_trigger(cfg: FireAlarm, profiles: dict[str, Profile]) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [
        {"point": f"{sio}.fire_alarm_loop", "eq": False}
        for sio in of_kind(profiles, DeviceKind.SAFETY_IO)
    ]
    if cfg.panel_input is not None:
        inputs.append({"point": cfg.panel_input, "eq": cfg.panel_alarm_value})
    return {"any": inputs}


def _says(bit: str) -> str:
    """A fault bit's name as a person says it: ``door_open_while_running`` → ``door open
    while running``, ``GROUND_FAULT`` → ``ground fault``."""
    return bit.replace("_", " ").lower()


def _fire_precaution(cfg: FireAlarm, profiles: dict[str, Profile]) -> str:
    parts = []
    chargers = of_kind(profiles, DeviceKind.CHARGER, cfg)
    if chargers:
        locked = _able(profiles, chargers, Role.CHARGER_LOCK) == chargers
        parts.append("chargers held at 0 A and locked" if locked else "chargers held at 0 A")
    pvs = of_kind(profiles, DeviceKind.PV_INVERTER, cfg)
    if pvs:
        cut = _able(profiles, pvs, Role.PV_CONNECT) == pvs
        parts.append("PV disconnected" if cut else "PV capped at 0 %")
    if of_kind(profiles, DeviceKind.SAFETY_IO):
        parts.append("charger feeder off, PV rapid shutdown, sounder on")
    if of_kind(profiles, DeviceKind.ELEVATOR, cfg):
        parts.append("elevators recalled")
    if of_kind(profiles, DeviceKind.LOCKER, cfg):
        parts.append("locker deposits refused")
    return ", ".join(parts)


def _fire(cfg: FireAlarm, profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    trigger = _fire_trigger(cfg, profiles)
    if not trigger["any"]:
        return []
    p = PRIORITY_LIFE_SAFETY
    actions: list[dict[str, Any]] = [{"alarm": "critical", "message": "FIRE ALARM"}]
    for c in of_kind(profiles, DeviceKind.CHARGER, cfg):
        setpoint = _role(profiles, c, Role.CHARGER_CURRENT_SETPOINT)
        if setpoint is not None and not setpoint.pause_by_lock:  # else the lock stops it
            actions.append(_write(_ref(c, setpoint), 0.0, p, limit=True))
        if lock := _role(profiles, c, Role.CHARGER_LOCK):
            actions.append(_write(_ref(c, lock), lock.on, p, release=lock.off))
    for pv in of_kind(profiles, DeviceKind.PV_INVERTER, cfg):
        if conn := _role(profiles, pv, Role.PV_CONNECT):
            actions.append(_write(_ref(pv, conn), conn.off, p, release=conn.on))
        if limit := _role(profiles, pv, Role.PV_POWER_LIMIT_PCT):
            actions.append(_write(_ref(pv, limit), 0, p, limit=True))
    for sio in of_kind(profiles, DeviceKind.SAFETY_IO):
        # feeder off, rapid shutdown, fire-recall request and sounder: the hard-wired path
        actions += [
            _write(f"{sio}.{relay}", value, p)
            for relay, value in (
                ("charger_feeder_enable", 0),
                ("pv_rsd_keepalive", 0),
                ("elv_fire_recall_req", 1),
                ("alarm_sounder", 1),
            )
        ]
    elevators = of_kind(profiles, DeviceKind.ELEVATOR, cfg)
    actions += [_write(f"{e}.req_fire_recall", 1, p, release=0) for e in elevators]
    for lk in of_kind(profiles, DeviceKind.LOCKER, cfg):
        actions.append({"inhibit": f"{lk}.deposits"})
    rules: list[dict[str, Any]] = [
        {
            "name": "fire-alarm",
            "when": trigger,
            "actions": actions,
            "unknown_severity": cfg.unknown_severity,
            "precaution": _fire_precaution(cfg, profiles),
        }
    ]
    for e in elevators:
        rules.append(
            {
                "name": f"fire-recall-{e}",
                "when": {"all": [trigger, {"point": f"{e}.fire_recall_feedback", "ne": "parked"}]},
                "on_delay_s": cfg.recall_timeout_s,
                "actions": [{"alarm": "critical", "message": f"{e} not parked after fire recall"}],
                "unknown_severity": cfg.unknown_severity,
            }
        )
    return rules


def _temperature(cfg: ChargerTemperature, profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    rules = []
    roles = (Role.CHARGER_TEMPERATURE, Role.CHARGER_CURRENT_SETPOINT)
    for c in _able(profiles, of_kind(profiles, DeviceKind.CHARGER, cfg), *roles):
        point = _ref(c, profiles[c].roles[Role.CHARGER_TEMPERATURE])
        setpoint = _ref(c, profiles[c].roles[Role.CHARGER_CURRENT_SETPOINT])
        stop = _stop(profiles[c], c, PRIORITY_PROTECTION)
        rules += [
            {
                "name": f"overtemp-derate-{c}",
                "when": {"point": point, "gt": cfg.warn_c, "hysteresis": cfg.warn_c - cfg.resume_c},
                "actions": [
                    _write(setpoint, cfg.derate_a, PRIORITY_PROTECTION, limit=True),
                    {"alarm": "minor", "message": f"{c} hot: derated to {cfg.derate_a:g} A"},
                ],
                "unknown_severity": cfg.unknown_severity,
                "precaution": f"{c} derated to {cfg.derate_a:g} A",
            },
            {
                "name": f"overtemp-stop-{c}",
                "when": {"point": point, "gt": cfg.trip_c, "hysteresis": cfg.trip_c - cfg.resume_c},
                "actions": [
                    stop,
                    {"alarm": "major", "message": f"{c} over temperature: stopped"},
                ],
                "unknown_severity": cfg.unknown_severity,
                "precaution": f"{c} held at 0 A",
            },
        ]
    return rules


def _lockout(cfg: Scope, profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    rules = []
    roles = (Role.CHARGER_RESIDUAL_CURRENT, Role.CHARGER_CURRENT_SETPOINT)
    for c in _able(profiles, of_kind(profiles, DeviceKind.CHARGER, cfg), *roles):
        profile = profiles[c]
        rcd = profile.roles[Role.CHARGER_RESIDUAL_CURRENT]
        faults: list[dict[str, Any]] = [
            {"point": _ref(c, rcd), "ne": ok, "says": "residual current"} for ok in rcd.ok
        ]
        when: dict[str, Any] = faults[0] if len(faults) == 1 else {"all": faults}
        if contactor := profile.role(Role.CHARGER_CONTACTOR):
            welded = {"point": _ref(c, contactor), "eq": contactor.on, "says": "welded contactor"}
            when = {"any": [when, welded]}
        actions = [_stop(profile, c, PRIORITY_PROTECTION)]
        lock = profile.role(Role.CHARGER_LOCK)
        if lock is not None and not profile.roles[Role.CHARGER_CURRENT_SETPOINT].pause_by_lock:
            actions.append(_write(_ref(c, lock), lock.on, PRIORITY_PROTECTION, release=lock.off))
        rule: dict[str, Any] = {
            "name": f"lockout-{c}",
            "when": when,
            "latch": True,
            "actions": [*actions, {"alarm": "major", "message": f"{c} locked out"}],
            "unknown_severity": cfg.unknown_severity,
            "precaution": f"{c} held at 0 A and locked" if lock else f"{c} held at 0 A",
        }
        if latched := profile.role(Role.CHARGER_LOCKOUT_LATCHED):
            # the charger clears its own latch only with the fault gone and the car out
            rule["reset_when"] = {"point": _ref(c, latched), "eq": 0}
            rule["reset_hint"] = f"reset {c}'s own lockout first (fault gone, car unplugged)"
        rules.append(rule)
    return rules


def _trapped(cfg: TrappedPassenger, profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    rules = []
    for e in of_kind(profiles, DeviceKind.ELEVATOR, cfg):
        rules.append(
            {
                "name": f"trapped-{e}",
                "when": {
                    "all": [
                        {"point": f"{e}.car_status", "eq": "stopped"},
                        {"point": f"{e}.door_close_status", "eq": 1},
                        {"point": f"{e}.passenger_status", "eq": 1},
                    ]
                },
                "on_delay_s": cfg.occupied_s + cfg.confirm_s,
                "actions": [
                    {"alarm": "critical", "message": f"{e}: passenger trapped"},
                    _out_of_service(e),
                ],
                "unknown_severity": cfg.unknown_severity,
                "precaution": f"{e} asked out of service",
            }
        )
        rules.append(
            {
                "name": f"alarm-button-{e}",
                "when": {"point": f"{e}.alarm_button", "eq": 1},
                "on_delay_s": cfg.confirm_s,
                "actions": [
                    {"alarm": "critical", "message": f"{e}: alarm button pressed in the car"}
                ],
                "unknown_severity": cfg.unknown_severity,
            }
        )
    return rules


def _elevator_safety(cfg: Scope, profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    rules = []
    for e in of_kind(profiles, DeviceKind.ELEVATOR, cfg):
        rules.append(
            {
                "name": f"elevator-safety-{e}",
                "when": {
                    "any": [
                        {"point": f"{e}.fault_bitmap", "has": b, "says": _says(b)}
                        for b in ELEVATOR_SAFETY_BITS
                    ]
                },
                "latch": True,
                "actions": [
                    {"alarm": "critical", "message": f"{e}: safety fault, out of service"},
                    _out_of_service(e),
                ],
                "unknown_severity": cfg.unknown_severity,
                "precaution": f"{e} asked out of service",
            }
        )
    return rules


def _pv_faults(cfg: Scope, profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    rules = []
    for pv in _able(profiles, of_kind(profiles, DeviceKind.PV_INVERTER, cfg), Role.PV_FAULTS):
        faults = profiles[pv].roles[Role.PV_FAULTS]
        rules.append(
            {
                "name": f"pv-fault-{pv}",
                "when": {
                    "any": [
                        {"point": _ref(pv, faults), "has": b, "says": _says(b)} for b in faults.bits
                    ]
                },
                "actions": [{"alarm": "minor", "message": f"{pv}: inverter fault"}],
                "unknown_severity": cfg.unknown_severity,
            }
        )
    return rules
