"""The standard interlocks end to end: an input changed at a simulated device, the corrective
write observed at the simulated target device (docs/interlocks.md)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.devices.profile import Table
from gateway.errors import InterlockError
from gateway.site import SiteConfig, parse_site
from hil_tests.gateway_rig import Rig, rtu_bus, running, site_config, tcp_bus
from hil_tests.rig.sim.charger import Car, Charger
from hil_tests.rig.sim.meter import SiteMeter
from hil_tests.rig.sim.pv import PvInverter
from hil_tests.rig.site import to_toml

pytestmark = pytest.mark.hil

FAST = "safety = 0.1\ntelemetry = 0.5\nslow = 1"
OVERSPEED = 94  # table 1.3 → fault_bitmap bit 12


def with_safety(config: SiteConfig, safety: str) -> SiteConfig:
    return parse_site(to_toml(config) + "\n" + safety, "hil-site.toml")


async def sample_until(rig: Rig, seconds: float, probe: object) -> list[object]:
    """Call ``probe()`` every 10 ms for ``seconds``: what the devices hold over time."""
    assert callable(probe)
    seen = []
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        seen.append(probe())
        await asyncio.sleep(0.01)
    return seen


async def test_i2_export_over_the_limit_curtails_pv_in_steps_never_to_zero() -> None:
    config = with_safety(
        site_config(
            tcp_bus("pv") + tcp_bus("meter"),
            [("pv", "SUNSPEC-INV", "pv", 1), ("meter", "SUNSPEC-METER", "meter", 1)],
            poll=FAST,
        ),
        "[safety.export_limit]\nlimit_w = 1000\nperiod_s = 0.2\n",
    )
    async with running(config) as rig:
        pv, meter = rig.site.unit("pv"), rig.site.unit("meter")
        assert isinstance(pv, PvInverter)
        rated = pv.limit_w()
        limits = await sample_until(rig, 5.0, lambda: 100 * pv.limit_w() / rated)
        steps = [b for a, b in itertools.pairwise(limits) if b != a]
        assert len(steps) >= 3, f"curtailment in steps, got {steps}"
        previous = 100.0
        for pct in steps:
            assert pct >= 1.0, "a limit of 0 % puts some inverters in standby"
            assert pct >= previous * 0.8 - 0.1, f"{previous} → {pct}: more than 20 % at once"
            previous = pct
        assert isinstance(meter, SiteMeter)
        assert meter.w >= -1000 * 1.1, "export still above the limit"


async def test_i3_charger_setpoints_never_sum_above_the_feeder_limit() -> None:
    chargers = [(f"charger-{i}", "EVSE-HEC", "carport", i) for i in range(1, 4)]
    config = with_safety(
        site_config(
            rtu_bus("carport", 115200) + tcp_bus("meter"),
            [*chargers, ("meter", "SUNSPEC-METER", "meter", 1)],
            poll=FAST,
        ),
        "[safety.feeder_limit]\nlimit_a = 30\nperiod_s = 0.2\n",
    )
    async with running(config) as rig:
        units = [rig.site.unit(c[0]) for c in chargers]
        assert all(isinstance(u, Charger) for u in units)

        def total() -> float:
            return sum(u.get("max_current") for u in units)

        for u in units:
            u.plug_in(Car(max_current_a=32))  # type: ignore[attr-defined]
        await rig.wait_for(lambda: all(u.get("max_current") >= 6 for u in units), what="share")
        held = await sample_until(rig, 1.0, total)
        units[0].unplug()  # type: ignore[attr-defined]
        held += await sample_until(rig, 2.0, total)
        # the meter's 3 kW base load (4.3 A a phase) comes off the 30 A first
        assert max(held) <= 30.0 - 4.3, f"setpoints summed to {max(held)} A on a 30 A feeder"
        # the unplugged car's share goes to the other two, equally (a 3-way share is 8.5 A)
        await rig.wait_for(
            lambda: units[1].get("max_current") == units[2].get("max_current") > 10.0,
            what="the freed current shared fairly",
        )
        faults, unit_id = rig.site.faults_of("meter")
        faults.of(unit_id).dead = True  # a stale meter counts as an overload
        await rig.wait_for(
            lambda: all(u.get("max_current") == 0 for u in units), within=15, what="pause"
        )


async def test_i4_i5_standard_charger_interlocks_derate_and_lock_out() -> None:
    config = with_safety(
        site_config(rtu_bus("carport", 115200), [("charger", "EVSE-HEC", "carport", 1)], FAST),
        "[safety.charger_temperature]\nwarn_c = 60\ntrip_c = 80\nresume_c = 55\n"
        "[safety.charger_lockout]\n",
    )
    async with running(config) as rig:
        unit = rig.site.unit("charger")
        assert isinstance(unit, Charger)
        unit.cooling_per_s = unit.heat_per_a2 = 0.0
        unit.write(Table.HOLDING, 261, [160])
        await rig.wait_for(lambda: rig.gw.image.reading("charger", "max_current") == 16.0)
        unit.temperature_c = 70.0
        await rig.wait_for(lambda: unit.get("max_current") == 8.0, what="derate")
        unit.temperature_c = 85.0
        await rig.wait_for(lambda: unit.get("max_current") == 0.0, what="stop")
        unit.temperature_c = 30.0
        unit.plug_in()
        unit.weld_contactor()
        await rig.wait_for(lambda: unit.get("remote_lock") == 0, what="lockout")
        assert rig.gw.engine.rules["lockout-charger"].latched


async def test_i6_trapped_passenger_raises_the_top_alarm_and_requests_out_of_service() -> None:
    config = with_safety(
        site_config(rtu_bus("b1", 38400), [("lift", "ELV-24476", "b1", 1)], FAST),
        "[safety.trapped_passenger]\noccupied_s = 1.0\nconfirm_s = 0.5\n",
    )
    async with running(config) as rig:
        lift = rig.site.unit("lift")
        await rig.wait_for(lambda: rig.all_good("lift"))
        lift.trap_passengers(between_floors=True)  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
        assert "trapped-lift/critical" not in rig.gw.alarms.active, "before the confirmation"
        await rig.wait_for(lambda: "trapped-lift/critical" in rig.gw.alarms.active)
        await rig.wait_for(lambda: lift.get("req_out_of_service") == 1, what="out of service")
        lift.release()  # type: ignore[attr-defined]
        await rig.wait_for(lambda: "trapped-lift/critical" not in rig.gw.alarms.active)
        await rig.wait_for(lambda: lift.get("req_out_of_service") == 0, what="back in service")


async def test_i7_overspeed_takes_the_elevator_out_of_service_until_reset() -> None:
    config = with_safety(
        site_config(rtu_bus("b1", 38400), [("lift", "ELV-24476", "b1", 1)], FAST),
        "[safety.elevator_safety]\n",
    )
    async with running(config) as rig:
        lift = rig.site.unit("lift")
        await rig.wait_for(lambda: rig.all_good("lift"))
        lift.raise_fault(OVERSPEED)  # type: ignore[attr-defined]
        await rig.wait_for(lambda: lift.get("req_out_of_service") == 1, what="out of service")
        lift.clear_fault(OVERSPEED)  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
        assert lift.get("req_out_of_service") == 1, "no automatic return to service"
        await rig.wait_for(lambda: rig.gw.image.reading("lift", "fault_bitmap") == 0)
        rig.gw.engine.reset("elevator-safety-lift", by="technician")
        await rig.wait_for(lambda: lift.get("req_out_of_service") == 0, what="after reset")


async def test_i8_i10_comm_loss_and_pv_faults_are_alarmed_once_and_cleared() -> None:
    config = with_safety(
        site_config(
            rtu_bus("b1", 115200) + tcp_bus("pv"),
            [("lift", "ELV-24476", "b1", 1), ("pv", "SUNSPEC-INV", "pv", 1)],
            FAST,
        ),
        "[safety.comm_loss]\n[safety.pv_faults]\n",
    )
    async with running(config) as rig:
        await rig.wait_for(lambda: rig.all_good("lift") and rig.all_good("pv"))
        faults, unit_id = rig.site.faults_of("lift")
        faults.of(unit_id).dead = True
        await rig.wait_for(lambda: "comm-loss/lift" in rig.gw.alarms.active, what="offline")
        faults.of(unit_id).dead = False
        await rig.wait_for(lambda: "comm-loss/lift" not in rig.gw.alarms.active, within=40)
        raised = [e for e in rig.gw.alarms.recent if e.key == "comm-loss/lift"]
        assert [e.kind for e in raised] == ["raised", "cleared"]
        rig.site.unit("pv").raise_event(0)  # type: ignore[attr-defined]  # GROUND_FAULT
        await rig.wait_for(lambda: "pv-fault-pv/minor" in rig.gw.alarms.active)


async def test_i1_fire_alarm_at_the_sio_stops_chargers_pv_and_recalls_the_elevator() -> None:
    config = with_safety(
        site_config(
            rtu_bus("sio", 115200) + rtu_bus("b1", 115200) + tcp_bus("pv") + tcp_bus("meter"),
            [
                ("sio", "SIO-1", "sio", 1),
                ("lift", "ELV-24476", "b1", 1),
                ("lockers", "LCK-16", "b1", 2),
                ("charger", "EVSE-HEC", "b1", 3),
                ("pv", "SUNSPEC-INV", "pv", 1),
                ("meter", "SUNSPEC-METER", "meter", 1),
            ],
            FAST,
        ),
        "[safety.fire_alarm]\nrecall_timeout_s = 60\n",
    )
    async with running(config) as rig:
        board = rig.site.boards["sio"]
        charger, lift, pv = rig.site.unit("charger"), rig.site.unit("lift"), rig.site.unit("pv")
        charger.write(Table.HOLDING, 261, [160])
        await rig.wait_for(lambda: board.state_name == "CLAIMED", what="the SIO-1 claimed")
        await rig.wait_for(lambda: board.outputs == 0b0011, what="feeder on, keep-alive on")
        await rig.wait_for(lambda: rig.all_good("lockers"))
        board.set_input("fire_alarm_loop", False)
        await rig.wait_for(lambda: board.outputs == 0b1100, what="feeder off, RSD, recall, sounder")
        await rig.wait_for(lambda: charger.get("max_current") == 0.0, what="chargers 0 A")
        await rig.wait_for(lambda: charger.get("remote_lock") == 0, what="chargers locked")
        await rig.wait_for(lambda: pv.get("conn") == 0, what="PV disconnected")
        await rig.wait_for(lambda: lift.get("req_fire_recall") == 1, what="fire recall requested")
        assert "fire-alarm/critical" in rig.gw.alarms.active
        loop = rig.gw.stats().loop  # what the health message tells the fleet and a rollout
        assert loop["interlocks_active"] == 1
        assert loop["interlocks_active_names"] == "fire-alarm"
        with pytest.raises(InterlockError, match="deposits are suspended by fire-alarm"):
            await rig.gw.commands.open_door("lockers", 3, purpose="deposit")
        await rig.gw.commands.open_door("lockers", 3, purpose="pickup")
        board.set_input("fire_alarm_loop", True)
        await rig.wait_for(lambda: board.outputs == 0b0011, what="relays back to normal")
        await rig.wait_for(lambda: lift.get("req_fire_recall") == 0, what="recall cancelled")
        await rig.wait_for(lambda: charger.get("remote_lock") == 1, what="chargers unlocked")
        await rig.wait_for(lambda: pv.get("conn") == 1, what="PV reconnected")
        assert charger.get("max_current") == 0.0, "no setpoint is replayed after the fire"
