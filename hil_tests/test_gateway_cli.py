"""``gateway run`` and ``make demo`` as a user starts them: separate processes, real ptys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil_tests.conftest import gateway_cli, rtu_bus, site_config
from hil_tests.rig.site import SimulatedSite, to_toml

pytestmark = pytest.mark.hil


async def test_gateway_run_polls_a_site_and_reports_every_point(tmp_path: Path) -> None:
    config = site_config(
        rtu_bus("rs485", 19200),
        [("elevator", "ELV-24476", "rs485", 1), ("lockers", "LCK-16", "rs485", 2)],
        poll="safety = 0.2\ntelemetry = 0.5\nslow = 1",
    )
    async with SimulatedSite(config, lively=False) as site:
        site.paused = True
        site.unit("elevator").set("car_position", 5)
        path = tmp_path / "site.toml"
        path.write_text(to_toml(site.resolved()))
        done = await gateway_cli("run", "--config", str(path), "--duration", "3", "--json")
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stderr[done.stderr.index("{") :])
    assert snapshot["points"]["elevator.car_position"] == {"value": 5, "quality": "good"}
    assert all(p["quality"] == "good" for p in snapshot["points"].values())
    assert snapshot["buses"]["rs485"]["timeouts"] == 0
    assert "elevator" in done.stdout, "the live table"
    assert "lockers" in done.stdout, "the live table"


async def test_gateway_run_on_a_missing_serial_port_says_so_and_exits_1(tmp_path: Path) -> None:
    config = site_config(rtu_bus("rs485", 9600), [("elevator", "ELV-24476", "rs485", 1)])
    path = tmp_path / "site.toml"
    path.write_text(to_toml(config).replace("/dev/null", "/dev/ttyUSB-nowhere"))
    done = await gateway_cli("run", "--config", str(path), "--duration", "1")
    assert done.returncode == 1
    assert "serial port /dev/ttyUSB-nowhere does not exist" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_make_demo_starts_the_example_site_and_shows_every_device() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hil_tests.rig.demo", "--duration", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    for device in ("elevator-1", "lockers-2", "charger-4", "pv", "meter"):
        assert device in done.stdout, device
    assert "Traceback" not in done.stderr
