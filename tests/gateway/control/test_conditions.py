"""Interlock conditions in three-valued logic, against a reference Kleene evaluator."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.control.conditions import Truth, compile_condition, evaluate
from gateway.control.rules import Compare
from gateway.devices.profile import load_profile
from gateway.image import ProcessImage, Quality
from gateway.site import parse_site

PROFILES = {"sio": load_profile("SIO-1")}
INPUTS = ["fire_alarm_loop", "estop", "charger_feeder_fb", "pv_rsd_fb"]

leaf = st.sampled_from(INPUTS).map(lambda p: {"point": f"sio.{p}", "eq": True})
trees = st.recursive(
    leaf,
    lambda sub: st.one_of(
        st.lists(sub, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(sub, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        sub.map(lambda x: {"not": x}),
    ),
    max_leaves=8,
)
states = st.fixed_dictionaries({p: st.sampled_from([True, False, None]) for p in INPUTS})


def reference(tree: dict[str, Any], state: dict[str, bool | None]) -> bool | None:
    if "point" in tree:
        return state[tree["point"].split(".")[1]]
    if "not" in tree:
        inner = reference(tree["not"], state)
        return None if inner is None else not inner
    parts = [reference(t, state) for t in tree.get("all", tree.get("any", []))]
    decisive = "all" not in tree  # all: False decides; any: True decides
    if decisive in parts:
        return decisive
    return None if None in parts else not decisive


@given(tree=trees, state=states)
def test_conditions_follow_kleene_logic_with_untrusted_inputs_unknown(
    tree: dict[str, Any], state: dict[str, bool | None]
) -> None:
    from pydantic import TypeAdapter

    from gateway.control.rules import Condition

    condition = TypeAdapter(Condition).validate_python(tree)
    image = ProcessImage()
    for point, value in state.items():
        image.declare("sio", point, stale_after_s=60)
        if value is None:
            image.mark("sio", point, Quality.OFFLINE)
        else:
            image.update("sio", point, value)
    got = evaluate(compile_condition(condition, PROFILES), image).truth
    want = reference(tree, state)
    assert got is {True: Truth.TRUE, False: Truth.FALSE, None: Truth.UNKNOWN}[want]


def test_hysteresis_holds_a_limit_until_the_value_is_back_past_the_band() -> None:
    profiles = {"c": load_profile("EVSE-HEC")}
    node = compile_condition(Compare(point="c.temperature", gt=60.0, hysteresis=5.0), profiles)
    image = ProcessImage()
    image.declare("c", "temperature", stale_after_s=60)
    seen = []
    for t in (50.0, 61.0, 58.0, 55.5, 55.0, 59.0, 60.5):
        image.update("c", "temperature", t)
        seen.append(evaluate(node, image).truth is Truth.TRUE)
    assert seen == [False, True, True, True, False, False, True]


def test_a_misspelt_point_or_label_in_an_interlock_names_its_key() -> None:
    import pytest

    from gateway.errors import ConfigError

    text = """
[gateway]
site = "s"
id = "g"
[[buses]]
name = "b"
kind = "tcp"
host = "127.0.0.1"
[[devices]]
name = "lift"
profile = "ELV-24476"
bus = "b"
unit_id = 1
[[interlocks]]
name = "trapped"
when.all = [
  { point = "lift.car_staus", eq = "stopped" },
  { point = "lift.car_status", eq = "parked" },
]
actions = [ { write = "lift.car_position", value = 1 }, { alarm = "critical", message = "x" } ]
"""
    with pytest.raises(ConfigError) as caught:
        parse_site(text, "site.toml")
    problems = caught.value.problems
    missing = "interlocks[trapped].when: lift.car_staus: profile ELV-24476 has no point 'car_staus'"
    assert missing in problems  # the interlock by its name
    assert any(
        "lift.car_status: no value 'parked' (values: stopped, running)" in p for p in problems
    )
    assert "interlocks[trapped].actions[0].write: lift.car_position: is not writable" in problems
