"""Each fault a person can cause on the demo's site gives exactly the alarms a person should
see (issue 12): one alarm for one cause, saying which fault, in the gateway's journal and in
the fleet's database — through a real mosquitto and a real ``fleet serve`` process.

The example site (trapped-passenger times shortened), its rig in a process of its own,
``gateway run`` as its systemd unit starts it with an ``[uplink]`` to the broker, shared by
the scenarios; each scenario clears what it caused and waits for the site to be all ok again.

* fire alarm: the one critical fire alarm; closing the loop clears it.
* a charger's residual-current trip: "charger-N locked out: residual current", held (latched)
  until the box is reset and a person resets the interlock (``gateway reset-latch``).
* a trapped passenger: "passenger trapped", critical.
* a dead device: its comm-loss alarm naming what it holds; the alarms that follow only from
  it are in the journal and the fleet, suppressed under it, and clear under it.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil_tests.broker import HOST, Mosquitto
from hil_tests.rig.processes import terminate
from hil_tests.site_process import EXAMPLE, Event, GatewayProcess, SiteProcess, describe, shown

pytestmark = [pytest.mark.hil, pytest.mark.fleet]

WITHIN_S = 30.0
FLEET = [sys.executable, "-m", "fleet.cli"]
#: the example's trapped-passenger times (40 s + 5 s) shortened for the test
SITE_TEXT = EXAMPLE.read_text().replace("occupied_s = 40", "occupied_s = 2")
SITE_TEXT = SITE_TEXT.replace("confirm_s = 5", "confirm_s = 1")

Row = dict[str, object]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _until(ready: Callable[[], bool], what: str, within: float = WITHIN_S) -> None:
    deadline = time.monotonic() + within
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        time.sleep(0.2)


@dataclass
class Site:
    rig: SiteProcess
    gw: GatewayProcess
    db: Path

    def fleet_alarms(self, after: int = 0) -> list[Row]:
        """The fleet database's alarms (id > ``after``), oldest first."""
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT id, key, severity, message, suppressed_by, cleared_at FROM alarms "
                "WHERE id > ? ORDER BY id",
                (after,),
            ).fetchall()
        return [dict(r) for r in rows]

    def last_fleet_id(self) -> int:
        rows = self.fleet_alarms()
        return int(str(rows[-1]["id"])) if rows else 0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("alarms")
    with Mosquitto(tmp / "broker") as broker, SiteProcess(tmp / "rig", SITE_TEXT) as rig:
        ids = tomllib.loads(rig.resolved.read_text())["gateway"]
        db = tmp / "fleet.db"
        url = f"sqlite:///{db}"
        for args in (["site", "add", ids["site"]], ["gateway", "add", ids["site"], ids["id"]]):
            subprocess.run([*FLEET, *args, "--db", url], check=True, capture_output=True)
        with (tmp / "fleet.log").open("w") as log:
            fleet = subprocess.Popen(
                [*FLEET, "serve", "--db", url, "--mqtt", f"mqtt://{HOST}:{broker.port}",
                 "--host", HOST, "--port", str(_free_port())],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            config = tmp / "site-uplink.toml"
            config.write_text(
                rig.resolved.read_text()
                + f'\n[uplink]\nbroker = "mqtt://{HOST}:{broker.port}"\nbatch_interval_s = 0.5\n'
            )
            with GatewayProcess(config, tmp / "state") as gw:
                gw.wait_all_ok()
                yield Site(rig, gw, db)
        finally:
            terminate(fleet)


def _raised(site: Site, since: int, keys: set[str]) -> list[Event]:
    """Journal events after ``since`` once every key in ``keys`` has been raised."""
    return site.gw.wait_for_events(
        lambda events: keys <= {e["key"] for e in events if e["kind"] == "raised"},
        WITHIN_S,
        f"{', '.join(sorted(keys))} raised",
        since,
    )


def _in_fleet(site: Site, after: int, keys: set[str], *, cleared: bool = False) -> list[Row]:
    """The fleet's alarms (id > ``after``) once it holds each key (cleared, if asked)."""
    rows: list[Row] = []

    def ready() -> bool:
        rows[:] = site.fleet_alarms(after)
        done = {str(r["key"]) for r in rows if not cleared or r["cleared_at"] is not None}
        return keys <= done

    _until(ready, f"the fleet holds {', '.join(sorted(keys))}{' cleared' if cleared else ''}")
    return rows


def _settle(site: Site) -> None:
    site.gw.wait_all_ok(WITHIN_S)


def test_a_fire_alarm_is_one_critical_alarm_that_clears_with_the_loop(site: Site) -> None:
    since, after = len(site.gw.journal()), site.last_fleet_id()
    site.rig.scenario("fire")
    key = "fire-alarm/critical"
    events = _raised(site, since, {key})
    time.sleep(3.0)  # anything else that would follow from it
    site.rig.scenario("fire", clear=True)
    events = site.gw.wait_for_events(
        lambda es: any(e["kind"] == "cleared" and e["key"] == key for e in es),
        WITHIN_S, "the fire alarm cleared", since,
    )  # fmt: skip
    assert shown(events) == [key], describe(events)
    assert events[0]["severity"] == "critical"
    rows = _in_fleet(site, after, {key}, cleared=True)
    assert [(r["key"], r["severity"]) for r in rows] == [(key, "critical")]
    _settle(site)


def test_a_residual_current_trip_says_so_and_holds_until_reset(site: Site) -> None:
    since, after = len(site.gw.journal()), site.last_fleet_id()
    said = site.rig.scenario("rcd")
    charger = said.split(":")[0]
    key = f"lockout-{charger}/major"
    events = _raised(site, since, {key})
    time.sleep(3.0)
    events = site.gw.journal()[since:]
    assert shown(events) == [key], describe(events)
    raised = next(e for e in events if e["key"] == key)
    assert raised["message"] == f"{charger} locked out: residual current"
    rows = _in_fleet(site, after, {key})
    assert [(r["key"], r["message"]) for r in rows] == [(key, raised["message"])]
    site.rig.scenario("rcd", clear=True, device=charger)
    time.sleep(2.0)  # the box reset; the latch holds the interlock until a person resets it
    assert key in {e["key"] for e in site.gw.journal()[since:]}
    assert not any(e["kind"] == "cleared" for e in site.gw.journal()[since:])
    reset = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "reset-latch", f"lockout-{charger}",
         "--state-dir", str(site.gw.state_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert reset.returncode == 0, reset.stdout + reset.stderr
    _in_fleet(site, after, {key}, cleared=True)
    _settle(site)


def test_a_trapped_passenger_is_one_critical_alarm(site: Site) -> None:
    since, after = len(site.gw.journal()), site.last_fleet_id()
    said = site.rig.scenario("trapped")
    elevator = said.split(":")[0]
    key = f"trapped-{elevator}/critical"
    _raised(site, since, {key})
    time.sleep(3.0)
    events = site.gw.journal()[since:]
    assert shown(events) == [key], describe(events)
    assert next(e for e in events if e["key"] == key)["message"] == f"{elevator}: passenger trapped"
    rows = _in_fleet(site, after, {key})
    assert [(r["key"], r["severity"]) for r in rows] == [(key, "critical")]
    site.rig.scenario("trapped", clear=True)
    _in_fleet(site, after, {key}, cleared=True)
    _settle(site)


def test_a_dead_device_is_one_alarm_and_what_follows_from_it_is_suppressed_under_it(
    site: Site,
) -> None:
    since, after = len(site.gw.journal()), site.last_fleet_id()
    device = "charger-4"
    site.rig.scenario("dead", device=device)
    key = f"comm-loss/{device}"
    _raised(site, since, {key, f"lockout-{device}/unavailable"})
    time.sleep(3.0)
    events = site.gw.journal()[since:]
    assert shown(events) == [key], describe(events)
    message = [e for e in events if e["key"] == key][-1]["message"]
    assert message.startswith(f"{device} not answering")
    assert "fail-safe actions held by " in message
    assert f"lockout-{device}" in message
    held = {e["key"] for e in events} - {key}
    rows = _in_fleet(site, after, {key, *held})
    assert {str(r["key"]): r["suppressed_by"] for r in rows} == {
        key: None,
        **dict.fromkeys(held, key),
    }
    site.rig.scenario("dead", clear=True, device=device)
    _in_fleet(site, after, {key, *held}, cleared=True)
    events = site.gw.journal()[since:]
    assert shown(events) == [key], "an alarm stood on its own as the device came back"
    assert {str(r["key"]): r["suppressed_by"] for r in site.fleet_alarms(after)} == {
        key: None,
        **dict.fromkeys(held, key),
    }
    _settle(site)
