"""The live status display of ``gateway run``, rendered to rich's in-memory console: health at a
glance, 80 columns, a stable layout, labels; and the log lines it writes without a terminal."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from gateway.bus.breaker import BreakerPolicy, CircuitBreaker
from gateway.bus.coalesce import CostModel
from gateway.bus.poller import DevicePoller
from gateway.cli import screen, status
from gateway.cli.main import build_parser
from gateway.cli.snapshot import (
    BusStatus,
    DeviceStatus,
    Health,
    StatusSnapshot,
    collect,
    data_summary,
    device_health,
    holding,
    key_point,
)
from gateway.control.alarms import AlarmEvent, AlarmLog, Severity
from gateway.control.engine import RuleRuntime
from gateway.control.rules import Interlock
from gateway.devices.codec import Value
from gateway.devices.profile import Point, PointType, Profile, load_profile, parse_profile
from gateway.image import ProcessImage, Quality, Sample
from gateway.site import device_profile, load_site

EXAMPLE = Path(str(resources.files("gateway.examples").joinpath("community.toml")))
GOOD = [Quality.GOOD] * 40


def alarm(device: str | None, severity: Severity, message: str, key: str = "") -> AlarmEvent:
    key = key or f"{device}/{severity.value}"
    return AlarmEvent(1, "raised", key, severity, "lockout", device, message, at=1.7e9)


def plausible(point: Point) -> Value:
    """A value as wide as the point's values get: every bit set, the longest enum label."""
    if point.type is PointType.BITFIELD and point.bits:
        return sum(1 << b for b in point.bits)
    if point.type is PointType.ENUM and point.enum:
        labels = point.enum
        return max(labels, key=lambda k: len(labels[k]))
    if point.type is PointType.BIT:
        return True
    return 12345.6 if point.scale or point.unit else 12345


def device(name: str, profile: Profile, health: Health = Health.OK, **changes: Any) -> DeviceStatus:
    """A busy device: every counter in the thousands, every key point as wide as it gets."""
    points = tuple(
        key_point(profile.point(p), Sample(plausible(profile.point(p)), 0.0, Quality.GOOD))
        for p in profile.key_points
    )
    counters = (123456, 12.3, 123.4, 1234, 123)
    row = DeviceStatus(name, "carport", 12, health, "", "good", Quality.GOOD, points, *counters)
    return dataclasses.replace(row, **changes)


def example_site(alarms: tuple[AlarmEvent, ...] = (), **changes: Any) -> StatusSnapshot:
    """The example community site, every device busy and every value as wide as it gets."""
    site = load_site(EXAMPLE)
    devices = tuple(device(d.name, device_profile(d)) for d in site.devices)
    buses = tuple(BusStatus(b.name, 41.7, 0.65, 14.9, 132.6, 1234, 12, 123) for b in site.buses)
    loop = "loop 50 ms: late p99 1.2, max 8.3 ms"
    snap = StatusSnapshot("lianhua-garden / gw-01", devices, buses, alarms, {}, loop, True)
    return dataclasses.replace(snap, at=1.7e9, **changes)


def render(renderable: object, width: int = 80, height: int = 40) -> list[str]:
    console = Console(
        file=io.StringIO(), width=width, height=height, force_terminal=True, record=True
    )
    console.print(renderable)
    return [line.rstrip() for line in console.export_text().splitlines()]


# -- health at a glance ------------------------------------------------------------------------


def test_a_locked_out_charger_is_a_fault_while_its_data_is_fresh() -> None:
    lockout = alarm("charger-1", Severity.MAJOR, "residual current, locked out")
    held_by = ["lockout-charger-1"]
    health, why = device_health(offline=False, qualities=GOOD, alarms=[lockout], held_by=held_by)
    assert (health, why) == (Health.FAULT, "residual current, locked out")
    assert data_summary(GOOD) == ("good", Quality.GOOD)


def test_collect_makes_a_locked_out_charger_a_fault_while_its_data_is_fresh() -> None:
    gw = stand_in_gateway()
    for dev, point, _ in list(gw.image.points()):
        gw.image.update(dev, point, 0)  # every point read just now
    gw.image.mark_device("elevator-2", Quality.OFFLINE)
    lockout = "residual current, locked out"
    gw.alarms.raise_("lockout/major", Severity.MAJOR, "lockout", lockout, device="charger-1")
    snap = collect(gw)
    shown = {d.name: d for d in snap.devices}
    assert (shown["charger-1"].health, shown["charger-1"].why) == (Health.FAULT, lockout)
    assert shown["charger-1"].data == "good"
    assert (shown["elevator-2"].health, shown["elevator-2"].data) == (Health.OFFLINE, "offline")
    assert shown["pv-inverter"].health is Health.STARTING  # its SunSpec models not found yet
    assert shown["charger-2"].health is Health.OK
    assert [a.message for a in snap.alarms] == [lockout]


def stand_in_gateway() -> Any:
    """The parts of a running gateway that :func:`collect` reads, for the example site."""
    site = load_site(EXAMPLE)
    image = ProcessImage()
    pollers = {}
    for d in site.devices:
        breaker = CircuitBreaker(BreakerPolicy())
        poller = DevicePoller(
            d, device_profile(d), site.periods(d), image, CostModel.for_tcp(), breaker
        )
        if poller.ready:
            poller.place(poller.profile, time.monotonic())
        pollers[d.name] = poller
    loop = {"period_ms": 50.0, "lateness_p99_ms": 1.0, "lateness_max_ms": 2.0}
    supervisor = SimpleNamespace(loop=SimpleNamespace(snapshot=lambda: loop), healthy=lambda: True)
    return SimpleNamespace(
        site=site,
        image=image,
        alarms=AlarmLog(),
        pollers=pollers,
        schedulers={},
        engine=SimpleNamespace(rules={}),
        supervisor=supervisor,
    )


@pytest.mark.parametrize(
    ("offline", "qualities", "alarms", "held_by", "expected"),
    [
        (True, [Quality.OFFLINE], [alarm("lift", Severity.MINOR, "no answer")], [], Health.OFFLINE),
        (False, GOOD, [alarm("lift", Severity.CRITICAL, "passenger trapped")], [], Health.FAULT),
        (False, GOOD, [alarm("charger-3", Severity.MINOR, "hot: derated")], [], Health.WARNING),
        (False, [Quality.GOOD, Quality.STALE], [], [], Health.WARNING),
        (False, GOOD, [], ["fire-alarm"], Health.HELD),
        (False, GOOD, [alarm("x", Severity.INFO, "note")], [], Health.OK),
        (False, [Quality.OFFLINE] * 3, [], [], Health.STARTING),
        (False, [], [], [], Health.STARTING),
        (False, GOOD, [], [], Health.OK),
    ],
)
def test_health_comes_from_comm_state_alarms_data_and_interlocks(
    offline: bool,
    qualities: list[Quality],
    alarms: list[AlarmEvent],
    held_by: list[str],
    expected: Health,
) -> None:
    health, _ = device_health(offline=offline, qualities=qualities, alarms=alarms, held_by=held_by)
    assert health is expected


def test_the_device_name_is_coloured_by_health_and_its_data_quality_apart() -> None:
    charger = load_profile("EVSE-HEC")
    snap = example_site(
        devices=(
            device("charger-1", charger, Health.FAULT),
            device("charger-2", charger, Health.OK, data="3 stale", data_quality=Quality.STALE),
        )
    )
    console = Console(file=io.StringIO(), width=160, force_terminal=True)
    table, _ = screen.device_table(snap, 160)
    styles = {}
    for line in console.render_lines(table, pad=False):
        for seg in line:
            styles.setdefault(seg.text.strip(), seg.style)
    colour = {
        text: str(style.color.name) for text, style in styles.items() if style and style.color
    }
    assert colour["charger-1"] == colour["fault"] == "red"
    assert colour["good"] == "green"  # its data
    assert colour["charger-2"] == "green"
    assert colour["3 stale"] == "yellow"


def test_an_active_interlock_holds_what_it_writes_at_protection_priority_or_inhibits() -> None:
    charger = load_profile("EVSE-HEC")
    profiles = {"sio": load_profile("SIO-1"), "lockers-1": load_profile("LCK-16")}
    profiles |= {"charger-1": charger, "charger-2": charger}
    fire = Interlock.model_validate(
        {
            "name": "fire-alarm",
            "when": {"point": "sio.fire_alarm_loop", "eq": False},
            "actions": [
                {"write": "charger-1.max_current", "value": 0, "priority": 1, "limit": True},
                {"inhibit": "lockers-1.deposits"},
                {"alarm": "critical", "message": "fire alarm"},
            ],
        }
    )
    normal = Interlock.model_validate(
        {
            "name": "charging",
            "when": {"point": "charger-2.cp_state", "ne": "F"},
            "actions": [{"write": "charger-2.max_current", "value": 16, "priority": 8}],
        }
    )
    idle = Interlock.model_validate(
        {
            "name": "idle",
            "when": {"point": "charger-2.cp_state", "eq": "F"},
            "actions": [{"write": "charger-2.max_current", "value": 0, "priority": 3}],
        }
    )
    rules = [RuleRuntime(spec, profiles) for spec in (fire, normal, idle)]
    rules[0].active = rules[1].active = True
    assert holding(rules) == {"charger-1": ["fire-alarm"], "lockers-1": ["fire-alarm"]}


def test_data_quality_names_the_worst_and_how_many_points_have_it() -> None:
    assert data_summary([]) == ("-", Quality.OFFLINE)
    assert data_summary([Quality.GOOD, Quality.STALE, Quality.STALE]) == ("2 stale", Quality.STALE)
    assert data_summary([Quality.STALE, Quality.BAD]) == ("1 bad", Quality.BAD)
    assert data_summary([Quality.OFFLINE] * 4) == ("offline", Quality.OFFLINE)


def test_key_points_are_shown_by_their_labels() -> None:
    profile = parse_profile(
        """
model = "TEST-LIFT"
kind = "elevator"
description = "a lift"
key_points = ["car_position", "mode"]
points = [
  { name = "car_position", table = "input", address = 0, type = "u16", label = "Car at floor" },
  { name = "mode", table = "input", address = 1, type = "u16" },
]
""",
        "TEST-LIFT.toml",
    )
    shown = device("lift", profile)
    assert [kp.label for kp in shown.key_points] == ["Car at floor", "mode"]
    lines = render(screen.StatusScreen(example_site(devices=(shown,))), 160)
    [line] = [ln for ln in lines if ln.startswith("lift")]
    assert "Car at floor=12345" in line
    assert key_point(profile.point("mode"), None).text == "n/a"


# -- 80 columns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "dropped"),
    [
        (80, screen.DEVICE_DROP_ORDER[:6]),
        (100, screen.DEVICE_DROP_ORDER[:3]),
        (160, ()),
    ],
)
def test_the_screen_fits_the_width_dropping_columns_in_the_stated_order(
    width: int, dropped: tuple[str, ...]
) -> None:
    snap = example_site(alarms=(alarm("charger-1", Severity.MAJOR, "residual current " * 9),))
    lines = render(screen.StatusScreen(snap), width)
    assert max(cell_len(line) for line in lines) <= width
    table, actually = screen.device_table(snap, width)
    assert actually == dropped
    kept = [c for c in screen.DEVICE_COLUMNS if c not in dropped]
    assert [c.header for c in table.columns] == kept
    [header] = [line for line in lines if line.startswith("device ")]
    for column in screen.DEVICE_COLUMNS:
        assert (column in header) is (column not in dropped), column
    assert "…" in lines[2 + len(snap.devices) // 2] or width == 160  # key points cut, not wrapped


def test_the_bus_table_fits_80_columns() -> None:
    lines = render(screen.StatusScreen(example_site()), 80)
    [header] = [line for line in lines if line.startswith("bus ")]
    assert "utilisation" in header
    assert max(cell_len(line) for line in lines) <= 80


# -- a real full-screen display --------------------------------------------------------------


def test_the_alarm_area_keeps_its_place_at_the_bottom_whatever_the_number_of_devices() -> None:
    lift = alarm("elevator-1", Severity.CRITICAL, "passenger trapped")
    many = example_site(alarms=(lift,))
    few = dataclasses.replace(many, devices=many.devices[:2])
    screens = [render(screen.StatusScreen(s), 80, 30) for s in (many, few)]
    where = [lines.index("active alarms: 1 critical") for lines in screens]
    assert where == [30 - screen.ALARM_LINES - 1] * 2
    assert render(screen.StatusScreen(example_site()), 80, 30)[where[0]] == "no active alarms"


def test_more_alarms_than_the_area_holds_are_counted_not_spilled() -> None:
    alarms = tuple(alarm(f"charger-{i}", Severity.MAJOR, "locked out", f"k{i}") for i in range(9))
    lines = render(screen.StatusScreen(example_site(alarms=alarms)), 80, 30)
    area = lines[30 - screen.ALARM_LINES - 1 : 30 - 1]
    assert area[0] == "active alarms: 9 major"
    assert area[-1].strip() == "… 5 more: gateway alarms"


def test_a_short_screen_gives_up_the_bus_table_before_any_device() -> None:
    snap = example_site()
    lines = render(screen.StatusScreen(snap), 80, 24)
    assert len(lines) == 24
    assert all(any(line.startswith(d.name) for line in lines) for d in snap.devices)
    assert not any(line.startswith("bus ") for line in lines)


def test_each_frame_redraws_the_whole_screen_from_its_top_left_corner() -> None:
    """No leftover header when the content shrinks: each frame starts at home and is exactly
    the height of the screen, on the terminal's alternate screen, left when drawing ends."""
    out = io.StringIO()
    console = Console(file=out, width=80, height=30, force_terminal=True, force_interactive=True)
    big = example_site(alarms=(alarm("sio", Severity.CRITICAL, "fire alarm"),))
    small = dataclasses.replace(big, devices=big.devices[:1], buses=big.buses[:1], alarms=())
    screen.serve([big, small], console)
    drawn = out.getvalue()
    assert drawn.startswith("\x1b[?1049h")  # the alternate screen ...
    assert drawn.rstrip().endswith("\x1b[?1049l")  # ... and back
    frames = drawn.split("\x1b[H")[1:]
    assert len(frames) >= 2
    last = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", frames[-1])
    assert last.count("\n") == 30 - 1
    assert "fire alarm" not in last
    assert "charger-4" not in last


def test_the_screen_process_draws_only_the_newest_of_the_frames_waiting() -> None:
    site = example_site()
    frames = [dataclasses.replace(site, title=f"frame {i}") for i in range(3)]
    read, write = os.pipe()
    with os.fdopen(write, "wb") as w:
        w.write(b"".join(map(screen.frame, frames)))
    with os.fdopen(read, "rb", buffering=0) as r:
        assert [f.title for f in screen.read_frames(r)] == ["frame 2"]
    assert [f.title for f in screen.read_frames(io.BytesIO(screen.frame(site)))] == [site.title]


def test_the_screen_process_draws_until_its_stdin_closes(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.write_bytes(screen.frame(example_site()))
    with frames.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli.screen"],
            stdin=stdin,
            capture_output=True,
            env={**os.environ, "COLUMNS": "80", "LINES": "30"},
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert b"lianhua-garden / gw-01" in done.stdout
    assert done.stdout.startswith(b"\x1b[?1049h")


# -- no terminal: log lines --------------------------------------------------------------------


def test_without_a_terminal_it_logs_instead_of_drawing() -> None:
    assert not status.can_draw(Console(file=io.StringIO()))
    assert status.can_draw(Console(file=io.StringIO(), force_terminal=True))


def test_the_summary_line_names_the_devices_that_are_not_ok_and_why() -> None:
    snap = example_site(alarms=(alarm("charger-1", Severity.MAJOR, "locked out"),))
    snap = dataclasses.replace(
        snap,
        devices=(
            dataclasses.replace(snap.devices[0], health=Health.OFFLINE),
            dataclasses.replace(snap.devices[5], health=Health.FAULT, why="locked out"),
            *snap.devices[6:],
        ),
    )
    line = status.summary_line(snap)
    assert line.startswith(
        "7 devices: 1 offline (sio), 1 fault (charger-1: locked out), 5 ok; alarms: 1 major;"
    )


def test_alarm_events_are_logged_at_a_level_that_follows_their_severity() -> None:
    raised = alarm("sio", Severity.CRITICAL, "fire alarm", key="fire-alarm/critical")
    assert status.alarm_line(raised) == (
        logging.CRITICAL,
        "alarm raised: critical sio: fire alarm [fire-alarm/critical]",
    )
    cleared = dataclasses.replace(raised, kind="cleared", by="maint")
    assert status.alarm_line(cleared)[0] == logging.INFO
    assert status.alarm_line(cleared)[1].endswith("(by maint)")


def test_on_the_journal_lines_carry_journald_priorities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w") as stream:
        assert not status.on_journal(stream)
        st = Path(stream.name).stat()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert status.on_journal(stream)
    record = logging.LogRecord("gateway.status", logging.ERROR, "", 0, "locked out", None, None)
    assert status._JournalFormatter().format(record) == "<3>locked out"


def test_run_help_says_when_it_logs_instead_of_drawing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Without a terminal (under systemd" in text
    assert ", ".join(screen.DEVICE_DROP_ORDER) in text
