"""Roles: what a point *means* to the standard interlocks, whatever the device calls it.

The standard interlocks (docs/interlocks.md) must protect a site that mixes a Heidelberg box
with a KEBA, a SunSpec inverter with a Huawei. They never name a point; they ask a profile for
the point that plays a role (``charger_current_setpoint``, ``meter_grid_power``) and for the
labels that mean what they need (which charger states mean "a car is connected", which value
of a lock point means "locked"). A profile binds its roles in a ``[roles]`` table:

.. code-block:: toml

    [roles]
    charger_current_setpoint = { point = "max_current" }
    charger_state = { point = "cp_state", active = ["B", "C"] }
    charger_lock = { point = "remote_lock", on = "locked", off = "unlocked" }
    charger_phase_currents = { points = ["l1_current", "l2_current", "l3_current"] }

Each role says what it needs of its points (:data:`SPECS`): the device kind, whether it must
be writable, numeric or an enum, and which labels must be given; :mod:`gateway.devices.profile`
checks a profile's bindings against that, so a wrong binding fails when the profile loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Self

from pydantic import Field, model_validator

from gateway.validation import Strict


class Role(StrEnum):
    # chargers
    CHARGER_CURRENT_SETPOINT = "charger_current_setpoint"
    CHARGER_STATE = "charger_state"
    CHARGER_PHASE_CURRENTS = "charger_phase_currents"
    CHARGER_MAX_CURRENT = "charger_max_current"
    CHARGER_LOCK = "charger_lock"
    CHARGER_TEMPERATURE = "charger_temperature"
    CHARGER_RESIDUAL_CURRENT = "charger_residual_current"
    CHARGER_CONTACTOR = "charger_contactor"
    CHARGER_LOCKOUT_LATCHED = "charger_lockout_latched"
    # PV inverters
    PV_POWER = "pv_power"
    PV_RATED_POWER = "pv_rated_power"
    PV_POWER_LIMIT_PCT = "pv_power_limit_pct"
    PV_POWER_LIMIT_ENABLE = "pv_power_limit_enable"
    PV_POWER_LIMIT_REVERT = "pv_power_limit_revert_s"
    PV_CONNECT = "pv_connect"
    PV_FAULTS = "pv_faults"
    # meters
    METER_GRID_POWER = "meter_grid_power"
    METER_PHASE_CURRENTS = "meter_phase_currents"


Shape = Literal["numeric", "enum", "state", "bitfield", "any"]


@dataclass(frozen=True)
class RoleSpec:
    kind: str  # a DeviceKind value
    what: str  # what it means, for messages and docs
    shape: Shape = "numeric"
    writable: bool = False
    points: int = 1  # how many points it binds
    labels: tuple[str, ...] = ()  # which of active/on/off/ok/bits must be given


SPECS: dict[Role, RoleSpec] = {
    Role.CHARGER_CURRENT_SETPOINT: RoleSpec(
        "charger", "the current the charger may advertise (A)", writable=True
    ),
    Role.CHARGER_STATE: RoleSpec(
        "charger",
        "the vehicle state (an enum, or text such as IEC 61851 'B2'); 'active' lists the "
        "values meaning a car is connected, 'off' the one meaning no car",
        shape="state",
        labels=("active",),
    ),
    Role.CHARGER_PHASE_CURRENTS: RoleSpec(
        "charger", "the current drawn on each phase (A)", points=3
    ),
    Role.CHARGER_MAX_CURRENT: RoleSpec("charger", "the hardware's maximum current (A)"),
    Role.CHARGER_LOCK: RoleSpec(
        "charger",
        "a remote lock; 'on' is the label (or value) that locks, 'off' unlocks",
        shape="any",
        writable=True,
        labels=("on", "off"),
    ),
    Role.CHARGER_TEMPERATURE: RoleSpec("charger", "the charger's temperature (°C)"),
    Role.CHARGER_RESIDUAL_CURRENT: RoleSpec(
        "charger",
        "residual-current monitoring; 'ok' lists the labels meaning no fault",
        shape="enum",
        labels=("ok",),
    ),
    Role.CHARGER_CONTACTOR: RoleSpec(
        "charger", "the contactor; 'on' is the label meaning welded", shape="enum", labels=("on",)
    ),
    Role.CHARGER_LOCKOUT_LATCHED: RoleSpec(
        "charger", "the charger's own lockout latch (0 = cleared)", shape="any"
    ),
    Role.PV_POWER: RoleSpec("pv_inverter", "AC power fed in (W)"),
    Role.PV_RATED_POWER: RoleSpec("pv_inverter", "rated or maximum AC power (W)"),
    Role.PV_POWER_LIMIT_PCT: RoleSpec(
        "pv_inverter", "the active power limit, % of rated", writable=True
    ),
    Role.PV_POWER_LIMIT_ENABLE: RoleSpec(
        "pv_inverter",
        "enables the power limit; 'on' enables, 'off' disables",
        shape="any",
        writable=True,
        labels=("on", "off"),
    ),
    Role.PV_POWER_LIMIT_REVERT: RoleSpec(
        "pv_inverter",
        "seconds after which the inverter drops the limit by itself",
        writable=True,
    ),
    Role.PV_CONNECT: RoleSpec(
        "pv_inverter",
        "grid connection; 'on' connects, 'off' disconnects",
        shape="any",
        writable=True,
        labels=("on", "off"),
    ),
    Role.PV_FAULTS: RoleSpec(
        "pv_inverter",
        "fault bits; 'bits' lists those that raise the PV fault alarm",
        shape="bitfield",
        labels=("bits",),
    ),
    Role.METER_GRID_POWER: RoleSpec("meter", "power at the grid connection (W, + = import)"),
    Role.METER_PHASE_CURRENTS: RoleSpec("meter", "the current on each phase (A)", points=3),
}


class RoleBinding(Strict):
    """The point(s) that play a role in one profile, and the labels the role needs."""

    point: str | None = None
    points: tuple[str, ...] = ()
    active: tuple[str, ...] = ()
    ok: tuple[str, ...] = ()
    bits: tuple[str, ...] = ()
    on: str | int | None = None
    off: str | int | None = None
    #: The device drops a written value this long after the last write (a setpoint that must
    #: be kept alive, e.g. Alfen's "max current valid time"): the gateway rewrites it at a
    #: third of this, and the device falls back to ``fallback`` when the gateway is gone.
    keep_alive_s: float | None = Field(default=None, gt=0)
    fallback: str | None = None
    #: A charger setpoint that cannot take 0 A (KEBA: 6000..63000 mA): the standard
    #: interlocks pause and stop such a charger with its lock (charger_lock) instead.
    pause_by_lock: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.point is None) == (not self.points):
            raise ValueError("give 'point' (one point) or 'points' (a list), not both or neither")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return (self.point,) if self.point is not None else self.points
