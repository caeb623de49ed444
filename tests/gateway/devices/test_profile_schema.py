"""Loading profiles strictly: unknown keys and inconsistent fields are named, not ignored."""

import pytest

from gateway.devices.profile import PointType, available_models, load_profile, parse_profile
from gateway.errors import ProfileError

MINIMAL = """
model = "TEST-1"
kind = "meter"
description = "test"
points = [ {{ name = "w", table = "input", address = 0, type = "i16"{extra} }} ]
"""


def test_every_shipped_profile_loads() -> None:
    models = available_models()
    assert "ELV-24476" in models
    for model in models:
        assert load_profile(model).points


def test_unknown_key_is_rejected_with_its_path() -> None:
    with pytest.raises(ProfileError, match=r"points\[0\]\.scael: unknown key"):
        parse_profile(MINIMAL.format(extra=", scael = 0.1"), "t.toml")


def test_scale_on_a_string_point_is_rejected() -> None:
    text = MINIMAL.replace('type = "i16"', 'type = "string", length = 4').format(
        extra=", scale = 0.1"
    )
    with pytest.raises(ProfileError, match="only numeric points can be scaled"):
        parse_profile(text, "t.toml")


def test_overlapping_points_are_rejected() -> None:
    text = MINIMAL.format(extra="").replace(
        "]\n", ', { name = "x", table = "input", address = 0, type = "u32" } ]\n'
    )
    with pytest.raises(ProfileError, match="'w' and 'x' overlap at input address 0"):
        parse_profile(text, "t.toml")


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"unknown device profile 'ELV-9'.*ELV-24476"):
        load_profile("ELV-9")


def test_defaults_are_resolved_at_load() -> None:
    hb = load_profile("ELV-24476").point("gw_heartbeat")
    assert hb.poll == "never"
    assert hb.writable
    assert not hb.readable
    assert load_profile("ELV-24476").point("fault_bitmap").type is PointType.BITFIELD


def _grouped(points: str, extra: str = "") -> str:
    return f'model = "TEST-1"\nkind = "meter"\ndescription = "test"\n{extra}points = [ {points} ]\n'


def test_points_read_together_are_polled_at_the_groups_fastest_class() -> None:
    profile = parse_profile(
        _grouped(
            '{ name = "i", table = "input", address = 0, type = "i16", poll = "safety", '
            'group = "power" }, { name = "w", table = "input", address = 40, type = "i16", '
            'group = "power" }, { name = "hz", table = "input", address = 41, type = "i16" }'
        ),
        "t.toml",
    )
    assert profile.point("w").poll == "safety"  # from one reading with the current
    assert profile.point("hz").poll == "telemetry"  # not in the group: its own class
    assert [p.name for p in profile.groups["power"]] == ["i", "w"]


@pytest.mark.parametrize(
    ("points", "extra", "expected"),
    [
        (
            '{ name = "i", table = "input", address = 0, type = "i16", group = "g" }, '
            '{ name = "w", table = "holding", address = 1, type = "i16", group = "g" }',
            "",
            r"group 'g' \(i, w\): its points are in different tables",
        ),
        (
            '{ name = "i", table = "input", address = 0, type = "i16", group = "g" }, '
            '{ name = "w", table = "input", address = 200, type = "i16", group = "g" }',
            "",
            r"group 'g' \(i, w\): spans 201 addresses, more than one read \(125\)",
        ),
        (
            '{ name = "i", table = "input", address = 0, type = "i16", group = "g" }, '
            '{ name = "w", table = "input", address = 9, type = "i16", group = "g" }',
            'unreadable = [ { table = "input", start = 4, end = 5 } ]\n',
            r"group 'g' \(i, w\): unreadable range 4..5 lies inside it",
        ),
        (
            '{ name = "i", table = "input", address = 0, type = "i16", group = "g" }',
            "",
            r"group 'g' \(i\): a group needs at least two points",
        ),
        (
            '{ name = "i", table = "holding", address = 0, type = "i16", group = "g" }, '
            '{ name = "w", table = "holding", address = 1, type = "i16", access = "w", '
            'group = "g" }',
            "",
            r"group 'g' \(i, w\): a point that is not read cannot be in a group",
        ),
    ],
    ids=["tables", "too-long", "unreadable", "alone", "write-only"],
)
def test_a_group_that_one_read_cannot_serve_is_refused_by_name(
    points: str, extra: str, expected: str
) -> None:
    with pytest.raises(ProfileError, match=expected):
        parse_profile(_grouped(points, extra), "t.toml")
