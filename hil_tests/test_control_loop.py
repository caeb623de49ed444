"""Interlocks and watchdogs end to end: a change at a simulated device, the corrective write
landing at another, and devices falling back on their own when the control loop stalls."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.devices.profile import Table
from gateway.site import SiteConfig, parse_site
from hil_tests.gateway_rig import gateway_cli, rtu_bus, running, site_config, tcp_bus
from hil_tests.rig.site import to_toml

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


RCD_LOCKOUT = """
[[interlocks]]
name = "rcd-lockout"
when.any = [
  { point = "charger.residual_current_status", ne = "ok" },
  { point = "charger.contactor", eq = "welded" },
]
latch = true
# the charger clears its own latch only with the fault gone and the car unplugged (I5)
reset_when = { point = "charger.lockout_latched", eq = 0 }
actions = [
  { write = "charger.max_current", value = 0.0, limit = true, priority = 3 },
  { write = "charger.remote_lock", value = "locked", release = "unlocked", priority = 3 },
  { alarm = "major", message = "residual current / welded contactor: charger locked out" },
]
"""


def _site(extra: str = "", poll: str = "safety = 0.1\ntelemetry = 0.5\nslow = 1") -> SiteConfig:
    config = site_config(
        rtu_bus("carport", 115200) + tcp_bus("lan"),
        [("charger", "EVSE-HEC", "carport", 1), ("charger-tcp", "EVSE-HEC", "lan", 1)],
        poll=poll,
    )
    return parse_site(to_toml(config) + extra, "hil-site.toml") if extra else config


async def test_an_overheating_charger_is_derated_and_restored_with_hysteresis() -> None:
    config = _site(OVERTEMP)
    async with running(config) as rig:
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
    async with running(_site()) as rig:
        for name in ("charger", "charger-tcp"):
            await rig.gw.commands.write(name, "watchdog_timeout", 1500)
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


async def test_a_residual_current_lockout_latches_until_a_technician_resets_it(
    tmp_path: Path,
) -> None:
    async with running(_site(RCD_LOCKOUT), state_dir=tmp_path) as rig:
        unit = rig.site.unit("charger")
        await rig.wait_for(lambda: rig.gw.image.value("charger", "remote_lock") == 1)
        unit.plug_in()
        unit.trip_rcd("ac")
        await rig.wait_for(lambda: unit.get("remote_lock") == 0, what="remote lock (state F)")
        assert "rcd-lockout/major" in rig.gw.alarms.active
        refused = await gateway_cli("reset-latch", "rcd-lockout", "--state-dir", str(tmp_path))
        assert refused.returncode == 1
        assert "fault is still present (charger.residual_current_status is" in refused.stdout
        unit.clear_rcd()
        await rig.wait_for(lambda: rig.gw.image.value("charger", "residual_current_status") == 0)
        refused = await gateway_cli("reset-latch", "rcd-lockout", "--state-dir", str(tmp_path))
        # it names the exact part of the reset condition that is not met
        assert "charger.lockout_latched is 1, expected 0" in refused.stdout, refused.stdout
        assert rig.gw.engine.rules["rcd-lockout"].latched
        unit.unplug()
        await rig.gw.commands.command("charger", "fault_reset")  # accepted now: no fault, no car
        await rig.wait_for(lambda: rig.gw.image.value("charger", "lockout_latched") == 0)
        done = await gateway_cli("reset-latch", "rcd-lockout", "--state-dir", str(tmp_path))
        assert done.returncode == 0, done.stdout
        await rig.wait_for(lambda: unit.get("remote_lock") == 1, what="unlocked after reset")
    history = await gateway_cli("alarms", "--history", "--state-dir", str(tmp_path))
    assert "raised" in history.stdout
    assert "cleared" in history.stdout
    assert "rcd-lockout" in history.stdout
