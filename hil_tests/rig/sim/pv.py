"""A rooftop PV inverter speaking SunSpec models 1, 103, 120–123 (docs/devices.md#sunspec-inv).

Output follows an irradiance curve up to the rating, capped by the model-123 power limit
(WMaxLimPct of WMax while WMaxLim_Ena = 1), reached over a short ramp; the limit reverts to
"no limit" WMaxLimPct_RvrtTms seconds after it was last written (SunSpec 123 semantics).
Conn = 0 disconnects from the grid, and reconnects Conn_RvrtTms seconds later if that is set.
With no sun the inverter sleeps. Ground fault and over-temperature events put the inverter
in FAULT with no output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from gateway.devices.profile import Table
from hil_tests.rig.registers import ExceptionCode, SimModbusError
from hil_tests.rig.sim.sunspec_device import SunSpecUnit

INVERTER_MODELS = (1, 103, 120, 121, 122, 123)
RATING_W = 10_000
OFF, SLEEPING, MPPT, THROTTLED, FAULT = 1, 2, 4, 5, 7
GROUND_FAULT, OVER_TEMP = 0, 7
RAMP_S = 1.0


def clear_sky(day_s: float = 1200.0, start_phase: float = 0.125) -> Callable[[float], float]:
    """Irradiance 0..1 over a simulated day of ``day_s`` seconds: a bell from sunrise (phase
    0) through noon (0.25) to sunset (0.5), then night.

    The day is anchored at the first time the curve is asked about, which lies
    ``start_phase`` into it (mid-morning by default): the site's clock is the monotonic
    clock, whose value says nothing about the time of day, and a demo should not open at
    night.
    """
    sunrise: float | None = None

    def curve(now: float) -> float:
        nonlocal sunrise
        if sunrise is None:
            sunrise = now - start_phase * day_s
        phase = ((now - sunrise) % day_s) / day_s
        return max(0.0, math.sin(2 * math.pi * phase)) ** 1.5

    return curve


class PvInverter(SunSpecUnit):
    def __init__(
        self,
        unit_id: int,
        *,
        irradiance: Callable[[float], float] | None = None,
        models: Sequence[int] = INVERTER_MODELS,
        base: int = 40000,
    ) -> None:
        super().__init__("SUNSPEC-INV", unit_id, models, base)
        self.irradiance = irradiance or (lambda _now: 0.8)
        self.output_w = 0.0
        self.events = 0
        self.energy_wh = 0.0
        self._now: float | None = None
        self._limit_written_at: float | None = None
        self._conn_written_at: float | None = None
        self._write_registers_at_start()

    def _write_registers_at_start(self) -> None:
        for name, value in {
            "mn": "Doorstep-Sim",
            "md": "PV-10K",
            "opt": "",
            "vr": "1.0.0",
            "sn": "SIM0001",
            "da": self.unit_id,
            "a_sf": -2,
            "v_sf": -1,
            "w_sf": 0,
            "hz_sf": -2,
            "va_sf": 0,
            "var_sf": 0,
            "pf_sf": 0,
            "wh_sf": 0,
            "dca_sf": -2,
            "dcv_sf": -1,
            "dcw_sf": 0,
            "tmp_sf": -1,
            "dertyp": 4,
            "wrtg_sf": 0,
            "wmax_sf": 0,
            "wmaxlimpct_sf": 0,
        }.items():
            self.set(name, value)
        self.set("wrtg", RATING_W, 0)
        self.set("wmax", RATING_W, 0)
        self.set("conn", 1)
        self.set("wmaxlimpct", 100, 0)
        self.set("wmaxlim_ena", 0)

    # -- faults -----------------------------------------------------------------------------

    def raise_event(self, bit: int) -> None:
        self.events |= 1 << bit

    def clear_event(self, bit: int) -> None:
        self.events &= ~(1 << bit)

    def power_w(self) -> float:
        """Contribution to the site balance: generation counts negative."""
        return -self.output_w

    # -- physics ----------------------------------------------------------------------------

    def limit_w(self) -> float:
        w_max = float(self.get("wmax", 0) or RATING_W)
        if self.get("wmaxlim_ena") != 1:
            return w_max
        pct = self.get("wmaxlimpct", 0)
        return w_max * float(pct if isinstance(pct, (int, float)) else 100) / 100

    def advance(self, now: float) -> None:
        if self._now is None:
            self._now = now
        dt, self._now = max(0.0, now - self._now), now
        self._revert(now)
        available = RATING_W * max(0.0, min(1.0, self.irradiance(now)))
        faulted = self.events & ((1 << GROUND_FAULT) | (1 << OVER_TEMP))
        connected = self.get("conn") == 1
        target = 0.0 if faulted or not connected else min(available, self.limit_w())
        step = RATING_W * dt / RAMP_S
        self.output_w += max(-step, min(step, target - self.output_w))
        if not connected or faulted:
            self.output_w = 0.0
        self.energy_wh += self.output_w * dt / 3600
        self._publish(self._state(available, faulted=bool(faulted), connected=connected), connected)

    def _state(self, available: float, *, faulted: bool, connected: bool) -> int:
        if faulted:
            return FAULT
        if not connected:
            return OFF
        if available <= 0:
            return SLEEPING
        return THROTTLED if self.limit_w() < available - 1 else MPPT

    def _revert(self, now: float) -> None:
        """Model-123 revert timers: the limit back to "no limit", Conn back to connected."""
        if self._expired("wmaxlimpct_rvrttms", self._limit_written_at, now):
            self.set("wmaxlim_ena", 0)
            self._limit_written_at = None
        if self._expired("conn_rvrttms", self._conn_written_at, now):
            self.set("conn", 1)
            self._conn_written_at = None

    def _expired(self, timeout_point: str, written_at: float | None, now: float) -> bool:
        timeout = self.get(timeout_point)
        return (
            isinstance(timeout, int)
            and timeout > 0
            and written_at is not None
            and now - written_at >= timeout
        )

    def _publish(self, state: int, connected: bool) -> None:
        w = round(self.output_w)
        amps = w / (3 * 230)
        for name, value in {
            "a": round(amps * 3, 2),
            "apha": round(amps, 2),
            "aphb": round(amps, 2),
            "aphc": round(amps, 2),
            "phvpha": 230.0,
            "phvphb": 230.0,
            "phvphc": 230.0,
            "w": w,
            "hz": 50.0,
            "va": w,
            "var": 0,
            "pf": 100,
            "wh": int(self.energy_wh),
            "dca": round(w / 600, 2),
            "dcv": 600.0,
            "dcw": round(w * 1.03),
            "tmpcab": round(30 + w / 1000, 1),
            "tmpsnk": round(35 + w / 800, 1),
            "st": state,
            "stvnd": 0,
            "evt1": self.events,
            "pvconn": 0b111 if connected else 0b010,
            "ecpconn": int(connected),
        }.items():
            self.set(name, value, _SF.get(name))

    def on_write(self, table: Table, address: int, values: Sequence[int]) -> None:
        pct = self.point("wmaxlimpct").address
        conn = self.point("conn").address
        ena = self.point("wmaxlim_ena").address
        for offset, value in enumerate(values):
            addr = address + offset
            if addr == pct and value > 100:
                raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"WMaxLimPct {value}")
            if addr in (conn, ena) and value not in (0, 1):
                raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"{addr}={value}")
        self.regs.put(table, address, values)
        if address <= pct < address + len(values):
            self._limit_written_at = self._now
        if address <= conn < address + len(values):
            self._conn_written_at = self._now if values[conn - address] == 0 else None


_SF = {
    "a": -2,
    "apha": -2,
    "aphb": -2,
    "aphc": -2,
    "phvpha": -1,
    "phvphb": -1,
    "phvphc": -1,
    "w": 0,
    "hz": -2,
    "va": 0,
    "var": 0,
    "pf": 0,
    "wh": 0,
    "dca": -2,
    "dcv": -1,
    "dcw": 0,
    "tmpcab": -1,
    "tmpsnk": -1,
}
