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


@given(
    seq=st.integers(1, 2**40),
    at=st.floats(0, 2e9),
    readings=st.lists(
        st.builds(
            wire.Reading,
            d=names,
            p=st.from_regex(r"^[a-z][a-z0-9_]{0,10}$", fullmatch=True),
            v=st.one_of(scalars, st.floats()),  # NaN and infinities too: null, as pydantic writes
            q=st.sampled_from(["good", "stale", "bad", "offline"]),
            t=st.floats(0, 2e9),
        ),
        max_size=20,
    ),
)
def test_the_fast_telemetry_encoder_writes_what_the_model_writes(
    seq: int, at: float, readings: list[wire.Reading]
) -> None:
    """The gateway encodes its batches from plain fields; the fleet must get the very same
    bytes as from the models, and decode them to the same batch."""
    fields: list[wire.ReadingFields] = [
        {"d": r.d, "p": r.p, "v": r.v, "q": r.q, "t": r.t} for r in readings
    ]
    fast = wire.encode_telemetry(seq, at, fields)
    batch = wire.TelemetryBatch(seq=seq, at=at, readings=readings)
    assert fast == wire.encode(batch)
    assert wire.decode(wire.TelemetryBatch, fast) == wire.decode(
        wire.TelemetryBatch, wire.encode(batch)
    )


def test_the_fast_telemetry_encoder_refuses_a_batch_over_the_limit() -> None:
    big: wire.ReadingFields = {"d": "d", "p": "p", "v": "x" * 1000, "q": "good", "t": 0.0}
    with pytest.raises(wire.WireError, match=r"TelemetryBatch: \d+ bytes >"):
        wire.encode_telemetry(1, 0.0, [big] * (wire.MAX_PAYLOAD // 1000))


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
