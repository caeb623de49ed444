"""The standard interlocks I1–I10 (docs/interlocks.md), built from a site's ``[safety]`` table.

A site enables an interlock by giving its table (``[safety.fire_alarm]``) and parameterises
it there; each applies to every device of its kind on the site unless ``devices`` names them.
Those expressible as rules become :class:`~gateway.control.rules.Interlock` data run by the same
engine as a site's own interlocks (fire, over-temperature, lockout, trapped passenger,
elevator safety faults, PV faults); those that compute setpoints are controllers (export
curtailment, feeder allocation, communication loss). I9 (restart) is the actuator's rule:
read back before the first write, never replay.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from gateway.control.actuator import PRIORITY_LIFE_SAFETY, PRIORITY_PROTECTION
from gateway.control.alarms import Severity
from gateway.control.rules import Interlock, PointRef
from gateway.devices.profile import DeviceKind, Profile
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
PV_FAULT_BITS = ("GROUND_FAULT", "OVER_TEMP", "AC_DISCONNECT")


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
    return problems


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
    if of_kind(profiles, DeviceKind.CHARGER, cfg):
        parts.append("chargers held at 0 A and locked")
    if of_kind(profiles, DeviceKind.PV_INVERTER, cfg):
        parts.append("PV disconnected")
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
        actions += [
            _write(f"{c}.max_current", 0.0, p, limit=True),
            _write(f"{c}.remote_lock", "locked", p, release="unlocked"),
        ]
    for pv in of_kind(profiles, DeviceKind.PV_INVERTER, cfg):
        actions += [
            _write(f"{pv}.conn", "DISCONNECT", p, release="CONNECT"),
            _write(f"{pv}.wmaxlimpct", 0, p, limit=True),
        ]
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
    for c in of_kind(profiles, DeviceKind.CHARGER, cfg):
        point = f"{c}.temperature"
        rules += [
            {
                "name": f"overtemp-derate-{c}",
                "when": {"point": point, "gt": cfg.warn_c, "hysteresis": cfg.warn_c - cfg.resume_c},
                "actions": [
                    _write(f"{c}.max_current", cfg.derate_a, PRIORITY_PROTECTION, limit=True),
                    {"alarm": "minor", "message": f"{c} hot: derated to {cfg.derate_a:g} A"},
                ],
                "unknown_severity": cfg.unknown_severity,
                "precaution": f"{c} derated to {cfg.derate_a:g} A",
            },
            {
                "name": f"overtemp-stop-{c}",
                "when": {"point": point, "gt": cfg.trip_c, "hysteresis": cfg.trip_c - cfg.resume_c},
                "actions": [
                    _write(f"{c}.max_current", 0.0, PRIORITY_PROTECTION, limit=True),
                    {"alarm": "major", "message": f"{c} over temperature: stopped"},
                ],
                "unknown_severity": cfg.unknown_severity,
                "precaution": f"{c} held at 0 A",
            },
        ]
    return rules


def _lockout(cfg: Scope, profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    rules = []
    for c in of_kind(profiles, DeviceKind.CHARGER, cfg):
        rules.append(
            {
                "name": f"lockout-{c}",
                "when": {
                    "any": [
                        {
                            "point": f"{c}.residual_current_status",
                            "ne": "ok",
                            "says": "residual current",
                        },
                        {"point": f"{c}.contactor", "eq": "welded", "says": "welded contactor"},
                    ]
                },
                "latch": True,
                # the charger clears its own latch only with the fault gone and the car out
                "reset_when": {"point": f"{c}.lockout_latched", "eq": 0},
                "reset_hint": f"reset {c}'s own lockout first (fault gone, car unplugged)",
                "actions": [
                    _write(f"{c}.max_current", 0.0, PRIORITY_PROTECTION, limit=True),
                    _write(f"{c}.remote_lock", "locked", PRIORITY_PROTECTION, release="unlocked"),
                    {"alarm": "major", "message": f"{c} locked out"},
                ],
                "unknown_severity": cfg.unknown_severity,
                "precaution": f"{c} held at 0 A and locked",
            }
        )
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
    return [
        {
            "name": f"pv-fault-{pv}",
            "when": {
                "any": [{"point": f"{pv}.evt1", "has": b, "says": _says(b)} for b in PV_FAULT_BITS]
            },
            "actions": [{"alarm": "minor", "message": f"{pv}: inverter fault"}],
            "unknown_severity": cfg.unknown_severity,
        }
        for pv in of_kind(profiles, DeviceKind.PV_INVERTER, cfg)
    ]
