"""Checks of what a gateway sent, before anything is stored: the topic, the size, the
payload against the wire contract (:mod:`gateway.wire`) and numbers JSON can carry.

What fails a check raises :class:`~fleet.errors.Rejected` with one of :data:`REASONS`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fleet.errors import Rejected
from gateway import wire

#: Why a message was refused.
REASONS = ("malformed", "version", "schema", "unknown-gateway", "oversized", "topic")


def decode(topic: str, payload: bytes) -> tuple[str, str, wire.Kind, wire.Payload]:
    """(site, gateway, kind, payload) of a message, or :class:`Rejected` saying why not."""
    try:
        site, gateway, kind = wire.parse_topic(topic)
    except wire.WireError as exc:
        raise Rejected("topic", str(exc)) from None
    model = wire.MODELS.get(kind)
    if model is None:
        raise Rejected("topic", f"topic {topic!r}: the fleet does not ingest {kind.value!r}")
    if len(payload) > wire.MAX_PAYLOAD:
        raise Rejected("oversized", f"{len(payload)} bytes, at most {wire.MAX_PAYLOAD}")
    try:
        message = wire.decode(model, payload)
    except wire.WireError as exc:
        raise Rejected(_refusal(payload), str(exc)) from None
    if b"NaN" in payload or b"Infinity" in payload:  # json accepts them, JSON does not
        _check_finite(message.model_dump(), model.__name__)
    return site, gateway, kind, message


def _refusal(payload: bytes) -> str:
    """Which rule a payload that wire.decode refused broke (only run on refusal)."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "malformed"
    if not isinstance(raw, dict):
        return "malformed"
    return "version" if raw.get("v") != wire.SCHEMA_VERSION else "schema"


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected("schema", f"{where}: {value} is not a number JSON can carry")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")
