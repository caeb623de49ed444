"""The wire contract: payloads round-trip, and bad input is refused with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import wire

names = st.from_regex(r"^[a-z0-9][a-z0-9-]{0,10}$", fullmatch=True)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31), st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
readings = st.builds(
    wire.Reading,
    d=names,
    p=st.from_regex(r"^[a-z][a-z0-9_]{0,10}$", fullmatch=True),
    v=scalars,
    q=st.sampled_from(["good", "stale", "bad", "offline"]),
    t=st.floats(0, 2e9),
)


@given(seq=st.integers(1, 2**40), readings=st.lists(readings, max_size=20))
def test_telemetry_batches_round_trip(seq: int, readings: list[wire.Reading]) -> None:
    batch = wire.TelemetryBatch(seq=seq, at=1.7e9, readings=readings)
    assert wire.decode(wire.TelemetryBatch, wire.encode(batch)) == batch


@given(site=names, gw=names, kind=st.sampled_from(list(wire.Kind)))
def test_topics_round_trip(site: str, gw: str, kind: wire.Kind) -> None:
    assert wire.parse_topic(wire.topic(site, gw, kind)) == (site, gw, kind)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (json.dumps({"v": 2, "seq": 1, "at": 0, "readings": []}).encode(), "schema version 2"),
        (json.dumps({"v": 1, "seq": 0, "at": 0, "readings": []}).encode(), "seq"),
        (json.dumps({"v": 1, "seq": 1, "at": 0, "readings": [], "x": 1}).encode(), "x"),
        (b"{" + b" " * wire.MAX_PAYLOAD + b"}", "over the"),
    ],
)
def test_bad_payloads_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(wire.TelemetryBatch, data)


def test_a_topic_outside_the_contract_names_itself() -> None:
    with pytest.raises(wire.WireError, match="unknown kind 'weather'"):
        wire.parse_topic("doorstep/v1/site/gw-1/weather")
    with pytest.raises(wire.WireError, match="expected doorstep/v1/SITE/GATEWAY/KIND"):
        wire.parse_topic("other/v1/site/gw-1/state")
