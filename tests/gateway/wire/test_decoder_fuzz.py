"""The wire decoder, fed arbitrary bytes and arbitrary JSON structures for every kind: a model
or a WireError naming the problem, never another exception (issue 11.5); and the fleet's
checks on top of it: a message of a stored kind is decoded or Rejected with a known reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import Rejected
from fleet.ingest.checks import REASONS, decode
from gateway import wire

KINDS = sorted(wire.MODELS, key=str)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(st.characters(exclude_categories=()), max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=20,
)
#: Objects with the contract's keys, so that decoding gets past the first check.
contract_like = st.builds(
    lambda version, body: {"v": version, **body},
    st.one_of(st.just(1), json_values),
    st.dictionaries(
        st.sampled_from(
            ["seq", "at", "readings", "events", "status", "devices", "uptime_s", "version",
             "d", "p", "v", "q", "t", "id", "kind", "key", "loop", "buses"]
        ),
        json_values,
        max_size=6,
    ),
)  # fmt: skip


def _bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"\x02" + b),  # compact telemetry's marker
    json_values.map(_bytes),
    contract_like.map(_bytes),
    st.integers(1, 60_000).map(lambda n: b"[" * n),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS), payloads)
def test_the_decoder_answers_a_model_or_a_wire_error(kind: wire.Kind, data: bytes) -> None:
    model = wire.MODELS[kind]
    try:
        decoded: wire.Payload | None = wire.decode(model, data)
    except wire.WireError as refused:
        decoded, said = None, str(refused)
    except RecursionError:
        pytest.fail("deep nesting escaped the decoder as a RecursionError")
    if decoded is None:
        assert said
    else:
        assert isinstance(decoded, model)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS), payloads)
def test_the_fleet_checks_answer_a_message_or_a_known_reason(kind: wire.Kind, data: bytes) -> None:
    try:
        decode(wire.topic("s", "g", kind), data)
    except Rejected as refused:
        reason, said = refused.reason, str(refused)
    else:
        return
    assert reason in REASONS
    said.encode()  # the rejection log can print it
