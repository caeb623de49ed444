"""A site's own profiles: found in its profile directories and next to its file, checked like
the shipped ones, and never silently in place of a shipped model."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.devices.library import MAX_PROFILE_BYTES, ProfileLibrary
from gateway.errors import ConfigError
from gateway.site import load_site, parse_site

SITE = """{extra}
[gateway]
site = "test-site"
id = "gw-1"
[[buses]]
name = "line-a"
kind = "rtu"
port = "/dev/ttyUSB0"

[[devices]]
name = "meter-1"
profile = "{model}"
bus = "line-a"
unit_id = 1
"""

TEST_METER = """
model = "{model}"
kind = "meter"
description = "a 50-register test meter"
{extra}
points = [
  {{ name = "voltage", table = "input", address = 0, type = "u16", scale = 0.1, unit = "V" }},
  {{ name = "power", table = "input", address = 1, type = "i32", unit = "W" }},
]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(site: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_site(site)
    return info.value.problems


def shipped(model: str) -> str:
    return (resources.files("gateway.devices.profiles") / f"{model}.toml").read_text("utf-8")


def test_a_profile_in_a_site_directory_is_used_by_the_site(tmp_path: Path) -> None:
    write(tmp_path / "profiles" / "TEST-50.toml", TEST_METER.format(model="TEST-50", extra=""))
    site_file = write(
        tmp_path / "site.toml", SITE.format(extra='profile_dirs = ["profiles"]', model="TEST-50")
    )
    site = load_site(site_file)
    assert site.profile(site.devices[0]).point("voltage").scale == 0.1
    assert "TEST-50" in site.profile_library.models()


def test_a_profile_next_to_the_site_file_is_found(tmp_path: Path) -> None:
    write(tmp_path / "TEST-50.toml", TEST_METER.format(model="TEST-50", extra=""))
    site = load_site(write(tmp_path / "site.toml", SITE.format(extra="", model="TEST-50")))
    assert site.profile(site.devices[0]).model == "TEST-50"


def test_a_site_profile_may_not_shadow_a_shipped_model_silently(tmp_path: Path) -> None:
    write(tmp_path / "p" / "SUNSPEC-METER.toml", TEST_METER.format(model="SUNSPEC-METER", extra=""))
    site_file = write(
        tmp_path / "site.toml", SITE.format(extra='profile_dirs = ["p"]', model="SUNSPEC-METER")
    )
    [problem] = problems(site_file)
    assert "SUNSPEC-METER is a shipped profile" in problem
    assert "overrides = true" in problem


def test_overrides_true_replaces_the_shipped_model_for_this_site_only(tmp_path: Path) -> None:
    text = shipped("SUNSPEC-METER").replace(
        'model = "SUNSPEC-METER"', 'model = "SUNSPEC-METER"\noverrides = true'
    )
    text = text.replace('key_points = ["w", "a"]', 'key_points = ["w"]')
    write(tmp_path / "p" / "SUNSPEC-METER.toml", text)
    site = load_site(
        write(
            tmp_path / "site.toml", SITE.format(extra='profile_dirs = ["p"]', model="SUNSPEC-METER")
        )
    )
    assert site.profile(site.devices[0]).key_points == ("w",)
    other = load_site(
        write(tmp_path / "b" / "site.toml", SITE.format(extra="", model="SUNSPEC-METER"))
    )
    assert other.profile(other.devices[0]).key_points == ("w", "a")


def test_overrides_without_a_shipped_model_is_an_error(tmp_path: Path) -> None:
    write(
        tmp_path / "p" / "TEST-50.toml",
        TEST_METER.format(model="TEST-50", extra="overrides = true"),
    )
    found = problems(
        write(tmp_path / "site.toml", SITE.format(extra='profile_dirs = ["p"]', model="TEST-50"))
    )
    assert any("no shipped profile TEST-50" in p for p in found), found


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("TEST-50.toml", TEST_METER.format(model="TEST-51", extra=""), "must match its file name"),
        ("TEST-50.toml", "model = [", "not valid TOML"),
        (
            "TEST-50.toml",
            TEST_METER.format(model="TEST-50", extra="").replace("u16", "u17"),
            "type",
        ),
        ("TEST-50.toml", b'model = "\xff"', "not UTF-8"),
        ("TEST-50.toml", "#" * (MAX_PROFILE_BYTES + 1), "a profile is at most"),
    ],
)
def test_a_bad_site_profile_is_reported_with_its_file(
    tmp_path: Path, name: str, content: str | bytes, expected: str
) -> None:
    path = tmp_path / "p" / name
    path.parent.mkdir()
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    found = problems(
        write(tmp_path / "site.toml", SITE.format(extra='profile_dirs = ["p"]', model="TEST-50"))
    )
    assert any(str(path) in p and expected in p for p in found), found


def test_a_fifo_in_a_profile_directory_is_refused_not_waited_on(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    os.mkfifo(tmp_path / "p" / "TEST-50.toml")
    lib = ProfileLibrary.load([tmp_path / "p"])
    assert any("not a regular file" in p for p in lib.problems)


def test_a_missing_profile_directory_names_the_key(tmp_path: Path) -> None:
    site_file = write(
        tmp_path / "site.toml", SITE.format(extra='profile_dirs = ["nope"]', model="SUNSPEC-METER")
    )
    assert any(p.startswith("profile_dirs[0]:") for p in problems(site_file))


def test_gateway_check_validates_site_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path / "p" / "TEST-50.toml",
        TEST_METER.format(model="TEST-50", extra="").replace("address = 1", "address = 0"),
    )
    site_file = write(
        tmp_path / "site.toml", SITE.format(extra='profile_dirs = ["p"]', model="TEST-50")
    )
    assert main(["check", str(site_file)]) == 2
    out = capsys.readouterr().out
    assert "overlap" in out
    assert "TEST-50.toml" in out


INLINE = """
[[profiles]]
model = "TEST-50"
kind = "meter"
description = "a 50-register test meter, inside the site document"
points = [
  { name = "voltage", table = "input", address = 0, type = "u16", scale = 0.1, unit = "V" },
]
"""


def test_a_profile_inside_the_site_document_travels_with_it() -> None:
    """What the fleet pushes is the document alone: a [[profiles]] table goes with it."""
    site = parse_site(SITE.format(extra="", model="TEST-50") + INLINE, "pushed version 3")
    assert site.profile(site.devices[0]).point("voltage").unit == "V"
    assert site.profile_library.origin("TEST-50") == "profiles[0]"


def test_a_bad_profile_inside_the_site_document_names_its_table() -> None:
    text = SITE.format(extra="", model="TEST-50") + INLINE.replace('"u16"', '"u17"')
    with pytest.raises(ConfigError) as info:
        parse_site(text, "site.toml")
    assert any(p.startswith("profiles[0]: points[0].type") for p in info.value.problems)


def test_a_watchdog_timeout_the_device_does_not_take_over_modbus_is_refused() -> None:
    text = SITE.format(extra="", model="KEBA-P30").replace(
        "unit_id = 1", "unit_id = 1\nwatchdog_timeout_s = 30"
    )
    with pytest.raises(ConfigError) as info:
        parse_site(text, "site.toml")
    assert info.value.problems == [
        "devices[meter-1].watchdog_timeout_s: KEBA-P30 does not take its timeout over Modbus "
        "(failsafe_timeout_setting is read-only): set it when commissioning the device"
    ]


def test_profile_directories_of_a_document_without_a_file_are_refused_with_the_way_out() -> None:
    """The fleet checks a pushed document with no file beside it."""
    text = SITE.format(extra='profile_dirs = ["profiles"]', model="SUNSPEC-METER")
    with pytest.raises(ConfigError) as info:
        parse_site(text, "pushed version 4")
    assert info.value.problems[0] == (
        "profile_dirs[0]: 'profiles' is relative, and this document has no file to be "
        "relative to: put the site's own profiles in [[profiles]] tables"
    )
