"""The demo can be driven: each scenario, sent by the real ``scenario`` command over the
control channel to a Director on a running simulated site, changes the device as the real
gateway polling that site reads it, and ``--clear`` undoes it; the day in the life streams a
seeded script and stops when its client hangs up; ``make demo`` prints the command and
answers it."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import pytest

from gateway.bus.breaker import BreakerPolicy
from gateway.devices.profile import Table
from gateway.site import SiteConfig, load_site, parse_site
from hil_tests.gateway_rig import Rig, rtu_bus, running, site_config, tcp_bus, truth
from hil_tests.rig import cpu_load
from hil_tests.rig.control_channel import SOCKET_ENV, ControlChannel
from hil_tests.rig.daylife import Layout, schedule
from hil_tests.rig.processes import terminate
from hil_tests.rig.scenarios import SCENARIOS, Director
from hil_tests.rig.sim.charger import Car, Charger
from hil_tests.rig.sim.elevator import Elevator
from hil_tests.rig.sim.meter import SiteMeter
from hil_tests.rig.sim.pv import PvInverter
from hil_tests.rig.site import SimulatedSite, to_toml

pytestmark = pytest.mark.hil

FAST = "safety = 0.1\ntelemetry = 0.5\nslow = 1"
#: a dead device is declared offline, and found again, within a second or two
QUICK = BreakerPolicy(initial_timeout_s=0.2, backoff_initial_s=0.2, backoff_max_s=0.5)
EXPORT_LIMIT_W = 3000


def small_site() -> SiteConfig:
    config = site_config(
        rtu_bus("sio", 115200) + rtu_bus("b1", 115200) + tcp_bus("pv") + tcp_bus("meter"),
        [
            ("sio", "SIO-1", "sio", 1),
            ("lift", "ELV-24476", "b1", 1),
            ("lockers", "LCK-16", "b1", 2),
            ("charger-1", "EVSE-HEC", "b1", 3),
            ("charger-2", "EVSE-HEC", "b1", 4),
            ("pv", "SUNSPEC-INV", "pv", 1),
            ("meter", "SUNSPEC-METER", "meter", 1),
        ],
        FAST,
    )
    safety = f"[safety.export_limit]\nlimit_w = {EXPORT_LIMIT_W}\n[safety.trapped_passenger]\n"
    return parse_site(to_toml(config) + "\n" + safety, "hil-site.toml")


@asynccontextmanager
async def driven(config: SiteConfig) -> AsyncIterator[tuple[Rig, Path, Director]]:
    """The real gateway on a simulated site with a Director and its control channel."""
    # a short directory: a Unix socket's path has at most 107 bytes
    with tempfile.TemporaryDirectory(prefix="scn-") as tmp:
        socket = Path(tmp) / "scenario.sock"
        async with (
            running(config, policy=QUICK) as rig,
            Director(rig.site, gateway_state_dir=Path(tmp) / "gw") as director,
            ControlChannel(socket, director.handle),
        ):
            yield rig, socket, director


async def scenario(socket: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m hil_tests.rig.scenario`` in its own process, as a person runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil_tests.rig.scenario", "--socket", str(socket), *argv,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


async def ok(socket: Path, *argv: str) -> str:
    done = await scenario(socket, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def seen(rig: Rig, device: str, point: str) -> object:
    """The point as the gateway last read it (None unless good)."""
    return rig.gw.image.reading(device, point)


async def test_fire_opens_the_sio_fire_loop_as_the_gateway_reads_it_and_clear_closes_it() -> None:
    async with driven(small_site()) as (rig, socket, _):
        await rig.wait_for(lambda: seen(rig, "sio", "fire_alarm_loop") is True, what="loop closed")
        out = await ok(socket, "fire")
        assert "fire-alarm loop opened on sio" in out
        assert "hil_tests.rig.scenario fire --clear` to close it" in out
        await rig.wait_for(lambda: seen(rig, "sio", "fire_alarm_loop") is False, what="loop open")
        assert "closed on sio" in await ok(socket, "fire", "--clear")
        await rig.wait_for(lambda: seen(rig, "sio", "fire_alarm_loop") is True, what="loop closed")


def rcd(rig: Rig, charger: str) -> tuple[object, object]:
    """(residual_current_status, lockout_latched) as the gateway reads them."""
    return seen(rig, charger, "residual_current_status"), seen(rig, charger, "lockout_latched")


async def test_rcd_trip_locks_the_charging_charger_out_and_clear_resets_it_car_back() -> None:
    async with driven(small_site()) as (rig, socket, _):
        charger = rig.site.unit("charger-2")
        assert isinstance(charger, Charger)
        with rig.site.lock:
            charger.plug_in(Car(max_current_a=16))
            charger.write(Table.HOLDING, 261, [160])
        await rig.wait_for(lambda: charger.contactor == 1, what="charger-2 charging")

        out = await ok(socket, "rcd")  # the default: the charger that is charging
        assert out.startswith("charger-2: DC residual current")
        await rig.wait_for(lambda: rcd(rig, "charger-2") == (1, 1), what="tripped, locked out")
        assert truth(charger, "contactor") == 0

        out = await ok(socket, "rcd", "--clear")
        assert "gateway reset-latch lockout-charger-2 --state-dir" in out
        await rig.wait_for(lambda: rcd(rig, "charger-2") == (0, 0), what="reset")
        assert charger.car is not None, "the car is plugged in again"
        assert "no charger has a residual-current trip" in await ok(socket, "rcd", "--clear")


async def test_trapped_holds_the_car_stopped_closed_and_occupied_and_clear_lets_them_out() -> None:
    async with driven(small_site()) as (rig, socket, _):
        lift = rig.site.unit("lift")
        assert isinstance(lift, Elevator)
        out = await ok(socket, "trapped", "--people", "2")
        assert "lift: stopped at floor 1, doors closed, 2 inside" in out
        assert "trapped passenger after 45 s" in out  # the default occupied_s + confirm_s

        def occupancy() -> tuple[object, ...]:
            points = ("car_status", "door_close_status", "passenger_status")
            return tuple(seen(rig, "lift", p) for p in points)

        await rig.wait_for(lambda: occupancy() == (0, 1, 1), what="stopped, closed, occupied")
        await ok(socket, "trapped", "--clear")
        await rig.wait_for(lambda: occupancy()[1:] == (0, 0), what="doors opening, car empty")
        assert not lift.trapped


async def test_dead_devices_stop_answering_the_gateway_and_clear_brings_them_back() -> None:
    async with driven(small_site()) as (rig, socket, _):
        await rig.wait_for(lambda: rig.all_good("lockers") and rig.all_good("sio"))
        assert "lockers stops answering" in await ok(socket, "dead", "lockers")
        await ok(socket, "dead", "sio")  # the SIO-1 firmware loses its supply
        await rig.wait_for(lambda: rig.gw.image.offline("lockers"), what="lockers offline")
        await rig.wait_for(lambda: rig.gw.image.offline("sio"), what="sio offline")
        assert rig.site.boards["sio"].outputs == 0, "an unpowered board drops its relays"
        assert rig.all_good("lift"), "its neighbour on the bus still answers"

        assert "sio, lockers answering again" in await ok(socket, "dead", "--clear")
        await rig.wait_for(lambda: rig.all_good("lockers"), within=10, what="lockers back")
        await rig.wait_for(lambda: rig.all_good("sio"), within=10, what="sio back")


async def test_export_makes_the_meter_read_over_the_limit_and_clear_takes_the_test_set_off() -> (
    None
):
    async with driven(small_site()) as (rig, socket, _):
        meter = rig.site.unit("meter")
        assert isinstance(meter, SiteMeter)
        out = await ok(socket, "export")
        assert f"meter reads {EXPORT_LIMIT_W + 2000} W of export" in out
        assert f"above the export limit of {EXPORT_LIMIT_W} W" in out
        await rig.wait_for(lambda: seen(rig, "meter", "w") == -(EXPORT_LIMIT_W + 2000))
        await ok(socket, "export", "--clear")
        assert meter.injected_w is None
        await rig.wait_for(
            lambda: (
                seen(rig, "meter", "w") != -(EXPORT_LIMIT_W + 2000)
                and abs(float(seen(rig, "meter", "w") or 0) - float(truth(meter, "w") or 0)) < 50
            ),  # type: ignore[arg-type]
            what="the gateway reading what the meter measures of the site again",
        )


async def test_load_starts_busy_loops_at_normal_priority_and_clear_stops_them() -> None:
    async with driven(small_site()) as (_, socket, director):
        out = await ok(socket, "load", "--procs", "2", "--seconds", "20")
        assert "2 busy-loop processes at normal priority for 20 s" in out
        pids = director.hogs.running()
        assert len(pids) == 2
        await asyncio.sleep(0.3)  # each lowers an inherited raised priority itself
        assert all(os.getpriority(os.PRIO_PROCESS, pid) >= 0 for pid in pids)
        assert "stopped 2 busy-loop processes" in await ok(socket, "load", "--clear")
        assert director.hogs.running() == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


async def test_day_streams_its_seeded_script_until_ctrl_c_then_gives_the_site_back() -> None:
    async with driven(small_site()) as (rig, socket, director):
        pv = rig.site.unit("pv")
        assert isinstance(pv, PvInverter)
        sun = pv.irradiance
        expected = [str(e) for e in itertools.islice(schedule(4, Layout.of(rig.site)), 6)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hil_tests.rig.scenario", "--socket", str(socket),
            "day", "--seed", "4", "--speed", "7200",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        header = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert b"a day in the life: seed 4, 24 h in 0.2 min" in header
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 10)).decode() for _ in expected]
        assert [line.split("  (")[0].rstrip() for line in lines] == expected
        assert pv.irradiance is director.day.sky  # type: ignore[union-attr]

        proc.send_signal(signal.SIGINT)  # Ctrl-C: the client hangs up, the day stops
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0
        assert out.decode().endswith("stopped: the day in the life ends, its faults clear\n")
        await rig.wait_for(lambda: director.day is None, what="the day stopped")
        assert pv.irradiance is sun, "the sky is the site's own again"
        faults, unit_id = rig.site.faults_of("lockers")
        assert not faults.of(unit_id).dead


def example_layout() -> Layout:
    path = Path(str(resources.files("gateway.examples").joinpath("community.toml")))
    return Layout.of(SimulatedSite(load_site(path), lively=True))


def test_the_day_script_is_the_same_for_the_same_seed_and_in_time_order() -> None:
    layout = example_layout()
    first = list(itertools.islice(schedule(7, layout), 120))
    assert first == list(itertools.islice(schedule(7, layout), 120))
    assert [str(e) for e in first] != [str(e) for e in itertools.islice(schedule(8, layout), 120)]
    assert [e.at_s for e in first] == sorted(e.at_s for e in first)
    kinds = {e.kind for e in first}
    assert {"car-arrives", "deposit", "ride", "cloud"} <= kinds
    assert kinds & {"alarm-button", "trapped", "silent", "overheat"}, "a few faults"


def test_the_client_says_clearly_when_no_demo_is_running(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop(SOCKET_ENV, None)
    done = subprocess.run(
        [sys.executable, "-m", "hil_tests.rig.scenario", "fire"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 3
    assert "no demo is running: start one with `make demo`" in done.stderr


def test_list_gives_every_scenario_one_line_of_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hil_tests.rig.scenario", "--list"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    for name in ("fire", "rcd", "trapped", "dead", "export", "load", "day"):
        assert sum(line.split()[0] == name for line in lines[1:-1]) == 1, name
    assert len(lines) == len(SCENARIOS) + 2


async def test_a_refused_scenario_says_why_and_names_the_candidates() -> None:
    async with driven(small_site()) as (_, socket, _):
        done = await scenario(socket, "rcd", "lift")
        assert done.returncode == 1
        assert (
            "'lift' is not a charger of this site (chargers: charger-1, charger-2)" in done.stderr
        )


def test_the_rig_says_so_when_it_may_not_raise_its_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError("not allowed")

    monkeypatch.setattr(cpu_load.os, "setpriority", refuse)
    line = cpu_load.raise_priority()
    assert line.startswith("rig priority: not raised (nice -10 needs root or CAP_SYS_NICE")
    assert "load on this machine slows the simulated hardware" in line


def test_make_demo_prints_the_scenario_command_and_answers_it() -> None:
    # a short temp directory: the gateway's control socket lives under it too (<= 107 bytes)
    with tempfile.TemporaryDirectory(prefix="dmo-") as tmp:
        env = {**os.environ, "TMPDIR": tmp}
        env.pop(SOCKET_ENV, None)
        demo = subprocess.Popen(
            [sys.executable, "-m", "hil_tests.rig.demo", "--no-fleet", "--duration", "8"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        try:
            assert demo.stdout is not None
            banner = ""
            while "drive the site from another terminal" not in banner:
                line = demo.stdout.readline()
                assert line, f"the demo ended before its banner:\n{banner}"
                banner += line
            assert "hil_tests.rig.scenario fire " in demo.stdout.readline()
            done = subprocess.run(
                [sys.executable, "-m", "hil_tests.rig.scenario", "fire"],
                capture_output=True, text=True, env=env, timeout=30, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "fire-alarm loop opened on sio" in done.stdout
            demo.communicate(timeout=30)
            assert demo.returncode == 0
        finally:
            if demo.poll() is None:
                terminate(demo)
        assert list(Path(tmp).iterdir()) == [], "the demo leaves nothing behind"
