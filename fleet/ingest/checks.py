"""Checks of what a gateway sent, before anything is stored: the topic, the size, the
payload against the wire contract (:mod:`gateway.wire`), its nesting, its text and its numbers.

What fails a check raises :class:`~fleet.errors.Rejected` with one of :data:`REASONS`:

* ``depth``: JSON nested deeper than :data:`MAX_DEPTH` (Python's parser would give up with a
  RecursionError that nothing counts);
* ``text``: a string holding a lone UTF-16 surrogate (JSON's ``"\\ud800"`` escape carries one;
  no database stores it and no page could show it), or a name (device, point, alarm key,
  interlock, model) holding a control character;
* ``number``: a number that is not finite (``1e999`` parses as infinity) or an integer beyond
  what a BIGINT column stores exactly;
* ``sequence``, ``time``, ``limit``: a batch number too far ahead of the last one, a time
  outside the window around the fleet's clock, a gateway beyond its devices or points — the
  writer's checks (:mod:`fleet.ingest.columns`, :mod:`fleet.ingest.sequences`,
  :mod:`fleet.ingest.writer`) against :class:`Limits`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from fleet.core.settings import Settings
from fleet.errors import PointMapNotSeen, Rejected
from fleet.ingest import columns
from gateway import wire
from gateway.wire import compact
from gateway.wire.compact import UnknownPointMap

#: Why a message was refused.
REASONS = (
    "malformed",
    "version",
    "schema",
    "unknown-gateway",
    "oversized",
    "topic",
    "depth",
    "text",
    "number",
    "sequence",
    "time",
    "limit",
    "pointmap",
)
#: The kinds ingest stores itself (:mod:`fleet.ingest.writer`).
STORED = frozenset({wire.Kind.STATE, wire.Kind.TELEMETRY, wire.Kind.EVENTS, wire.Kind.HEALTH})
#: How deep a payload's JSON may nest (the contract's payloads nest four deep at most).
MAX_DEPTH = 16
BIGINT_MAX = columns.BIGINT_MAX
BIGINT_MIN = columns.BIGINT_MIN
#: Bytes of a JSON payload that may carry what :func:`_check_content` refuses: an escaped
#: surrogate, a long run of digits, a large exponent, NaN or Infinity. A payload without any
#: of them is not walked (a telemetry batch is thousands of readings).
_SUSPECT = re.compile(rb"\\[uU][dD][89a-fA-F]|\d{19}|[eE][+-]?\d{3}|NaN|Infinity")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: A JSON string (an unterminated one runs to the end), and a bracket.
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?$)', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


@dataclass(frozen=True)
class Limits:
    """What ingest takes from one gateway (configured by :class:`~fleet.core.settings.Settings`)."""

    #: a batch number at most this far beyond the highest stored one
    max_sequence_step: int = 1_000_000
    #: times at most this far behind the fleet's clock (a clock never set reads 1970)
    max_age_s: float = columns.BEHIND_S
    #: and at most this far ahead of it (clocks differ a little)
    max_ahead_s: float = columns.AHEAD_S
    #: devices and points (device, point pairs) per gateway
    max_devices: int = 1_000
    max_points: int = 50_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_sequence_step=settings.ingest_max_sequence_step,
            max_age_s=settings.ingest_max_age.total_seconds(),
            max_ahead_s=settings.ingest_max_ahead.total_seconds(),
            max_devices=settings.ingest_max_devices,
            max_points=settings.ingest_max_points,
        )


def decode(
    topic: str,
    payload: bytes,
    routed: Collection[wire.Kind] = (),
    maps: compact.PointMaps | None = None,
) -> tuple[str, str, wire.Kind, wire.Payload]:
    """(site, gateway, kind, payload) of a message of a kind ingest stores (:data:`STORED`)
    or an area takes (``routed``), or :class:`Rejected` saying why not. Compact telemetry
    reads its point map from ``maps`` (default: the process's, :data:`compact.MAPS`)."""
    try:
        site, gateway, kind = wire.parse_topic(topic)
    except wire.WireError as exc:
        raise Rejected("topic", str(exc)) from None
    model = wire.MODELS.get(kind)
    if model is None or (kind not in STORED and kind not in routed):
        raise Rejected("topic", f"topic {topic!r}: the fleet does not ingest {kind.value!r}")
    if len(payload) > wire.MAX_PAYLOAD:
        raise Rejected("oversized", f"{len(payload)} bytes, at most {wire.MAX_PAYLOAD}")
    binary = payload[:1] not in (b"{", b"[", b" ", b"\n", b"\t", b"\r")
    if not binary:
        _check_depth(payload)
    try:
        if binary and kind is wire.Kind.TELEMETRY and compact.is_compact(payload):
            message: wire.Payload = compact.decode_batch(payload, maps)
        else:
            message = wire.decode(model, payload)
    except UnknownPointMap as exc:  # compact telemetry before its map (docs/wire.md)
        raise PointMapNotSeen(exc.map_id, str(exc)) from None
    except wire.WireError as exc:
        raise Rejected(_refusal(payload), str(exc)) from None
    except RecursionError:
        raise Rejected("depth", f"nested deeper than this side can parse ({MAX_DEPTH})") from None
    if binary or _SUSPECT.search(payload):
        _check_content(message.model_dump(), model.__name__)
    _check_names(message)
    return site, gateway, kind, message


def _check_depth(payload: bytes) -> None:
    """``depth`` when brackets nest beyond :data:`MAX_DEPTH` (outside strings), before the
    parser recurses into them. Strings are cut out by one regular expression, then only the
    brackets are walked (a telemetry batch is thousands of bytes and a few hundred brackets)."""
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b"", payload)):
        if bracket in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise Rejected("depth", f"JSON nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _refusal(payload: bytes) -> str:
    """Which rule a payload that wire.decode refused broke (only run on refusal)."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "malformed"
    if not isinstance(raw, dict):
        return "malformed"
    return "version" if raw.get("v") != wire.SCHEMA_VERSION else "schema"


def _check_content(value: Any, where: str) -> None:
    """``text`` for a lone surrogate in any string (keys too), ``number`` for a float that is
    not finite or an integer a BIGINT cannot hold."""
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, bool):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Rejected("number", f"{where}: {value} is not a finite number")
    elif isinstance(value, int):
        if not BIGINT_MIN <= value <= BIGINT_MAX:
            raise Rejected("number", f"{where}: {value} is beyond a 64-bit integer")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{where} key")
            _check_content(item, f"{where}.{_shown(key)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_content(item, f"{where}[{index}]")


def _check_text(value: str, where: str) -> None:
    found = _SURROGATE.search(value)
    if found:
        raise Rejected(
            "text",
            f"{where} {_shown(value)!r}: a lone surrogate at character {found.start()} "
            "(text must be valid Unicode)",
        )


def _check_names(message: wire.Payload) -> None:
    """``text`` for a control character in a name a page shows or a URL carries (the names
    of a telemetry batch first searched all at once: thousands of readings name a few
    devices and points)."""
    if isinstance(message, wire.TelemetryBatch):
        names = {r.d for r in message.readings} | {r.p for r in message.readings}
        if not _CONTROL.search("".join(names)):
            return
    for what, name in _names(message):
        found = _CONTROL.search(name)
        if found:
            raise Rejected(
                "text",
                f"{what} {_shown(name)!r}: a control character at character {found.start()}",
            )


def _names(message: wire.Payload) -> Iterable[tuple[str, str]]:
    if isinstance(message, wire.TelemetryBatch):
        for device, point in {(r.d, r.p) for r in message.readings}:
            yield "device", device
            yield f"device {_shown(device)!r} point", point
    elif isinstance(message, wire.EventBatch):
        for event in message.events:
            yield "alarm key", event.key
            yield "interlock", event.interlock
            if event.device is not None:
                yield "device", event.device
    elif isinstance(message, wire.State):
        for device, model in message.devices.items():
            yield "device", device
            yield f"device {_shown(device)!r} model", model


def _shown(value: str) -> str:
    """A stranger's text as a message may quote it: short and encodable."""
    short = value[:40] + ("…" if len(value) > 40 else "")
    return short.encode(errors="backslashreplace").decode()
