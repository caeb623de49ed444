"""Devices from the market (KEBA, Alfen, Huawei, Sungrow, CHINT, Eastron), each simulated from
its own profile file: polled over RTU and TCP to the simulator's ground truth, their own
fail-safes, and the standard interlocks on a site that mixes charger models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.devices import codec
from gateway.devices.profile import Table
from gateway.devices.roles import Role
from gateway.image import Quality
from gateway.site import SiteConfig, load_site, parse_site
from hil_tests.gateway_rig import rtu_bus, running, site_config, tcp_bus, truth
from hil_tests.rig.sim.charger import Car, Charger
from hil_tests.rig.sim.market import (
    AlfenSocket,
    KebaP30,
    MarketCharger,
    MarketInverter,
    MarketMeter,
)
from hil_tests.rig.site import to_toml

pytestmark = pytest.mark.hil

MARKET = [
    "CHINT-DTSU666",
    "EASTRON-SDM630",
    "HUAWEI-SUN2000",
    "SUNGROW-SG-RT",
    "KEBA-P30",
    "ALFEN-NG9XX",
]
FAST = "safety = 0.1\ntelemetry = 0.3\nslow = 0.3"


def with_safety(config: SiteConfig, safety: str) -> SiteConfig:
    return parse_site(to_toml(config) + "\n" + safety, "hil-site.toml")


async def test_every_market_profile_reads_the_simulators_ground_truth_over_rtu_and_tcp() -> None:
    devices = [(f"rtu-{i}", m, "line", i) for i, m in enumerate(MARKET, start=1)]
    devices += [(f"tcp-{i}", m, f"lan-{i}", 1) for i, m in enumerate(MARKET, start=1)]
    buses = rtu_bus("line", 115200) + "".join(tcp_bus(f"lan-{i}") for i in range(1, 7))
    config = site_config(buses, devices, poll=FAST)
    async with running(config) as rig:
        names = [d[0] for d in devices]
        await rig.wait_for(
            lambda: all(rig.all_good(n) for n in names), within=20, what="every point GOOD"
        )
        rig.site.paused = True
        await asyncio.sleep(1.0)  # one more full cycle of every class after the freeze
        compared = 0
        for device in names:
            unit = rig.site.unit(device)
            for _, point, sample in rig.gw.image.points(device):
                assert sample.quality is Quality.GOOD, f"{device}.{point}"
                assert sample.value == truth(unit, point), f"{device}.{point}"
                compared += 1
        assert compared >= 2 * 110


async def test_a_site_mixing_charger_models_shares_the_feeder_and_stops_all_on_fire() -> None:
    config = with_safety(
        site_config(
            rtu_bus("sio", 115200) + rtu_bus("carport", 115200) + tcp_bus("lan"),
            [
                ("sio", "SIO-1", "sio", 1),
                ("heidelberg", "EVSE-HEC", "carport", 1),
                ("keba", "KEBA-P30", "lan", 255),
                ("alfen", "ALFEN-NG9XX", "lan", 1),
                ("meter", "CHINT-DTSU666", "carport", 9),
                ("pv", "SUNGROW-SG-RT", "lan", 2),
            ],
            FAST,
        ),
        "[safety.feeder_limit]\nlimit_a = 40\nperiod_s = 0.2\n"
        "[safety.fire_alarm]\nrecall_timeout_s = 60\n",
    )
    async with running(config) as rig:
        board = rig.site.boards["sio"]
        hec = rig.site.unit("heidelberg")
        keba, alfen = rig.site.unit("keba"), rig.site.unit("alfen")
        pv = rig.site.unit("pv")
        assert isinstance(hec, Charger)
        assert isinstance(keba, KebaP30)
        assert isinstance(alfen, AlfenSocket)
        assert isinstance(pv, MarketInverter)
        hec.plug_in(Car(max_current_a=32))
        keba.plug_in(32)
        alfen.plug_in(32)

        def setpoints() -> list[float]:
            return [
                float(hec.get("max_current") or 0),
                float(keba.get("set_current") or 0),
                float(alfen.get("max_current") or 0),
            ]

        await rig.wait_for(lambda: min(setpoints()) >= 6, within=15, what="every model shares")
        # the meter's 3 kW base load (4.3 A a phase) and the PV's feed-in share the 40 A
        for _ in range(20):
            assert sum(setpoints()) <= 40.0 + 1e-6, setpoints()
            await asyncio.sleep(0.05)
        await rig.wait_for(lambda: board.state_name == "CLAIMED", what="the SIO-1 claimed")
        board.set_input("fire_alarm_loop", False)
        await rig.wait_for(
            lambda: float(hec.get("max_current") or 0) == float(alfen.get("max_current") or 0) == 0,
            what="the Heidelberg and the Alfen at 0 A",
        )
        # the KEBA takes no 0 A (6000..63000 mA): it is stopped by its lock
        await rig.wait_for(lambda: keba.is_label("enable", "disabled"), what="the KEBA locked")
        await rig.wait_for(lambda: hec.get("remote_lock") == 0, what="the Heidelberg locked")
        await rig.wait_for(lambda: pv.is_label("start_stop", "stop"), what="the Sungrow stopped")
        await rig.wait_for(lambda: all(u.current_a == 0 for u in (keba, alfen)), what="no current")
        assert all(v >= 6 for n, v in keba.written if n == "set_current"), keba.written


async def test_a_feeder_pause_locks_a_keba_instead_of_writing_0_a() -> None:
    config = with_safety(
        site_config(
            tcp_bus("lan") + rtu_bus("meter", 115200),
            [("keba", "KEBA-P30", "lan", 255), ("meter", "EASTRON-SDM630", "meter", 1)],
            poll=FAST,
        ),
        "[safety.feeder_limit]\nlimit_a = 16\nperiod_s = 0.2\n",
    )
    async with running(config) as rig:
        keba = rig.site.unit("keba")
        assert isinstance(keba, KebaP30)
        keba.plug_in(32)
        await rig.wait_for(lambda: keba.current_a >= 6, within=15, what="charging")
        # 5 kW more base load: 16 A - 11.6 A leaves less than 6 A: a pause
        meter = rig.site.unit("meter")
        assert isinstance(meter, MarketMeter)
        meter.base_load_w = 8000.0
        await rig.wait_for(lambda: keba.is_label("enable", "disabled"), what="paused by its lock")
        await rig.wait_for(lambda: keba.current_a == 0.0, what="no current while paused")
        meter.base_load_w = 3000.0
        await rig.wait_for(lambda: keba.is_label("enable", "enabled"), what="unlocked again")
        await rig.wait_for(lambda: keba.current_a >= 6, what="charging again")
        assert all(v >= 6 for n, v in keba.written if n == "set_current"), keba.written


async def test_keba_falls_to_its_failsafe_current_when_no_write_arrives() -> None:
    config = site_config(tcp_bus("lan"), [("keba", "KEBA-P30", "lan", 255)], poll=FAST)
    async with running(config) as rig:
        keba = rig.site.unit("keba")
        assert isinstance(keba, KebaP30)
        await rig.wait_for(lambda: rig.all_good("keba"), what="the KEBA read")
        keba.plug_in(32)
        keba.write(*_write_of(keba, "failsafe_timeout", 2))  # commissioned: 2 s, 0 A
        keba.write(*_write_of(keba, "set_current", 16.0))
        await rig.wait_for(lambda: keba.current_a == 16.0, what="charging at 16 A")
        # the gateway rewrites the timeout it reads at 1602 within a third of it
        await asyncio.sleep(3.0)
        assert keba.current_a == 16.0, "the gateway's heartbeat keeps the KEBA from failsafe"
        assert ("failsafe_timeout", 2) in keba.written
    keba.advance(asyncio.get_running_loop().time() + 1e6)  # the gateway is gone
    assert keba.current_a == 0.0
    assert keba.failsafe


async def test_alfen_setpoint_is_kept_alive_and_falls_back_to_its_safe_current() -> None:
    config = with_safety(
        site_config(
            tcp_bus("lan") + tcp_bus("m"),
            [("alfen", "ALFEN-NG9XX", "lan", 1), ("meter", "EASTRON-SDM630", "m", 1)],
            poll=FAST,
        ),
        "[safety.feeder_limit]\nlimit_a = 20\nperiod_s = 0.2\n",
    )
    profile = config.profile_library.get("ALFEN-NG9XX")
    setpoint = profile.role(Role.CHARGER_CURRENT_SETPOINT)
    assert setpoint is not None
    assert setpoint.keep_alive_s == 60
    async with running(config) as rig:
        alfen = rig.site.unit("alfen")
        assert isinstance(alfen, AlfenSocket)
        alfen.plug_in(32)
        # before the gateway writes, the socket runs on its safe current
        assert alfen.failsafe
        await rig.wait_for(
            lambda: alfen.is_label("setpoint_accounted_for", "yes") and alfen.current_a >= 6,
            within=15,
            what="charging on the gateway's setpoint",
        )
        first = len([w for w in alfen.written if w[0] == "max_current"])
        # the gateway rewrites the setpoint at a third of the valid time, whoever demands it
        assert rig.gw.engine.actuator.targets[("alfen", "max_current")].refresh_s == 20
    # without the gateway the valid time runs out and the safe current (6 A) applies
    alfen.advance(asyncio.get_running_loop().time() + 61)
    assert alfen.failsafe
    assert alfen.current_a == 6.0
    assert first >= 1


def _write_of(unit: MarketCharger, name: str, value: float) -> tuple[Table, int, list[int]]:
    p = unit.point(name)
    assert p.address is not None
    return p.table, p.address, codec.encode(p, value)


@pytest.mark.parametrize("inverter", ["SUNGROW-SG-RT", "HUAWEI-SUN2000"])
async def test_export_limit_curtails_a_non_sunspec_inverter_through_its_roles(
    inverter: str,
) -> None:
    config = with_safety(
        site_config(
            tcp_bus("pv") + rtu_bus("meter", 115200),
            [("pv", inverter, "pv", 1), ("meter", "CHINT-DTSU666", "meter", 1)],
            poll=FAST,
        ),
        "[safety.export_limit]\nlimit_w = 1000\nperiod_s = 0.2\n",
    )
    async with running(config) as rig:
        pv = rig.site.unit("pv")
        assert isinstance(pv, MarketInverter)
        pv.available_w = 8000.0  # 5 kW over the 3 kW base load: 4 kW too much export
        await rig.wait_for(lambda: pv.w < 8000, within=15, what="curtailment starts")
        await rig.wait_for(lambda: pv.w <= 4000 * 1.1, within=20, what="export under the limit")
        limit = pv.profile.role_point(Role.PV_POWER_LIMIT_PCT)
        assert limit is not None
        assert float(pv.get(limit) or 0) >= 1.0, "never curtailed to 0 %"
        if enable := pv.profile.role(Role.PV_POWER_LIMIT_ENABLE):
            assert pv.is_label(enable.names[0], enable.on), "the limit switched on"


async def test_a_sites_own_profile_is_simulated_and_polled_like_a_shipped_one(
    tmp_path: Path,
) -> None:
    """The complaint that started it: a 50-register test device, without touching the
    installed package: a file in the site's profile directory, checked and polled."""
    points = ",\n".join(
        f'  {{ name = "r{i}", label = "Register {i}", table = "input", address = {i}, '
        f'type = "u16", scale = 0.1, unit = "V" }}'
        for i in range(50)
    )
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "TEST-50.toml").write_text(
        f'model = "TEST-50"\nkind = "meter"\ndescription = "a 50-register test device"\n'
        f"points = [\n{points},\n]\n",
        encoding="utf-8",
    )
    site_file = tmp_path / "site.toml"
    site_file.write_text(
        'profile_dirs = ["profiles"]\n'
        + to_toml(
            site_config(
                rtu_bus("line", 115200) + tcp_bus("lan"),
                [("test-rtu", "SUNSPEC-METER", "line", 1), ("test-tcp", "SUNSPEC-METER", "lan", 1)],
                poll=FAST,
            )
        ).replace('"SUNSPEC-METER"', '"TEST-50"'),
        encoding="utf-8",
    )
    config = load_site(site_file)
    async with running(config) as rig:
        await rig.wait_for(
            lambda: rig.all_good("test-rtu") and rig.all_good("test-tcp"), what="every point GOOD"
        )
        for device in ("test-rtu", "test-tcp"):
            unit = rig.site.unit(device)
            samples = list(rig.gw.image.points(device))
            assert len(samples) == 50
            for _, point, sample in samples:
                assert sample.value == truth(unit, point), f"{device}.{point}"
