"""The bus scan against the rig's multi-unit RTU line (a dead unit, a slow one): exactly the
answering units, each simulated model identified, t3.5 kept, bounded time per id, no write."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gateway.bus.rtu import RtuTransport
from gateway.bus.scan import Found, Scanner, ScanSettings
from gateway.devices.profile import available_models, load_profile
from hil_tests.gateway_rig import gateway_cli, rtu_bus, site_config, tcp_bus
from hil_tests.rig.sim.market import ProfileUnit
from hil_tests.rig.site import SimulatedSite

pytestmark = pytest.mark.hil

BAUD = 38400
LINE = [
    ("charger", "EVSE-HEC", "line", 1),
    ("sdm", "EASTRON-SDM630", "line", 2),
    ("meter", "SUNSPEC-METER", "line", 3),
    ("pv", "SUNSPEC-INV", "line", 4),
    ("keba", "KEBA-P30", "line", 5),  # dead
    ("chint", "CHINT-DTSU666", "line", 6),  # says what it is through FC43 only
    ("lift", "ELV-24476", "line", 7),  # reads 0x0100 at input 0 like an SIO-1: not one
]
EXPECTED = {1: ["EVSE-HEC"], 2: ["EASTRON-SDM630"], 3: ["SUNSPEC-METER"], 4: ["SUNSPEC-INV"]}
PROBE_S, BUDGET_S, SLOW_S = 0.25, 3.0, 0.08


@asynccontextmanager
async def line() -> AsyncIterator[SimulatedSite]:
    async with SimulatedSite(site_config(rtu_bus("line", BAUD), LINE), lively=False) as site:
        site.faults["line"].of(5).dead = True
        site.faults["line"].of(4).think_time_s = SLOW_S
        chint = site.unit("chint")
        chint.device_identification = {0: b"CHINT", 1: b"DTSU666", 2: b"V1.02"}
        yield site


async def test_scan_finds_exactly_the_answering_units_and_identifies_each() -> None:
    async with line() as site:
        seen: list[tuple[int, Found | None, float]] = []
        last = time.monotonic()

        def progress(unit: int, found: Found | None) -> None:
            nonlocal last
            now = time.monotonic()
            seen.append((unit, found, now - last))
            last = now

        profiles = {m: load_profile(m) for m in available_models()}
        settings = ScanSettings(tuple(range(1, 10)), PROBE_S, BUDGET_S)
        async with RtuTransport("line", site.lines["line"].client_path, BAUD) as transport:
            scanner = Scanner(transport, profiles, settings, progress)
            found = await scanner.scan()
        by_unit = {f.unit_id: f for f in found}
        assert sorted(by_unit) == [1, 2, 3, 4, 6, 7], "exactly the units that answer"
        assert by_unit[7].profiles == [], "a shared version register is not an identity"
        for unit, models in EXPECTED.items():
            assert by_unit[unit].profiles == models, f"unit {unit}: {by_unit[unit]}"
        assert by_unit[6].identification == {
            "vendor": "CHINT",
            "product_code": "DTSU666",
            "revision": "V1.02",
        }
        assert by_unit[3].sunspec["mn"] == "Doorstep-Sim"
        assert [u for u, _, _ in seen] == list(range(1, 10)), "progress for every id, in order"
        # a silent id costs its probe timeout (+ the line's own slack), an answering one its
        # questions: both bounded, ten times looser than the settings on a busy machine
        for unit, result, took in seen:
            bound = PROBE_S if result is None else BUDGET_S
            assert took < 10 * bound + 1.0, f"unit {unit} took {took:.2f} s"
        assert not any(by_unit[u].incomplete for u in by_unit)
        # it only reads, and keeps t3.5 between frames
        assert {fc for _, fc in scanner.requests} <= {1, 2, 3, 4, 0x2B}
        for name in ("sdm", "keba", "chint"):
            unit_sim = site.unit(name)
            assert isinstance(unit_sim, ProfileUnit)
            assert unit_sim.written == []
        assert site.lines["line"].stats.t35_violations == 0


async def test_a_tcp_scan_does_not_take_a_gateways_no_answer_for_a_device() -> None:
    """Behind a TCP-to-RTU gateway an absent unit is answered with exception 0x0B."""
    config = site_config(
        tcp_bus("lan"),
        [("keba", "KEBA-P30", "lan", 1), ("sdm", "EASTRON-SDM630", "lan", 2)],
    )
    async with SimulatedSite(config, lively=False) as site:
        port = site.tcp["lan"].port
        scan = await gateway_cli(
            "scan",
            "--host",
            "127.0.0.1",
            "--tcp-port",
            str(port),
            "--units",
            "1-4",
            "--timeout",
            "0.25",
        )
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert "2 unit(s) answered" in scan.stdout
    assert 'profile = "EASTRON-SDM630"' in scan.stdout


async def test_gateway_scan_prints_ready_device_blocks_and_profile_check_reads_a_device() -> None:
    async with line() as site:
        port = site.lines["line"].client_path
        scan = await gateway_cli(
            "scan", "--port", port, "--baud", str(BAUD), "--units", "1-6", "--timeout", "0.25"
        )
        assert scan.returncode == 0, scan.stderr
        assert "5 unit(s) answered" in scan.stdout
        assert '[[devices]]\nname = "charger-1"\nprofile = "EVSE-HEC"' in scan.stdout
        assert 'profile = "EASTRON-SDM630"' in scan.stdout
        assert "CHINT DTSU666 V1.02" in scan.stdout
        check = await gateway_cli(
            "profile",
            "check",
            "gateway/devices/profiles/EASTRON-SDM630.toml",
            "--port",
            port,
            "--baud",
            str(BAUD),
            "--unit",
            "2",
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "read 17 point(s) from unit 2" in check.stdout
        assert "4366 0000" in check.stdout  # 230.0 V as it is on the wire
        assert "230.0" in check.stdout
        dead = await gateway_cli(
            "profile",
            "check",
            "gateway/devices/profiles/KEBA-P30.toml",
            "--port",
            port,
            "--baud",
            str(BAUD),
            "--unit",
            "5",
        )
        assert dead.returncode == 1
        assert "unit 5 does not answer" in dead.stdout
