"""``gateway run`` and ``make demo`` as a user starts them: separate processes, real ptys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hil_tests.gateway_rig import gateway_cli, rtu_bus, site_config
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


def test_make_demo_starts_the_site_the_gateway_and_the_fleet_it_reports_to() -> None:
    """What a newcomer sees: the live table of every device, the fleet's URL and a login
    that works, and the gateway online in the fleet with its devices."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "hil_tests.rig.demo", "--duration", "12",
         "--http-port", "0", "--mqtt-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert demo.stdout is not None
    found = None
    for line in demo.stdout:
        found = re.search(r"fleet manager: (http://\S+)  login: (\S+) / (\S+)", line)
        if found:
            break
    assert found, "the demo printed no fleet URL and login"
    url, user, password = found.groups()
    overview = _fleet_overview_once_reported(url, user, password)
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err
    for device in ("elevator-1", "lockers-2", "charger-4", "pv", "meter"):
        assert device in out, device
    assert "Traceback" not in err
    [site] = overview["sites"]
    [gateway] = site["gateways"]
    assert (site["name"], gateway["name"], gateway["online"]) == ("lianhua-garden", "gw-01", True)
    assert gateway["devices"] == 11


def _fleet_overview_once_reported(url: str, user: str, password: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=5) as client:
        login = client.post("/api/login", json={"name": user, "password": password})
        assert login.status_code == 200, login.text
        deadline = time.monotonic() + 30
        while True:
            overview: dict[str, Any] = client.get("/api/overview").json()
            gateways = [g for s in overview["sites"] for g in s["gateways"]]
            if (gateways and gateways[0]["online"] and gateways[0]["devices"]) or (
                time.monotonic() > deadline
            ):
                return overview
            time.sleep(0.5)
