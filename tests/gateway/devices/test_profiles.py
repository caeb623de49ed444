"""The shipped device profiles against the register maps of docs/devices.md."""

import pytest

from gateway.devices import codec, sunspec
from gateway.devices.profile import (
    Access,
    PollClass,
    Profile,
    Table,
    available_models,
    load_profile,
)

MODELS = available_models()
SUNSPEC_MODELS = [m for m in MODELS if load_profile(m).sunspec is not None]

INVERTER_CHAIN = [1, 103, 120, 121, 122, 123]  # docs/devices.md#sunspec-inv (124 is optional)


def placed(model: str, chain: list[int], base: int = 40000) -> Profile:
    return sunspec.place(load_profile(model), sunspec.layout(chain, base))


def test_all_six_device_profiles_ship() -> None:
    assert {"ELV-24476", "LCK-16", "EVSE-HEC", "SUNSPEC-INV", "SUNSPEC-METER", "SIO-1"} <= set(
        MODELS
    )


@pytest.mark.parametrize("model", MODELS)
def test_commands_target_writable_points(model: str) -> None:
    profile = load_profile(model)
    for command in profile.commands:
        assert profile.point(command.point).writable, command.name


@pytest.mark.parametrize("model", MODELS)
def test_watchdog_and_key_points_exist(model: str) -> None:
    profile = load_profile(model)
    for name in profile.key_points:
        assert profile.point(name).readable, name
    wd = profile.watchdog
    if wd is None:
        return
    assert profile.point(wd.heartbeat).writable
    if wd.heartbeat_mode == "timeout":  # the heartbeat writes the timeout it reads
        assert profile.point(wd.timeout).readable
    else:
        assert profile.point(wd.timeout).writable
    for optional in (wd.safe_value, wd.remaining, wd.failsafe):
        if optional is not None:
            assert profile.point(optional).readable, optional


@pytest.mark.parametrize("model", MODELS)
def test_no_point_lies_in_an_unreadable_range(model: str) -> None:
    profile = load_profile(model)
    for p in profile.points:
        for r in profile.unreadable:
            assert p.address is None or not (p.table is r.table and r.overlaps(p.address, p.width))


@pytest.mark.parametrize("model", SUNSPEC_MODELS)
def test_sunspec_points_stay_inside_their_model(model: str) -> None:
    profile = load_profile(model)
    for p in profile.points:
        assert p.table is Table.HOLDING
        assert p.sunspec_model is not None
        assert p.offset is not None
        assert p.offset + p.width <= 2 + sunspec.MODEL_LENGTHS[p.sunspec_model], p.name


@pytest.mark.parametrize("model", SUNSPEC_MODELS)
def test_scaled_sunspec_points_have_their_scale_factor_in_the_same_model(model: str) -> None:
    profile = load_profile(model)
    for p in profile.points:
        if p.scale_factor is not None:
            sf = profile.point(p.scale_factor)
            assert sf.sunspec_model == p.sunspec_model
            assert sf.na == codec.SF_NOT_IMPLEMENTED


# -- LCK-16 (docs/devices.md#lck-16) ------------------------------------------------------


def test_locker_unlock_coils_are_write_only_in_practice() -> None:
    profile = load_profile("LCK-16")
    for n in range(1, 17):
        p = profile.point(f"unlock_{n}")
        assert (p.table, p.address, p.poll) == (Table.COIL, n - 1, PollClass.NEVER)
        assert profile.point(f"door_locked_{n}").address == n - 1
        assert profile.point(f"item_present_{n}").address == 99 + n
    assert profile.point("unlock_all").address == 100


def test_locker_unlock_all_needs_the_two_step_arm() -> None:
    profile = load_profile("LCK-16")
    commands = {c.name: c for c in profile.commands}
    assert commands["arm_unlock_all"].value == 0x5AA5
    assert profile.point("unlock_all_arm").address == 20
    assert commands["unlock_all"].point == "unlock_all"


def test_locker_unlock_pulse_is_in_10_ms_steps() -> None:
    pulse = load_profile("LCK-16").point("unlock_pulse")
    assert codec.decode(pulse, [50]) == 0.5


# -- EVSE-HEC (docs/devices.md#evse-hec) ---------------------------------------------------------


def test_charger_max_current_is_holding_261_in_tenths_of_an_amp() -> None:
    p = load_profile("EVSE-HEC").point("max_current")
    assert (p.table, p.address, p.scale, p.unit) == (Table.HOLDING, 261, 0.1, "A")
    assert p.poll is PollClass.SAFETY
    assert codec.encode(p, 16.0) == [160]


def test_charger_energy_is_a_high_word_first_u32() -> None:
    p = load_profile("EVSE-HEC").point("energy_total")
    assert (p.table, p.address) == (Table.INPUT, 17)
    assert codec.decode(p, [0x0001, 0x0002]) == 0x0001_0002


def test_charger_watchdog_rewrites_its_timeout() -> None:
    profile = load_profile("EVSE-HEC")
    wd = profile.watchdog
    assert wd is not None
    assert (wd.timeout, wd.heartbeat, wd.heartbeat_mode) == (
        "watchdog_timeout",
        "watchdog_timeout",
        "timeout",
    )
    assert profile.point(wd.timeout).address == 257
    assert wd.default_timeout_s / wd.timeout_unit_s == 15000  # register value, ms
    assert wd.remaining is not None
    assert profile.point(wd.remaining).address == 37
    assert wd.safe_value is not None
    assert profile.point(wd.safe_value).address == 262


def test_charger_fault_reset_writes_the_magic_value() -> None:
    commands = {c.name: c for c in load_profile("EVSE-HEC").commands}
    assert (commands["fault_reset"].point, commands["fault_reset"].value) == ("fault_reset", 0xA5)
    assert commands["disable_standby"].value == 4


# -- SunSpec inverter and meter (docs/devices.md#sunspec-inv, #sunspec-meter) -----------


def test_inverter_points_land_on_the_documented_addresses() -> None:
    profile = placed("SUNSPEC-INV", INVERTER_CHAIN)
    expected = {
        "mn": 40004,
        "da": 40068,
        "a": 40072,
        "w": 40084,
        "w_sf": 40085,
        "wh": 40094,
        "tmpcab": 40103,
        "st": 40108,
        "evt1": 40110,
        "wrtg": 40125,
        "wmax": 40152,
        "wmax_sf": 40172,
        "ecpconn": 40186,
        "conn": 40232,
        "wmaxlimpct": 40233,
        "wmaxlimpct_rvrttms": 40235,
        "wmaxlim_ena": 40237,
        "wmaxlimpct_sf": 40251,
    }
    assert {name: profile.point(name).address for name in expected} == expected


def test_inverter_controls_are_writable_and_measurements_are_not() -> None:
    profile = load_profile("SUNSPEC-INV")
    assert profile.point("wmaxlimpct").writable
    assert profile.point("conn").writable
    assert not profile.point("w").writable
    assert profile.watchdog is None


def test_meter_power_follows_model_1_directly() -> None:
    profile = placed("SUNSPEC-METER", [1, 203])
    assert profile.point("w").address == 40070 + 18
    assert profile.point("totwhimp").address == 40070 + 46
    assert profile.point("w").poll is PollClass.SAFETY


def test_sunspec_points_decode_with_their_scale_factor() -> None:
    w = load_profile("SUNSPEC-INV").point("w")
    assert codec.decode(w, [0xFFFF], scale_factor=1) == -10
    assert codec.decode(w, [0x8000], scale_factor=0) is None


# -- SIO-1 ------------------------------------------------------------------------------------


def test_safety_io_outputs_are_never_written_as_coils() -> None:
    profile = load_profile("SIO-1")
    coils = [p for p in profile.points if p.table is Table.COIL]
    assert [p.address for p in coils] == list(range(8))
    assert all(p.access is Access.R and p.poll is PollClass.SAFETY for p in coils)
    assert all(profile.point(c.point).table is Table.HOLDING for c in profile.commands)


def test_safety_io_claim_and_watchdog() -> None:
    profile = load_profile("SIO-1")
    commands = {c.name: c for c in profile.commands}
    assert commands["claim"].value == 0xC1A1
    assert profile.point(commands["claim"].point).address == 3
    assert profile.point(commands["set_outputs"].point).address == 2
    wd = profile.watchdog
    assert wd is not None
    assert profile.point(wd.heartbeat).address == 0
    assert wd.default_timeout_s / wd.timeout_unit_s == pytest.approx(500)  # HR 1 default, ms
    assert wd.remaining == "watchdog_remaining"
    assert wd.remaining_unit_s == 0.01
