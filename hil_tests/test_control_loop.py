"""Interlocks and watchdogs end to end: a change at a simulated device, the corrective write
landing at another, and devices falling back on their own when the control loop stalls."""

from __future__ import annotations

import pytest

from gateway.profile import Table
from hil_tests.conftest import rtu_bus, running, site_config, tcp_bus

pytestmark = pytest.mark.hil

OVERTEMP = """
[[interlocks]]
name = "charger-hot"
when = { point = "charger.temperature", gt = 60.0, hysteresis = 5.0 }
actions = [
  { write = "charger.max_current", value = 8.0, limit = true, priority = 3 },
  { alarm = "minor", message = "charger over temperature: derated to 8 A" },
]
"""


def _site(extra: str = "", poll: str = "safety = 0.1\ntelemetry = 0.5\nslow = 1") -> object:
    config = site_config(
        rtu_bus("carport", 115200) + tcp_bus("lan"),
        [("charger", "EVSE-HEC", "carport", 1), ("charger-tcp", "EVSE-HEC", "lan", 1)],
        poll=poll,
    )
    if not extra:
        return config
    from gateway.site import parse_site
    from hil_tests.rig.site import to_toml

    return parse_site(to_toml(config) + extra, "hil-site.toml")


async def test_an_overheating_charger_is_derated_and_restored_with_hysteresis() -> None:
    config = _site(OVERTEMP)
    async with running(config) as rig:  # type: ignore[arg-type]
        unit = rig.site.unit("charger")
        unit.cooling_per_s = unit.heat_per_a2 = 0.0  # the test sets the temperature
        unit.write(Table.HOLDING, 261, [160])  # 16 A set by the operator
        await rig.wait_for(lambda: rig.gw.image.value("charger", "max_current") == 16.0)
        unit.temperature_c = 65.0
        await rig.wait_for(lambda: unit.get("max_current") == 8.0, what="derating to 8 A")
        assert "charger-hot/minor" in rig.gw.alarms.active
        unit.temperature_c = 58.0  # inside the hysteresis band: stays derated
        await rig.wait_for(lambda: rig.gw.image.value("charger", "temperature") == 58.0)
        await rig.wait_for(lambda: rig.gw.engine.rules["charger-hot"].truth.name == "TRUE")
        assert rig.gw.alarms.active
        unit.temperature_c = 50.0
        await rig.wait_for(lambda: not rig.gw.alarms.active, what="the alarm to clear")
        assert unit.get("max_current") == 8.0, "released limits leave the device as it is"


async def test_a_stalled_control_loop_lets_every_charger_fall_back_on_its_own() -> None:
    async with running(_site()) as rig:  # type: ignore[arg-type]
        for name in ("charger", "charger-tcp"):
            await rig.gw.write(name, "watchdog_timeout", 1500)
        units = [rig.site.unit("charger"), rig.site.unit("charger-tcp")]
        await rig.wait_for(lambda: all(u.get("watchdog_timeout") == 1500 for u in units))
        await rig.wait_for(lambda: all(not u.failsafe for u in units), within=3)
        for _ in range(30):  # heartbeats keep them managed for 3 s, two timeouts
            await rig.wait_for(lambda: True, within=0.1)
            assert not any(u.failsafe for u in units), "a heartbeat was missed"
        rig.gw.supervisor.inject_stall(4.0)
        await rig.wait_for(
            lambda: all(u.failsafe for u in units), within=1.5 + 1.0, what="failsafe"
        )
        assert rig.gw.image.value("charger", "max_current") is not None, "polling goes on"
        await rig.wait_for(lambda: not any(u.failsafe for u in units), within=6, what="resume")
