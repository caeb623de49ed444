"""`gateway check`: a site config is validated completely and every problem names its key."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.errors import ConfigError
from gateway.site import load_site, parse_site

BASE = """
[gateway]
site = "test-site"
id = "gw-1"

[[buses]]
name = "line-a"
kind = "rtu"
port = "/dev/ttyUSB0"
baudrate = 9600

[[buses]]
name = "lan"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "elevator-1"
profile = "ELV-24476"
bus = "line-a"
unit_id = 1
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_site(text, "site.toml")
    return info.value.problems


def device(**fields: object) -> str:
    body = "\n".join(
        f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in fields.items()
    )
    return f"\n[[devices]]\n{body}\n".replace("'", '"')


def test_valid_config_loads_with_defaults() -> None:
    site = parse_site(BASE, "site.toml")
    assert site.devices[0].unit_id == 1
    assert site.periods(site.devices[0]).safety == pytest.approx(0.2)


def test_unit_id_outside_the_rtu_range_names_the_exact_key() -> None:
    text = BASE + device(name="lift-2", profile="ELV-24476", bus="line-a", unit_id=300)
    assert "devices[lift-2].unit_id: 300 is outside 1..247" in problems_of(text)


def test_misspelt_key_is_named() -> None:
    text = BASE.replace("baudrate = 9600", "baudrat = 9600")
    assert any(p.startswith("buses[line-a].rtu.baudrat: unknown key") for p in problems_of(text))


def test_unknown_bus_lists_the_known_ones() -> None:
    text = BASE + device(name="lift-2", profile="ELV-24476", bus="line-b", unit_id=2)
    expected = "devices[lift-2].bus: 'line-b' is not a bus of this site (buses: lan, line-a)"
    assert expected in problems_of(text)


def test_unknown_profile_names_the_device() -> None:
    text = BASE + device(name="lift-2", profile="ELV-1", bus="line-a", unit_id=2)
    [problem] = problems_of(text)
    assert problem.startswith("devices[lift-2].profile: unknown device profile 'ELV-1'")


def test_unit_id_used_twice_on_one_bus_is_refused() -> None:
    text = BASE + device(name="lift-2", profile="ELV-24476", bus="line-a", unit_id=1)
    expected = "devices[lift-2].unit_id: 1 is already used on bus 'line-a' by devices[elevator-1]"
    assert expected in problems_of(text)


def test_every_problem_is_reported_at_once() -> None:
    text = (
        BASE
        + device(name="lift-2", profile="ELV-24476", bus="nowhere", unit_id=5)
        + device(name="lift-3", profile="ELV-24476", bus="line-a", unit_id=0)
    )
    assert len(problems_of(text)) == 2


def test_non_standard_baud_rate_lists_the_standard_ones() -> None:
    text = BASE.replace("baudrate = 9600", "baudrate = 9601")
    [problem] = problems_of(text)
    assert problem.startswith("buses[line-a].rtu.baudrate: 9601 is not a standard rate (1200,")


def test_broken_toml_gives_line_and_column() -> None:
    [problem] = problems_of(BASE + "\n[[devices]\n")
    assert "not valid TOML" in problem
    assert "line" in problem


def test_check_command_exits_2_and_prints_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(BASE + device(name="lift-2", profile="ELV-24476", bus="line-a", unit_id=300))
    assert main(["check", str(path)]) == 2
    assert "devices[lift-2].unit_id: 300 is outside 1..247" in capsys.readouterr().out


def test_shipped_example_site_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    example = resources.files("gateway.examples").joinpath("community.toml")
    assert main(["check", str(example)]) == 0
    out = capsys.readouterr().out
    assert "6 bus(es), 11 device(s)" in out


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_site(tmp_path / "absent.toml")


# -- [uplink] ------------------------------------------------------------------------------------


def test_a_site_without_uplink_runs_offline_and_one_with_it_gets_the_defaults() -> None:
    assert parse_site(BASE, "site.toml").uplink is None
    site = parse_site(BASE + '\n[uplink]\nbroker = "mqtt://127.0.0.1:1883"\n', "site.toml")
    assert site.uplink is not None
    assert site.uplink.health_interval_s == 30
    assert (site.uplink.host, site.uplink.port) == ("127.0.0.1", 1883)


def test_uplink_mistakes_name_their_key() -> None:
    text = BASE + '\n[uplink]\nbroker = "tcp://fleet"\nbatch_interval_s = 0\nhost = "x"\n'
    found = problems_of(text)
    assert any(p.startswith("uplink.broker: ") and "mqtt://" in p for p in found)
    assert any(p.startswith("uplink.batch_interval_s: ") for p in found)
    assert "uplink.host: unknown key (not part of the schema; check the spelling)" in found


def test_uplink_point_overrides_must_name_points_of_the_site() -> None:
    text = BASE + (
        '\n[uplink]\nbroker = "mqtt://fleet"\n'
        '[uplink.points."elevator-1.car_position"]\ndeadband = 1\n'
        '[uplink.points."elevator-1.no_such_point"]\ndeadband = 1\n'
        '[uplink.points."lift-9.car_position"]\ndeadband = 1\n'
    )
    found = problems_of(text)
    missing = "uplink.points.elevator-1.no_such_point: device 'elevator-1' has no point"
    assert f"{missing} 'no_such_point'" in found
    assert any(p.startswith("uplink.points.lift-9.car_position: no device 'lift-9'") for p in found)
    assert not any(p.startswith("uplink.points.elevator-1.car_position") for p in found)


def test_check_command_reports_a_bad_uplink_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(BASE + '\n[uplink]\nbroker = "mqtt://fleet"\nwindow = 0\n', encoding="utf-8")
    assert main(["check", str(path)]) == 2
    assert "uplink.window: " in capsys.readouterr().out


def test_the_alarms_table_sets_when_an_alarm_chatters_and_how_long_it_must_be_quiet() -> None:
    site = parse_site(BASE + "\n[alarms]\nmax_raises = 5\nquiet_s = 60\n", "site.toml")
    assert (site.alarms.max_raises, site.alarms.window_s, site.alarms.quiet_s) == (5, 600.0, 60.0)
    assert parse_site(BASE, "site.toml").alarms.quiet_s == 300.0
    [problem] = problems_of(BASE + "\n[alarms]\nquiet_s = -1\nhold = 2\n")[:1]
    assert "alarms.quiet_s" in problem
    assert any("alarms.hold" in p for p in problems_of(BASE + "\n[alarms]\nhold = 2\n"))
