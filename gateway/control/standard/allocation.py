"""Setpoint controllers for the interlock engine: feeder current sharing and PV export limiting.

Both are pure functions of one cycle's readings, so the interlock engine owns the timing and
the I/O and these stay easy to test exhaustively.

Feeder allocation (docs/interlocks.md#i3-feeder-limit). The current left for charging on a
feeder is its limit minus the non-charger load, minus the maximum of every charger we cannot
reach (I8: an offline charger is assumed to draw its maximum). A stale meter means that budget
is unknown, and an unknown budget is treated as an overload: every charger gets 0 A. The budget
is shared max-min fairly ("water-filling") among the chargers with a car that wants current,
each capped at its own maximum. IEC 61851 forbids a setpoint between 0 and 6 A, so when the
budget cannot give every car 6 A the lowest-priority cars are paused — as few as possible — and
the rest share what is left. All arithmetic is done in whole tenths of an ampere, the unit
chargers accept, always rounding towards the safe side.

Export curtailment (docs/interlocks.md#i2-export-limit), after OpenEMS's "sell to grid limit"
controller: each cycle the PV limit moves towards the power that would bring the export back to
the limit, by at most 20 % of the last limit, and never to 0 % because some inverters go to
standby at 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TENTHS_PER_AMP = 10
"""Chargers take their current setpoint in 0.1 A units."""

RECOVERY_STEP_PCT = 1.0
"""An increase of the PV limit may always be this many percentage points, however low it is."""


@dataclass(frozen=True, slots=True)
class ChargerLoad:
    """One charger as the allocator sees it this cycle."""

    name: str
    online: bool
    """False when communication is lost (I8): assumed to draw ``max_a``, gets no setpoint."""
    active: bool
    """A car is plugged in and wants current (IEC 61851 state B or C)."""
    drawn_a: float | None
    """Measured current now (the highest of its phases); None if unknown."""
    max_a: float
    """The charger's hardware or configured maximum, e.g. 16 or 32 A."""
    priority: int = 0
    """Higher is served first when not every car can get the minimum current."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_a) and self.max_a >= 0):
            raise ValueError(f"charger {self.name!r}: max_a {self.max_a} is not a current >= 0 A")


@dataclass(frozen=True, slots=True)
class Feeder:
    """The per-phase current limit of the feeder (or transformer) the chargers share."""

    limit_a: float
    min_a: float = 6.0
    """IEC 61851 minimum: a charger gets at least this much or 0 A (paused)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.limit_a) and self.limit_a >= 0):
            raise ValueError(f"feeder limit_a {self.limit_a} is not a current >= 0 A")
        if not (math.isfinite(self.min_a) and self.min_a > 0):
            raise ValueError(f"feeder min_a {self.min_a} is not a current > 0 A")


@dataclass(frozen=True, slots=True)
class ExportPolicy:
    """The site's grid export limit and how fast the PV limit may move towards it."""

    limit_w: float
    """Maximum export to the grid, W (a positive number)."""
    max_step: float = 0.20
    """Largest change per cycle, as a fraction of the last limit."""
    min_pct: float = 1.0
    """Lowest PV limit ever written, % of rated: never 0, some inverters go to standby at 0."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.limit_w) and self.limit_w >= 0):
            raise ValueError(f"export limit_w {self.limit_w} is not a power >= 0 W")
        if not 0 <= self.max_step < 1:
            raise ValueError(f"export max_step {self.max_step} is outside [0, 1)")
        if not 0 < self.min_pct <= 100:
            raise ValueError(f"export min_pct {self.min_pct} is outside (0, 100]")


# --- feeder allocation ------------------------------------------------------------------------


def other_load(meter_a: float | None, chargers: Sequence[ChargerLoad]) -> float | None:
    """The non-charger load on the feeder: the meter's current minus what online chargers draw.

    Only measured draws are subtracted. An online charger whose draw is unknown, and every
    offline charger, stays inside the result — counted twice for an offline one, since the
    budget also reserves its maximum — which errs towards less current for charging.
    None when the meter reading is missing.
    """
    if meter_a is None or not math.isfinite(meter_a):
        return None
    drawn = (c.drawn_a for c in chargers if c.online and c.drawn_a is not None)
    return meter_a - math.fsum(d for d in drawn if math.isfinite(d))


def charging_budget(
    feeder: Feeder, chargers: Sequence[ChargerLoad], other_load_a: float | None
) -> float:
    """The current the online chargers may share: limit − other load − offline maxima, >= 0.

    An unknown (None or non-finite) other load counts as an overload, so the budget is 0. A
    negative other load — the chargers reporting more than the meter measures — is a
    measurement mismatch, not headroom, and counts as 0: the budget never exceeds the limit.
    """
    if other_load_a is None or not math.isfinite(other_load_a):
        return 0.0
    offline_a = math.fsum(c.max_a for c in chargers if not c.online)
    return max(0.0, feeder.limit_a - max(0.0, other_load_a) - offline_a)


def allocate(
    feeder: Feeder, chargers: Sequence[ChargerLoad], other_load_a: float | None
) -> dict[str, float]:
    """The current setpoint (A) for every online charger; offline chargers get none.

    Idle chargers get 0 A. The chargers with a car share :func:`charging_budget` max-min
    fairly, each capped at its maximum, in whole 0.1 A. If the budget cannot give each of them
    ``feeder.min_a``, the lowest priority (ties: the later name) are paused at 0 A until the
    rest can; a charger whose maximum is below ``min_a`` can never be served and gets 0 A.
    The result does not depend on the order of ``chargers``.
    """
    _check_unique_names(chargers)
    setpoints = {c.name: 0.0 for c in chargers if c.online}
    budget = _tenths_at_most(charging_budget(feeder, chargers, other_load_a))
    wanting = [c for c in chargers if c.online and c.active]
    served = _served(wanting, budget, _tenths_at_least(feeder.min_a))
    caps = {c.name: _tenths_at_most(c.max_a) for c in served}
    for name, tenths in _water_fill(caps, budget).items():
        setpoints[name] = tenths / TENTHS_PER_AMP
    return setpoints


def ordered_writes(old: Mapping[str, float], new: Mapping[str, float]) -> list[tuple[str, float]]:
    """The setpoint writes that take the chargers from ``old`` to ``new``, decreases first.

    Sending every decrease before any increase keeps the sum on the wire at or below the larger
    of the old and new sums at every moment in between. A charger missing from ``old`` has an
    unknown setpoint, assumed to be its maximum (as for I8), so its write is a decrease. A
    charger missing from ``new`` (it went offline) gets no write. Within each group the order is
    by name, so the sequence is deterministic.
    """
    changed = sorted((name, amps) for name, amps in new.items() if old.get(name) != amps)
    decreases = [(name, amps) for name, amps in changed if name not in old or amps < old[name]]
    increases = [(name, amps) for name, amps in changed if name in old and amps > old[name]]
    return decreases + increases


def _check_unique_names(chargers: Sequence[ChargerLoad]) -> None:
    """Setpoints are keyed by name, so two chargers with one name would share a setpoint."""
    names = [c.name for c in chargers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"charger names must be unique; repeated: {', '.join(duplicates)}")


def _served(wanting: Sequence[ChargerLoad], budget: int, min_tenths: int) -> list[ChargerLoad]:
    """The chargers to serve: as many as the budget gives ``min_tenths`` each, by priority."""
    servable = [c for c in wanting if _tenths_at_most(c.max_a) >= min_tenths]
    by_priority = sorted(servable, key=lambda c: (-c.priority, c.name))
    return by_priority[: budget // min_tenths]


def _water_fill(caps: Mapping[str, int], budget: int) -> dict[str, int]:
    """Max-min fair shares of ``budget`` under per-name ``caps`` (integers, tenths of an amp).

    Names whose cap is below an equal share get their cap, smallest first; everyone else gets
    the same level, rounded down, so shares never sum above the budget.
    """
    shares: dict[str, int] = {}
    left = budget
    by_cap = sorted(caps.items(), key=lambda item: (item[1], item[0]))
    for index, (name, cap) in enumerate(by_cap):
        if cap * (len(by_cap) - index) > left:
            level = left // (len(by_cap) - index)
            shares.update((rest, level) for rest, _ in by_cap[index:])
            break
        shares[name] = cap
        left -= cap
    return shares


def _tenths_at_most(amps: float) -> int:
    """The most whole tenths of an amp that do not exceed ``amps`` (compared as floats)."""
    tenths = math.floor(amps * TENTHS_PER_AMP)
    if (tenths + 1) / TENTHS_PER_AMP <= amps:
        return tenths + 1
    if tenths / TENTHS_PER_AMP > amps:
        return tenths - 1
    return tenths


def _tenths_at_least(amps: float) -> int:
    """The fewest whole tenths of an amp that reach at least ``amps`` (compared as floats)."""
    tenths = math.ceil(amps * TENTHS_PER_AMP)
    if (tenths - 1) / TENTHS_PER_AMP >= amps:
        return tenths - 1
    if tenths / TENTHS_PER_AMP < amps:
        return tenths + 1
    return tenths


# --- export curtailment -----------------------------------------------------------------------


def curtail(
    limit: ExportPolicy, meter_w: float | None, pv_w: float | None, rated_w: float, last_pct: float
) -> float:
    """The next PV power limit (WMaxLimPct, % of ``rated_w``), within [min_pct, 100].

    ``meter_w`` is the site meter's active power, + import and − export; ``pv_w`` is what the
    PV produces now. The target is the PV power that would put the export exactly at the
    limit, ``pv_w + meter_w + limit_w``: less PV while the export is over the limit, more
    while there is headroom. The step from ``last_pct`` is bounded by :func:`step_bounds`.

    A missing or non-finite meter or PV reading holds the limit one full step down from
    ``last_pct`` (the safe side is less export). ``last_pct`` is first clamped to
    [min_pct, 100], so a limit read back as 0 % or above 100 % restarts from the nearest end.
    """
    if not (math.isfinite(rated_w) and rated_w > 0):
        raise ValueError(f"PV rated_w {rated_w} is not a power > 0 W")
    if not math.isfinite(last_pct):
        raise ValueError(f"PV last_pct {last_pct} is not a percentage")
    last = _clamp(last_pct, limit.min_pct, 100.0)
    lowest, highest = step_bounds(limit, last)
    target = _target_pct(limit, meter_w, pv_w, rated_w)
    step = lowest if target is None else _clamp(target, lowest, highest)
    return _clamp(step, limit.min_pct, 100.0)


def step_bounds(limit: ExportPolicy, last_pct: float) -> tuple[float, float]:
    """How far one cycle may move the PV limit from ``last_pct``: (lowest, highest), in %.

    Down by at most ``max_step`` of the last limit; up by at most ``max_step`` of it or
    :data:`RECOVERY_STEP_PCT` points, whichever is more. A purely relative step lets a limit
    at 1 % climb only 0.2 points in a cycle: at 20 % it takes 13 cycles to reach 10 % (26 to
    reach 100 %); with the one-point floor it takes 8 (21). Decreases keep the purely relative
    bound, so they slow down near the bottom, and ``min_pct`` stops them there.
    """
    lowest = last_pct * (1 - limit.max_step)
    highest = max(last_pct * (1 + limit.max_step), last_pct + RECOVERY_STEP_PCT)
    return lowest, highest


def _target_pct(
    limit: ExportPolicy, meter_w: float | None, pv_w: float | None, rated_w: float
) -> float | None:
    """The PV limit (% of rated) that would bring the export to the limit; None if unknown."""
    if meter_w is None or pv_w is None or not math.isfinite(meter_w + pv_w):
        return None
    return 100.0 * (pv_w + meter_w + limit.limit_w) / rated_w


def _clamp(value: float, lowest: float, highest: float) -> float:
    """``value`` limited to [lowest, highest]."""
    return min(highest, max(lowest, value))
