"""Feeder current sharing (I3 + I8) and PV export curtailment (I2) keep their invariants."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.control.standard.allocation import (
    ChargerLoad,
    ExportPolicy,
    Feeder,
    allocate,
    curtail,
    ordered_writes,
    other_load,
)

EPS = 1e-9


def car(name: str, max_a: float = 16.0, priority: int = 0, *, online: bool = True) -> ChargerLoad:
    """An online charger with a car that wants current."""
    return ChargerLoad(
        name, online=online, active=True, drawn_a=None, max_a=max_a, priority=priority
    )


def idle(name: str, max_a: float = 16.0) -> ChargerLoad:
    return ChargerLoad(name, online=True, active=False, drawn_a=0.0, max_a=max_a)


# --- strategies -------------------------------------------------------------------------------

feeders = st.builds(
    Feeder,
    limit_a=st.floats(0, 400),
    # On the 0.1 A grid, so "servable" below can be stated without rounding the minimum.
    min_a=st.just(6.0) | st.integers(1, 160).map(lambda tenths: tenths / 10),
)
other_loads = st.none() | st.floats(-20, 400)
max_currents = st.sampled_from([6.0, 10.0, 13.0, 16.0, 20.0, 32.0]) | st.floats(0, 63)


@st.composite
def charger_lists(draw: st.DrawFn) -> list[ChargerLoad]:
    count = draw(st.integers(0, 12))
    return [
        ChargerLoad(
            name=f"cp{index:02d}",
            online=draw(st.booleans()),
            active=draw(st.booleans()),
            drawn_a=draw(st.none() | st.floats(0, 63)),
            max_a=draw(max_currents),
            priority=draw(st.integers(0, 3)),  # a small range, so ties are common
        )
        for index in range(count)
    ]


def budget(feeder: Feeder, chargers: list[ChargerLoad], other: float | None) -> float:
    """The spec's budget: limit − other (a negative other is no headroom) − offline maxima."""
    if other is None:
        return 0.0
    offline = math.fsum(c.max_a for c in chargers if not c.online)
    return max(0.0, feeder.limit_a - max(0.0, other) - offline)


def served_and_paused(
    feeder: Feeder, chargers: list[ChargerLoad], setpoints: dict[str, float]
) -> tuple[list[ChargerLoad], list[ChargerLoad]]:
    """The chargers with a car that got current, and those that could have but were paused."""
    wanting = [c for c in chargers if c.online and c.active]
    served = [c for c in wanting if setpoints[c.name] > 0]
    paused = [c for c in wanting if setpoints[c.name] == 0 and c.max_a >= feeder.min_a]
    return served, paused


# --- feeder allocation: properties ------------------------------------------------------------


@given(feeders, charger_lists(), other_loads)
def test_every_online_charger_and_no_offline_one_gets_a_setpoint(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    assert set(setpoints) == {c.name for c in chargers if c.online}


@given(feeders, charger_lists(), other_loads)
def test_chargers_never_get_more_than_the_feeder_has_left(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    assert math.fsum(setpoints.values()) <= budget(feeder, chargers, other) + EPS
    if other is not None:
        offline = math.fsum(c.max_a for c in chargers if not c.online)
        assert math.fsum(setpoints.values()) <= max(0.0, feeder.limit_a - other - offline) + EPS


@given(feeders, charger_lists(), other_loads)
def test_a_setpoint_is_0_or_between_the_minimum_and_the_chargers_maximum_in_tenths(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    for charger in chargers:
        if charger.online:
            amps = setpoints[charger.name]
            assert amps == 0 or feeder.min_a <= amps <= charger.max_a
            assert round(amps * 10) / 10 == amps


@given(feeders, charger_lists(), other_loads)
def test_a_charger_without_a_car_gets_0_a(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    assert all(setpoints[c.name] == 0 for c in chargers if c.online and not c.active)


@given(feeders, charger_lists())
def test_an_unknown_other_load_pauses_every_charger(
    feeder: Feeder, chargers: list[ChargerLoad]
) -> None:
    assert not any(allocate(feeder, chargers, None).values())


@given(feeders, charger_lists(), other_loads)
def test_as_many_cars_are_served_as_the_budget_gives_the_minimum(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    served, paused = served_and_paused(feeder, chargers, setpoints)
    if paused:
        assert (len(served) + 1) * feeder.min_a > budget(feeder, chargers, other) - EPS


@given(feeders, charger_lists(), other_loads)
def test_the_lowest_priority_cars_are_the_ones_paused(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    served, paused = served_and_paused(feeder, chargers, setpoints)
    for waiting in paused:
        for charging in served:
            assert (-charging.priority, charging.name) < (-waiting.priority, waiting.name)


@given(feeders, charger_lists(), other_loads)
def test_a_served_car_gets_less_than_another_only_at_its_own_maximum(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    served, _ = served_and_paused(feeder, chargers, setpoints)
    highest = max((setpoints[c.name] for c in served), default=0.0)
    for charger in served:
        if setpoints[charger.name] < highest:
            assert setpoints[charger.name] > charger.max_a - 0.1 - EPS


@given(feeders, charger_lists(), other_loads)
def test_only_rounding_is_left_unused_while_a_served_car_wants_more(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None
) -> None:
    setpoints = allocate(feeder, chargers, other)
    served, _ = served_and_paused(feeder, chargers, setpoints)
    below_max = [c for c in served if setpoints[c.name] + 0.1 <= c.max_a - EPS]
    if below_max:
        unused = budget(feeder, chargers, other) - math.fsum(setpoints.values())
        assert unused < 0.1 * (len(below_max) + 1) + EPS


@given(feeders, charger_lists(), other_loads, st.randoms(use_true_random=False))
def test_the_order_chargers_are_listed_in_does_not_matter(
    feeder: Feeder, chargers: list[ChargerLoad], other: float | None, rng: random.Random
) -> None:
    shuffled = list(chargers)
    rng.shuffle(shuffled)
    assert allocate(feeder, shuffled, other) == allocate(feeder, chargers, other)


# --- feeder allocation: behaviour -------------------------------------------------------------


def test_stale_meter_pauses_every_charger() -> None:
    chargers = [car("a"), car("b", max_a=32), idle("c")]
    assert allocate(Feeder(limit_a=63), chargers, other_load_a=None) == {"a": 0, "b": 0, "c": 0}


def test_offline_charger_counts_at_its_maximum() -> None:
    lost = car("lost", max_a=16, online=False)
    setpoints = allocate(Feeder(limit_a=32), [car("a"), car("b"), lost], other_load_a=0.0)
    assert setpoints == {"a": 8.0, "b": 8.0}


def test_three_cars_share_32_a_fairly() -> None:
    setpoints = allocate(Feeder(limit_a=32), [car("a"), car("b"), car("c")], other_load_a=0.0)
    assert setpoints == {"a": 10.6, "b": 10.6, "c": 10.6}


def test_a_car_capped_by_its_charger_leaves_the_rest_to_the_others() -> None:
    chargers = [car("small", max_a=6), car("b"), car("c")]
    setpoints = allocate(Feeder(limit_a=32), chargers, other_load_a=0.0)
    assert setpoints == {"small": 6.0, "b": 13.0, "c": 13.0}


def test_fourth_car_is_paused_rather_than_dropping_everyone_below_6_a() -> None:
    chargers = [car("a", priority=1), car("b", priority=1), car("c", priority=1), car("d")]
    setpoints = allocate(Feeder(limit_a=32), chargers, other_load_a=12.0)
    assert setpoints == {"a": 6.6, "b": 6.6, "c": 6.6, "d": 0.0}


def test_equal_priorities_pause_by_name() -> None:
    setpoints = allocate(Feeder(limit_a=12), [car("b"), car("a"), car("c")], other_load_a=0.0)
    assert setpoints == {"a": 6.0, "b": 6.0, "c": 0.0}


def test_a_charger_whose_maximum_is_below_the_minimum_is_never_served() -> None:
    setpoints = allocate(Feeder(limit_a=32), [car("weak", max_a=5.9)], other_load_a=0.0)
    assert setpoints == {"weak": 0.0}


def test_a_minimum_between_tenths_is_rounded_up() -> None:
    setpoints = allocate(Feeder(limit_a=12.2, min_a=6.05), [car("a"), car("b")], other_load_a=0.0)
    assert setpoints == {"a": 6.1, "b": 6.1}


def test_other_load_subtracts_only_measured_draw_of_online_chargers() -> None:
    chargers = [
        ChargerLoad("a", online=True, active=True, drawn_a=10.0, max_a=16),
        ChargerLoad("b", online=True, active=True, drawn_a=None, max_a=16),
        ChargerLoad("lost", online=False, active=True, drawn_a=7.0, max_a=16),
    ]
    assert other_load(40.0, chargers) == 30.0
    assert other_load(None, chargers) is None
    assert other_load(math.nan, chargers) is None


def test_repeated_charger_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="repeated: a"):
        allocate(Feeder(limit_a=32), [car("a"), car("a")], other_load_a=0.0)


# --- write ordering ---------------------------------------------------------------------------

setpoint_maps = st.dictionaries(
    st.sampled_from([f"cp{index:02d}" for index in range(12)]),
    st.integers(0, 320).map(lambda tenths: tenths / 10),
)


@given(setpoint_maps, st.data())
def test_the_sum_on_the_wire_never_exceeds_the_old_or_the_new_sum(
    old: dict[str, float], data: st.DataObject
) -> None:
    new = {name: data.draw(st.integers(0, 320)) / 10 for name in old}
    wire = dict(old)
    ceiling = max(math.fsum(old.values()), math.fsum(new.values()))
    for name, amps in ordered_writes(old, new):
        wire[name] = amps
        assert math.fsum(wire.values()) <= ceiling + EPS
    assert wire == new


@given(setpoint_maps, setpoint_maps)
def test_every_decrease_is_written_before_any_increase(
    old: dict[str, float], new: dict[str, float]
) -> None:
    writes = ordered_writes(old, new)
    rising = [name in old and amps > old[name] for name, amps in writes]
    assert rising == sorted(rising)
    assert {name for name, _ in writes} == {n for n, a in new.items() if old.get(n) != a}


def test_decreases_are_written_before_increases() -> None:
    old = {"a": 6.0, "b": 16.0, "c": 10.0, "gone": 16.0}
    new = {"a": 10.0, "b": 12.0, "c": 10.0, "new": 6.0}
    assert ordered_writes(old, new) == [("b", 12.0), ("new", 6.0), ("a", 10.0)]


# --- export curtailment -----------------------------------------------------------------------

export_limits = st.builds(
    ExportPolicy,
    limit_w=st.floats(0, 20_000),
    max_step=st.floats(0, 0.5),
    min_pct=st.floats(0.1, 10),
)
rated_powers = st.floats(1_000, 100_000)
percentages = st.floats(0, 120)
powers = st.floats(-100_000, 100_000)
maybe_meter = st.none() | powers
maybe_pv = st.none() | st.floats(0, 100_000)


def clamped_last(limit: ExportPolicy, last_pct: float) -> float:
    return min(100.0, max(limit.min_pct, last_pct))


@given(
    export_limits, st.none() | powers, st.none() | st.floats(0, 100_000), rated_powers, percentages
)
def test_curtailment_stays_within_min_pct_and_100(
    limit: ExportPolicy, meter: float | None, pv: float | None, rated: float, last: float
) -> None:
    assert limit.min_pct <= curtail(limit, meter, pv, rated, last) <= 100


@given(
    export_limits, st.none() | powers, st.none() | st.floats(0, 100_000), rated_powers, percentages
)
def test_one_cycle_moves_the_limit_by_at_most_one_step(
    limit: ExportPolicy, meter: float | None, pv: float | None, rated: float, last: float
) -> None:
    start = clamped_last(limit, last)
    next_pct = curtail(limit, meter, pv, rated, last)
    assert start * (1 - limit.max_step) - EPS <= next_pct
    assert next_pct <= max(start * (1 + limit.max_step), start + 1.0) + EPS


@given(export_limits, st.floats(0, 1), powers, rated_powers, percentages)
def test_export_over_the_limit_never_raises_the_pv_limit(
    limit: ExportPolicy, pv_share: float, excess: float, rated: float, last: float
) -> None:
    pv = pv_share * clamped_last(limit, last) / 100 * rated  # PV cannot exceed its limit
    meter = -limit.limit_w - abs(excess) - 1.0
    assert curtail(limit, meter, pv, rated, last) <= clamped_last(limit, last)


@given(export_limits, st.floats(1, 100_000), rated_powers, percentages)
def test_headroom_never_lowers_a_pv_limit_the_inverter_is_running_at(
    limit: ExportPolicy, headroom: float, rated: float, last: float
) -> None:
    pv = clamped_last(limit, last) / 100 * rated
    meter = headroom - limit.limit_w
    assert curtail(limit, meter, pv, rated, last) >= clamped_last(limit, last) - EPS


@given(export_limits, st.floats(0, 1), st.floats(0, 100_000), rated_powers, percentages)
def test_a_target_within_one_step_is_reached_in_that_step(
    limit: ExportPolicy, where: float, pv: float, rated: float, last: float
) -> None:
    start = clamped_last(limit, last)
    lowest = max(limit.min_pct, start * (1 - limit.max_step))
    highest = min(100.0, max(start * (1 + limit.max_step), start + 1))
    target = lowest + where * (highest - lowest)
    meter = target / 100 * rated - pv - limit.limit_w
    assert curtail(limit, meter, pv, rated, last) == pytest.approx(target, rel=1e-6)


@given(export_limits, st.booleans(), rated_powers, percentages)
def test_a_stale_reading_curtails_by_one_step(
    limit: ExportPolicy, meter_stale: bool, rated: float, last: float
) -> None:
    meter, pv = (None, 5_000.0) if meter_stale else (-1_000.0, None)
    expected = max(limit.min_pct, clamped_last(limit, last) * (1 - limit.max_step))
    assert curtail(limit, meter, pv, rated, last) == pytest.approx(expected)


def test_export_over_the_limit_curtails_at_most_20_percent_per_cycle() -> None:
    limit, rated, load_w, available_w = ExportPolicy(limit_w=3_000), 10_000.0, 1_000.0, 9_000.0
    history = [100.0]
    for _ in range(8):
        pv = min(available_w, history[-1] / 100 * rated)
        history.append(curtail(limit, load_w - pv, pv, rated, history[-1]))
    assert history[:5] == pytest.approx([100, 80, 64, 51.2, 40.96])
    assert history[-1] == pytest.approx(40)  # PV 4 kW − load 1 kW = the 3 kW export limit


def test_a_deeply_curtailed_inverter_recovers_at_least_one_point_per_cycle() -> None:
    limit = ExportPolicy(limit_w=3_000)
    assert curtail(limit, meter_w=-2_000, pv_w=100, rated_w=10_000, last_pct=1.0) == 2.0


def test_curtailment_never_writes_0_percent() -> None:
    limit = ExportPolicy(limit_w=0)
    assert curtail(limit, meter_w=-50_000, pv_w=100, rated_w=10_000, last_pct=1.0) == 1.0
    assert curtail(limit, meter_w=-50_000, pv_w=100, rated_w=10_000, last_pct=0.0) == 1.0
    assert curtail(limit, meter_w=None, pv_w=None, rated_w=10_000, last_pct=1.0) == 1.0
