"""Interlocks swapped between two cycles (InterlockEngine.replace, what an apply in place
does): a latched interlock that still exists keeps its latch and holds its demands, one that
is removed lets go of its demands and alarms, a new one waits out the start-up grace."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.control.actuator import Actuator
from gateway.control.alarms import AlarmLog
from gateway.control.engine import InterlockEngine, RuleRuntime
from gateway.devices.roles import Role
from gateway.image import ProcessImage
from gateway.site import SiteConfig, parse_site

SITE = """[gateway]
site = "s1"
id = "gw-1"

[[buses]]
name = "b1"
kind = "tcp"
host = "127.0.0.1"
port = 1502
{devices}
{safety}
"""
CHARGER = '\n[[devices]]\nname = "{name}"\nprofile = "EVSE-HEC"\nbus = "b1"\nunit_id = {unit}\n'
SAFETY = "\n[safety.charger_lockout]\n"
TEMPERATURE = "\n[safety.charger_temperature]\ntrip_c = 80\n"


def site(chargers: int, safety: str) -> SiteConfig:
    devices = "".join(CHARGER.format(name=f"c{i}", unit=i) for i in range(1, chargers + 1))
    return parse_site(SITE.format(devices=devices, safety=safety), "site.toml")


def demands_of(actuator: Actuator, source: str) -> list[tuple[str, str]]:
    return [key for key, t in actuator.targets.items() if source in t.demands]


def test_latches_survive_removed_interlocks_let_go_new_ones_wait(tmp_path: Path) -> None:
    old = site(2, SAFETY + TEMPERATURE)
    profiles = {d.name: old.profile(d) for d in old.devices}
    image, alarms = ProcessImage(), AlarmLog(None)
    actuator = Actuator(image)
    latches = tmp_path / "latches.json"
    engine = InterlockEngine(old.all_interlocks(), profiles, image, actuator, alarms, latches)
    engine.arm(0.0)
    charger = profiles["c1"]
    rcd = charger.roles[Role.CHARGER_RESIDUAL_CURRENT]
    enum = charger.point(rcd.names[0]).enum or {}
    fault = next(code for code, label in enum.items() if label not in rcd.ok)
    for name in rcd.names:
        image.update("c1", name, fault)  # a residual-current trip on c1
    temperature = charger.roles[Role.CHARGER_TEMPERATURE].names[0]
    image.update("c2", temperature, 95.0)  # c2 too hot
    now = time.monotonic()
    engine.tick(now, 0.05)
    assert engine.rules["lockout-c1"].latched
    assert engine.rules["overtemp-stop-c2"].active
    assert demands_of(actuator, "lockout-c1")
    assert demands_of(actuator, "overtemp-stop-c2")
    assert any(k.startswith("overtemp-stop-c2/") for k in alarms.active)

    new = site(2, SAFETY)  # the temperature interlocks go; the lockout stays
    new_profiles = {d.name: new.profile(d) for d in new.devices}
    rules = {spec.name: RuleRuntime(spec, new_profiles) for spec in new.all_interlocks()}
    engine.replace(rules, new_profiles, arm_new_at=now + 3.0)

    assert engine.rules["lockout-c1"].latched  # the latch survives
    assert engine.rules["lockout-c1"].active
    assert demands_of(actuator, "lockout-c1")  # and it still holds c1
    assert "overtemp-stop-c2" not in engine.rules
    assert demands_of(actuator, "overtemp-stop-c2") == []  # back to its release value
    assert not any(k.startswith("overtemp-stop-c2/") for k in alarms.active)
    assert json.loads(latches.read_text())["latched"] == ["lockout-c1"]

    grown = site(3, SAFETY)  # a charger added: its lockout waits for c3 to be read
    grown_profiles = {d.name: grown.profile(d) for d in grown.devices}
    rules = {spec.name: RuleRuntime(spec, grown_profiles) for spec in grown.all_interlocks()}
    engine.replace(rules, grown_profiles, arm_new_at=now + 3.0)
    engine.tick(now + 1.0, 0.05)
    assert not engine.rules["lockout-c3"].active  # c3 not read yet: the grace holds it
    assert engine.rules["lockout-c1"].latched
    engine.tick(now + 3.5, 0.05)
    assert engine.rules["lockout-c3"].active  # still never read after the grace: tripped
