"""``kill -9`` of a running gateway: every simulated device falls back on its own timeout,
and a restarted gateway keeps its latches without replaying anything before read-back."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.site import parse_site
from hil_tests.gateway_rig import rtu_bus, site_config, tcp_bus
from hil_tests.rig.sim.charger import Charger
from hil_tests.rig.sim.elevator import Elevator
from hil_tests.rig.sim.pv import PvInverter
from hil_tests.rig.site import SimulatedSite, to_toml

pytestmark = pytest.mark.hil

SAFETY = """
[safety.export_limit]
limit_w = 1000
period_s = 0.2
revert_s = 3
[safety.trapped_passenger]
occupied_s = 0.5
confirm_s = 0.2
[safety.charger_lockout]
"""
WATCHDOGS = {"charger": 2.0, "lift": 3.0, "sio": 0.5}


def _config() -> str:
    config = site_config(
        rtu_bus("b1", 115200) + rtu_bus("usb", 115200) + tcp_bus("pv") + tcp_bus("meter"),
        [
            ("sio", "SIO-1", "usb", 1),
            ("charger", "EVSE-HEC", "b1", 1),
            ("lift", "ELV-24476", "b1", 2),
            ("pv", "SUNSPEC-INV", "pv", 1),
            ("meter", "SUNSPEC-METER", "meter", 1),
        ],
        poll="safety = 0.1\ntelemetry = 0.5\nslow = 1",
    )
    text = to_toml(config)
    for name, seconds in WATCHDOGS.items():
        text = text.replace(
            f'name = "{name}"\n', f'name = "{name}"\nwatchdog_timeout_s = {seconds}\n'
        )
    return text + SAFETY


async def _until(condition: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _start_gateway(config: Path, state: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
        "--state-dir", str(state),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "COLUMNS": "200"},
    )  # fmt: skip


async def test_kill_9_leaves_every_device_to_fall_back_within_its_own_timeout(
    tmp_path: Path,
) -> None:
    site_cfg = parse_site(_config(), "kill.toml")
    async with SimulatedSite(site_cfg, lively=False) as site:
        charger, lift, pv = site.unit("charger"), site.unit("lift"), site.unit("pv")
        assert isinstance(charger, Charger)
        assert isinstance(lift, Elevator)
        assert isinstance(pv, PvInverter)
        resolved = tmp_path / "site.toml"
        resolved.write_text(to_toml(site.resolved()))
        gw = await _start_gateway(resolved, tmp_path / "state")
        try:
            await _until(lambda: charger.get("watchdog_timeout") == 2000, 15, "charger managed")
            await _until(lambda: lift.get("gw_watchdog_timeout") == 3, 15, "lift managed")
            lift.trap_passengers()
            await _until(lambda: lift.get("req_out_of_service") == 1, 10, "out of service")
            await _until(lambda: pv.limit_w() < 9000, 10, "PV curtailed")
            board = site.boards["sio"]
            await _until(lambda: board.outputs == 0b0011, 10, "SIO-1 claimed, relays on")
            await asyncio.sleep(3.0)  # longer than every timeout: heartbeats keep them managed
            assert not charger.failsafe
            assert lift.get("req_out_of_service") == 1
            assert pv.limit_w() < 9000
            assert board.outputs == 0b0011
        finally:
            gw.send_signal(signal.SIGKILL)
            await gw.wait()
        margin = 1.0  # the simulators' own tick and the last heartbeat's age
        await _until(lambda: board.outputs == 0, 0.5 + 0.1, "SIO-1 relays off (FAILSAFE)")
        assert board.state_name == "FAILSAFE"
        took = await _until(lambda: charger.failsafe, 2.0 + margin, "charger failsafe")
        assert took <= 2.0 + margin
        await _until(lambda: lift.get("req_out_of_service") == 0, 3.0 + margin, "lift drops it")
        await _until(lambda: pv.limit_w() >= 9999, 3.0 + margin, "PV limit reverted")


async def test_a_restarted_gateway_keeps_its_latches_and_writes_nothing_before_read_back(
    tmp_path: Path,
) -> None:
    site_cfg = parse_site(_config(), "restart.toml")
    state = tmp_path / "state"
    async with SimulatedSite(site_cfg, lively=False) as site:
        charger = site.unit("charger")
        assert isinstance(charger, Charger)
        resolved = tmp_path / "site.toml"
        resolved.write_text(to_toml(site.resolved()))
        gw = await _start_gateway(resolved, state)
        try:
            await _until(lambda: charger.get("watchdog_timeout") == 2000, 15, "managed")
            charger.plug_in()
            charger.trip_rcd("dc")
            await _until(lambda: charger.get("remote_lock") == 0, 10, "locked out")
        finally:
            gw.send_signal(signal.SIGKILL)
            await gw.wait()
        assert "lockout-charger" in (state / "latches.json").read_text()
        charger.clear_rcd()
        charger.power_cycle()  # the charger rebooted meanwhile: unlocked, defaults
        writes: list[tuple[float, int]] = []
        original = charger.on_write

        def record(table: object, address: int, values: object) -> None:
            writes.append((time.monotonic(), address))
            original(table, address, values)  # type: ignore[arg-type]

        charger.on_write = record  # type: ignore[method-assign]
        started = time.monotonic()
        gw = await _start_gateway(resolved, state)
        try:
            await _until(lambda: charger.get("remote_lock") == 0, 15, "lock restored")
        finally:
            gw.send_signal(signal.SIGTERM)
            await gw.wait()
        first_write = min(t for t, _ in writes)
        assert first_write - started > 0.2, "wrote before reading the charger back"
        assert 270 not in {a for _, a in writes}, "a fault reset was replayed"
