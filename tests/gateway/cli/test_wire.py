"""``gateway wire decode``: captured payloads back into JSON a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import wire
from gateway.cli.main import main
from gateway.wire import compact

POINT_MAP = compact.PointMap.of([("meter", "w"), ("meter", "v"), ("sio", "door")])
AT = 1764000013.25


def capture(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_compact_batch_and_its_map_read_back_as_the_readings_the_gateway_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = compact.encode_batch(
        1, AT, [("meter", "w", 1200.5, "good", AT)], POINT_MAP, inline=True
    )
    later = compact.encode_batch(
        2, AT + 1, [("sio", "door", True, "good", AT + 0.5), ("meter", "v", None, "offline", AT)],
        POINT_MAP, inline=False,
    )  # fmt: skip
    # the later one first: the map is learnt from any file given, whatever its place;
    # mosquitto_sub without -N adds a newline to what it prints
    files = [capture(tmp_path, "2.bin", later + b"\n"), capture(tmp_path, "1.bin", first)]
    assert main(["wire", "decode", *map(str, files)]) == 0
    later_doc, first_doc = json.loads(capsys.readouterr().out)
    assert later_doc["readings"] == [
        {"d": "sio", "p": "door", "v": True, "q": "good", "t": AT + 0.5},
        {"d": "meter", "p": "v", "v": None, "q": "offline", "t": AT},
    ]
    assert (later_doc["v"], later_doc["seq"], later_doc["map"]) == (2, 2, POINT_MAP.id)
    assert first_doc["point_map"] == {"meter": ["w", "v"], "sio": ["door"]}


def test_version_1_and_other_kinds_print_as_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = wire.TelemetryBatch(
        seq=4, at=AT, readings=[wire.Reading(d="meter", p="w", v=3, q="good", t=AT)]
    )
    path = capture(tmp_path, "v1.json", wire.encode(batch))
    assert main(["wire", "decode", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == batch.model_dump()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            compact.encode_batch(7, AT, [], POINT_MAP, inline=False),
            f"batch 7 refers to point map {POINT_MAP.id}, which none of the files given carries",
        ),
        (b"\x02garbage", "not zlib data"),
        (b"\x89PNG", "neither JSON nor compact telemetry"),
    ],
)
def test_a_payload_that_cannot_be_read_is_named_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, says: str
) -> None:
    path = capture(tmp_path, "x.bin", data)
    assert main(["wire", "decode", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"✗ {path}" in err
    assert says in err


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wire", "decode", str(tmp_path / "nope.bin")]) == 2
    assert "nope.bin: cannot read it" in capsys.readouterr().err
