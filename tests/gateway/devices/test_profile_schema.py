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
