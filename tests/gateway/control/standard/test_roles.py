"""The standard interlocks through profile roles: the same protection for every model, an
error naming the device and the role when a profile cannot give what an interlock needs, and
a note when a device cannot do something an interlock would do with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.control.standard.interlocks import (
    ChargerTemperature,
    FeederLimit,
    FireAlarm,
    Safety,
    Scope,
    build,
    capability_notes,
    role_problems,
)
from gateway.devices.profile import Profile, load_profile, parse_profile
from gateway.errors import ProfileError

MIXED: dict[str, Profile] = {
    "sio": load_profile("SIO-1"),
    "heidelberg": load_profile("EVSE-HEC"),
    "keba": load_profile("KEBA-P30"),
    "alfen": load_profile("ALFEN-NG9XX"),
    "meter": load_profile("CHINT-DTSU666"),
    "pv": load_profile("HUAWEI-SUN2000"),
}


def test_fire_alarm_stops_every_charger_model_through_its_own_setpoint_and_lock() -> None:
    [fire] = build(Safety(fire_alarm=FireAlarm()), MIXED)
    writes = {(a.write, a.value) for a in fire.actions if getattr(a, "write", None)}
    assert ("heidelberg.max_current", 0.0) in writes
    assert not any(w == "keba.set_current" for w, _ in writes), "KEBA takes no 0 A: its lock"
    assert ("alfen.max_current", 0.0) in writes
    assert ("heidelberg.remote_lock", "locked") in writes
    assert ("keba.enable", "disabled") in writes
    assert ("pv.derating_pct", 0) in writes
    assert fire.precaution == (
        "chargers held at 0 A, PV capped at 0 %, charger feeder off, PV rapid shutdown, sounder on"
    )


def test_a_charger_lacking_a_role_an_enabled_interlock_needs_is_an_error_naming_both() -> None:
    problems = role_problems(Safety(charger_temperature=ChargerTemperature()), MIXED)
    assert any(
        p.startswith(
            "safety.charger_temperature: keba (profile KEBA-P30) has no role 'charger_temperature'"
        )
        for p in problems
    ), problems
    assert not any("heidelberg" in p for p in problems)
    scoped = Safety(charger_temperature=ChargerTemperature(devices=["heidelberg"]))
    assert role_problems(scoped, MIXED) == []


def test_feeder_limit_needs_the_meters_phase_currents() -> None:
    meterless = {**MIXED, "meter": load_profile("SUNSPEC-METER")}
    assert role_problems(Safety(feeder_limit=FeederLimit(limit_a=63)), meterless) == []
    assert role_problems(Safety(feeder_limit=FeederLimit(limit_a=63)), MIXED) == []


def test_gateway_check_notes_say_what_a_device_cannot_do() -> None:
    notes = capability_notes(
        Safety(fire_alarm=FireAlarm(), charger_lockout=Scope(devices=["heidelberg"])), MIXED
    )
    assert any(n.startswith("alfen (ALFEN-NG9XX) has no remote lock") for n in notes), notes
    assert any(n.startswith("pv (HUAWEI-SUN2000) cannot be disconnected remotely") for n in notes)
    assert any("pv (HUAWEI-SUN2000) has no communication watchdog" in n for n in notes)
    # KEBA's failsafe timeout and Alfen's kept-alive setpoint are fail-safes of their own
    assert not any("keba" in n and "watchdog" in n for n in notes)
    assert not any("alfen" in n and "watchdog" in n for n in notes)
    assert not any(n.startswith("heidelberg") for n in notes)


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ('charger_current_setpoint = { point = "state" }', "is in table input, the role writes it"),
        ('charger_state = { point = "state", active = ["flying"] }', "'flying' is not a label"),
        ('charger_lock = { point = "setpoint" }', "needs 'on'"),
        (
            'meter_grid_power = { point = "setpoint" }',
            "a role of a meter, this profile is a charger",
        ),
        ('charger_phase_currents = { point = "setpoint" }', "needs 3 points"),
        ('charger_state = { point = "setpoint", active = ["x"] }', "needs an enum or text"),
    ],
)
def test_a_wrong_role_binding_fails_when_the_profile_loads(roles: str, expected: str) -> None:
    states = '{ 0 = "idle", 1 = "charging" }'
    text = f"""
model = "TEST-CHARGER"
kind = "charger"
description = "a test charger"
points = [
  {{ name = "state", table = "input", address = 0, type = "enum", enum = {states} }},
  {{ name = "setpoint", table = "holding", address = 0, type = "u16", scale = 0.1 }},
]
[roles]
{roles}
"""
    with pytest.raises(ProfileError, match=expected):
        parse_profile(text, "TEST-CHARGER.toml")


def test_gateway_check_prints_what_each_device_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[gateway]\nsite = "carport"\nid = "gw-1"\n[safety.fire_alarm]\n'
        '[[buses]]\nname = "lan"\nkind = "tcp"\nhost = "10.0.0.2"\n'
        '[[devices]]\nname = "alfen"\nprofile = "ALFEN-NG9XX"\nbus = "lan"\nunit_id = 1\n'
        '[[devices]]\nname = "keba"\nprofile = "KEBA-P30"\nbus = "lan"\nunit_id = 255\n',
        encoding="utf-8",
    )
    assert main(["check", str(site)]) == 0
    out = capsys.readouterr().out
    assert "! alfen (ALFEN-NG9XX) has no remote lock" in out
    assert "keba" not in out.split("\n", 1)[1], "the KEBA can do all fire_alarm asks"
