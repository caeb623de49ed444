"""The bus layer against the simulated site: real ptys, real TCP, the real gateway runtime."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from gateway.bus.stats import LatencyWindow
from gateway.devices.profile import PollClass, Range, Table
from gateway.image import Quality
from hil_tests.gateway_rig import rtu_bus, running, site_config, tcp_bus, truth

pytestmark = pytest.mark.hil

EVERY_PROFILE = [
    ("elevator", "ELV-24476", "rs485", 1),
    ("lockers", "LCK-16", "rs485", 2),
    ("charger", "EVSE-HEC", "rs485", 3),
    ("charger-tcp", "EVSE-HEC", "lan", 1),
    ("pv", "SUNSPEC-INV", "pv", 1),
    ("meter", "SUNSPEC-METER", "meter", 1),
]


async def test_every_profile_reads_the_simulators_ground_truth_over_rtu_and_tcp() -> None:
    config = site_config(
        rtu_bus("rs485", 38400) + tcp_bus("lan") + tcp_bus("pv") + tcp_bus("meter"),
        EVERY_PROFILE,
        poll="safety = 0.2\ntelemetry = 0.2\nslow = 0.2",
    )
    async with running(config) as rig:
        names = [d[0] for d in EVERY_PROFILE]
        await rig.wait_for(lambda: all(rig.all_good(n) for n in names), what="every point GOOD")
        rig.site.paused = True
        await asyncio.sleep(0.7)  # one more full cycle of every class after the freeze
        compared = 0
        for device in names:
            unit = rig.site.unit(device)
            for _, point, sample in rig.gw.image.points(device):
                assert sample.quality is Quality.GOOD, f"{device}.{point}"
                assert sample.value == truth(unit, point), f"{device}.{point}"
                compared += 1
        assert compared > 150


async def test_dead_unit_grows_the_healthy_units_poll_cycle_by_less_than_25_percent() -> None:
    devices = [(f"elevator-{i}", "ELV-24476", "rs485", i) for i in range(1, 11)]
    config = site_config(
        rtu_bus("rs485", 115200), devices, poll="safety = 0.3\ntelemetry = 5\nslow = 60"
    )
    async with running(config) as rig:
        await rig.wait_for(lambda: all(rig.all_good(d[0]) for d in devices), what="warm-up")
        healthy = [d[0] for d in devices if d[0] != "elevator-5"]
        baseline = await _safety_cycles(rig, healthy, seconds=3)
        faults, unit_id = rig.site.faults_of("elevator-5")
        faults.of(unit_id).dead = True
        await rig.wait_for(
            lambda: rig.gw.pollers["elevator-5"].breaker.state == "open",
            what="the dead unit's breaker to open",
        )
        with_dead = await _safety_cycles(rig, healthy, seconds=6)
        sample = rig.gw.image.get("elevator-5", "service_mode")
        assert sample.quality is Quality.OFFLINE
        assert with_dead < 1.25 * baseline, f"{with_dead * 1000:.1f} ms vs {baseline * 1000:.1f}"


async def _safety_cycles(rig: object, devices: list[str], seconds: float) -> float:
    """Mean duration of the healthy devices' safety-class poll cycles over a window."""
    from hil_tests.gateway_rig import Rig

    assert isinstance(rig, Rig)
    for d in devices:
        rig.gw.pollers[d].cycles[PollClass.SAFETY].durations = LatencyWindow()
    await asyncio.sleep(seconds)
    samples = []
    for d in devices:
        window = rig.gw.pollers[d].cycles[PollClass.SAFETY].durations
        samples += [window.percentile(p) or 0.0 for p in range(1, 101)]
    return statistics.fmean(samples)


async def test_responses_split_into_chunks_with_20ms_gaps_are_read_at_9600_baud() -> None:
    config = site_config(
        rtu_bus("rs485", 9600),
        [("elevator", "ELV-24476", "rs485", 1)],
        poll="safety = 0.5\ntelemetry = 1\nslow = 1",
    )
    async with running(config) as rig:
        faults, unit_id = rig.site.faults_of("elevator")
        faults.of(unit_id).chunk_size = 4
        faults.of(unit_id).chunk_gap_s = 0.020
        rig.site.paused = True
        unit = rig.site.unit("elevator")
        unit.set("car_position", 4)
        await rig.wait_for(lambda: rig.gw.image.value("elevator", "car_position") == 4)
        await rig.wait_for(lambda: rig.all_good("elevator"), what="every point GOOD")
        chunked = [f for f in rig.site.lines["rs485"].stats.log if f.unit_id == unit_id]
        assert max(f.response_end - f.response_start for f in chunked) > 0.1
        stats = rig.gw.pollers["elevator"].stats
        assert stats.crc_errors == 0
        assert stats.timeouts == 0


async def test_crc_corrupt_frames_are_counted_and_never_decoded() -> None:
    config = site_config(
        rtu_bus("rs485", 19200),
        [("elevator", "ELV-24476", "rs485", 1)],
        poll="safety = 0.2\ntelemetry = 1\nslow = 5",
    )
    async with running(config) as rig:
        await rig.wait_for(lambda: rig.all_good("elevator"))
        faults, unit_id = rig.site.faults_of("elevator")
        rig.site.paused = True
        faults.of(unit_id).corrupt_always = True
        unit = rig.site.unit("elevator")
        unit.set("car_position", -2)
        await rig.wait_for(lambda: rig.gw.pollers["elevator"].stats.crc_errors >= 6)
        assert rig.gw.image.get("elevator", "car_position").value != -2
        await rig.wait_for(
            lambda: rig.gw.image.get("elevator", "car_position").quality is not Quality.GOOD,
            what="car_position to go stale/offline",
        )
        faults.of(unit_id).corrupt_always = False
        await rig.wait_for(
            lambda: rig.gw.image.value("elevator", "car_position") == -2,
            what="recovery after the line is clean again",
        )


async def test_exception_02_splits_the_block_and_is_remembered() -> None:
    config = site_config(
        rtu_bus("rs485", 38400),
        [("elevator", "ELV-24476", "rs485", 1)],
        poll="safety = 0.2\ntelemetry = 1\nslow = 5",
    )
    async with running(config) as rig:
        await rig.wait_for(lambda: rig.all_good("elevator"))
        unit = rig.site.unit("elevator")
        unit.regs.unreadable.append(Range(table=Table.INPUT, start=11, end=11))  # car_speed
        poller = rig.gw.pollers["elevator"]
        await rig.wait_for(
            lambda: "car_speed" in poller.unreadable_points,
            what="car_speed to be learned unreadable",
        )
        assert rig.gw.image.get("elevator", "car_speed").quality is Quality.BAD
        exceptions = poller.stats.exceptions
        rig.site.paused = True
        unit.set("car_position", 6)
        unit.set("load_pct", 42)
        await rig.wait_for(lambda: rig.gw.image.value("elevator", "car_position") == 6)
        await asyncio.sleep(0.6)  # three more safety cycles
        assert poller.stats.exceptions == exceptions, "the refused block was sent again"
        assert rig.gw.image.get("elevator", "passenger_status").quality is Quality.GOOD
        # the rest of the map is still read: the telemetry point within two of its periods
        await rig.wait_for(lambda: rig.gw.image.value("elevator", "load_pct") == 42, within=2.5)


async def test_command_behind_a_full_telemetry_cycle_goes_out_within_one_transaction() -> None:
    devices = [("lockers", "LCK-16", "rs485", 1), ("elevator", "ELV-24476", "rs485", 2)]
    config = site_config(
        rtu_bus("rs485", 9600), devices, poll="safety = 0.2\ntelemetry = 0.2\nslow = 0.2"
    )
    async with running(config) as rig:
        await rig.wait_for(lambda: rig.all_good("elevator") and rig.all_good("lockers"))
        line = rig.site.lines["rs485"]
        longest = max(f.response_end - f.request_start for f in line.stats.log)
        delays = []
        for _ in range(5):
            await asyncio.sleep(0.13)  # land somewhere inside a busy cycle
            asked = time.monotonic()
            await rig.gw.commands.command("elevator", "out_of_service")
            sent = [f for f in line.stats.log if f.unit_id == 2 and f.function == 6]
            delays.append(sent[-1].request_start - asked)
            await rig.gw.commands.command("elevator", "return_to_service")
        # within one transaction on the wire, plus the t3.5 gap before the command
        assert max(delays) <= longest + 0.005, (delays, longest)


async def test_gateway_never_violates_t35_on_a_busy_example_site() -> None:
    devices = [
        ("elevator-1", "ELV-24476", "b1", 1),
        ("lockers-1", "LCK-16", "b1", 2),
        *[(f"charger-{i}", "EVSE-HEC", "carport", i) for i in range(1, 5)],
    ]
    config = site_config(
        rtu_bus("b1", 9600) + rtu_bus("carport", 115200),
        devices,
        poll="safety = 0.05\ntelemetry = 0.1\nslow = 1",
    )
    async with running(config) as rig:
        await asyncio.sleep(4)
        for name, line in rig.site.lines.items():
            assert line.stats.responses_sent > 50, name
            assert line.stats.t35_violations == 0, name
            assert line.stats.noise_bytes == 0, name
