"""Every point a person may see has words in both languages: a label for every point of
every profile, a label for every enum value, flag value and bitfield bit, and a Chinese
translation of each (and of every message of the screens) in the catalogue."""

from __future__ import annotations

import pytest

from fleet.catalog import Shape, catalog
from fleet.i18n.extract import messages, missing
from gateway.devices.profile import PointType, available_models, load_profile

MODELS = available_models()


@pytest.mark.parametrize("model", MODELS)
def test_every_point_has_a_label_and_every_value_its_words(model: str) -> None:
    profile = load_profile(model)
    unlabelled = [p.name for p in profile.points if not p.label]
    assert unlabelled == [], f"{model}: points without a label"
    for p in profile.points:
        labels = p.value_labels or {}
        if p.type is PointType.ENUM:
            assert set(labels) == set(p.enum or {}), f"{model}.{p.name}: a label per enum value"
        elif p.type is PointType.BITFIELD:
            assert set(labels) == set(p.bits or {}), f"{model}.{p.name}: a label per bit"
        elif p.type is PointType.BIT and not p.internal and p.poll != "never":
            assert set(labels) == {0, 1}, f"{model}.{p.name}: a label for 0 and for 1"
        assert set(p.alarm_values) <= set(labels), f"{model}.{p.name}: alarm values unlabelled"


def test_every_message_has_a_chinese_translation() -> None:
    assert missing("zh-Hans", messages()) == []


def test_people_do_not_see_scale_factors_or_bookkeeping_but_the_api_keeps_them() -> None:
    inverter = catalog()["SUNSPEC-INV"].points
    assert not inverter["w_sf"].visible
    assert inverter["w"].visible
    assert inverter["w"].label == "Power"
    sio = catalog()["SIO-1"].points
    assert not sio["watchdog_remaining"].visible
    assert sio["fire_alarm_loop"].shape is Shape.STATE
    assert sio["fire_alarm_loop"].values == {0: "FIRE ALARM", 1: "normal"}
    assert sio["fire_alarm_loop"].alarm_values == [0]
