"""The wire contract between gateways and the fleet: MQTT topics and versioned JSON payloads.

One module, imported by both sides (for people: docs/wire.md). Every payload carries its
schema version ``v``; a reader refuses a version it does not know with an error that says so,
and refuses anything larger than :data:`MAX_PAYLOAD` before parsing it.

Topics: ``doorstep/v1/{site}/{gateway}/{kind}`` with kind one of ``state`` (retained; the
last will sets it offline), ``telemetry`` and ``events`` (batches with a per-gateway sequence
number: the fleet drops duplicates and detects gaps), ``health``, ``config/desired``
(retained, from the fleet), ``config/reported``, ``ota/command``, ``ota/status``, ``cmd/{id}``
and ``cmd/{id}/result``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Literal, TypedDict, TypeVar, cast

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import WireError as WireError  # the contract's own error: the fleet catches it
from gateway.validation import format_validation_error

SCHEMA_VERSION: Literal[1] = 1
PREFIX = "doorstep/v1"
MAX_PAYLOAD = 256 * 1024  # bytes; a batch is cut well below this
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=48)]
Scalar = int | float | bool | str | None


class Kind(StrEnum):
    STATE = "state"
    TELEMETRY = "telemetry"
    EVENTS = "events"
    HEALTH = "health"
    CONFIG_DESIRED = "config/desired"
    CONFIG_REPORTED = "config/reported"
    OTA_COMMAND = "ota/command"
    OTA_STATUS = "ota/status"
    CONFIG_REQUEST = "config/request"
    REPAIR_REQUEST = "repair/request"
    REPAIR_REPORT = "repair/report"


def topic(site: str, gateway: str, kind: Kind) -> str:
    return f"{PREFIX}/{site}/{gateway}/{kind.value}"


def subscription(kind: Kind) -> str:
    """The fleet's wildcard subscription to one kind of every gateway."""
    return f"{PREFIX}/+/+/{kind.value}"


def parse_topic(name: str) -> tuple[str, str, Kind]:
    """``doorstep/v1/SITE/GW/KIND`` → (site, gateway, kind); WireError naming the topic."""
    parts = name.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != PREFIX:
        raise WireError(f"topic {name!r}: expected {PREFIX}/SITE/GATEWAY/KIND")
    site, gw, rest = parts[2], parts[3], "/".join(parts[4:])
    try:
        return site, gw, Kind(rest)
    except ValueError:
        known = ", ".join(k.value for k in Kind)
        raise WireError(f"topic {name!r}: unknown kind {rest!r} (kinds: {known})") from None


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION


class State(Payload):
    """Retained: is the gateway up. The broker publishes the offline one as its last will."""

    status: Literal["online", "offline"]
    version: str = ""
    started_at: float | None = None  # wall clock, s since the epoch
    at: float | None = None
    devices: dict[str, str] = Field(default_factory=dict)  # device name → profile model


class Reading(BaseModel):
    """One point's value: device, point, value, quality, and when it was read (wall clock)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # "2" is no number

    d: str
    p: str
    v: Scalar
    q: Literal["good", "stale", "bad", "offline"]
    t: float


class ReadingFields(TypedDict):
    """A :class:`Reading` as plain fields, for :func:`encode_telemetry` (``q`` is one of
    :class:`Reading`'s qualities; the fleet's :func:`decode` checks it)."""

    d: str
    p: str
    v: Scalar
    q: str
    t: float


class TelemetryBatch(Payload):
    """Readings reported by exception, in batches numbered per gateway without gaps."""

    seq: int = Field(ge=1, strict=True)  # true and "2" are no batch numbers
    at: float = Field(strict=True)
    readings: list[Reading]


class Event(BaseModel):
    """An alarm raised, updated in place (its message, values, suppression or count) or
    cleared: gateway.control.alarms.AlarmEvent on the wire. ``suppressed_by`` names the alarm
    whose cause this one only follows from (a screen shows it under that one); ``count`` is
    how often a chattering alarm came back while held."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: int  # the gateway's alarm sequence number
    kind: Literal["raised", "updated", "cleared"]
    key: str
    severity: Literal["critical", "major", "minor", "info"]
    interlock: str
    device: str | None
    message: str
    values: dict[str, Scalar] = Field(default_factory=dict)
    at: float
    by: str | None = None
    suppressed_by: str | None = None
    count: int = Field(default=1, ge=1)


class EventBatch(Payload):
    seq: int = Field(ge=1, strict=True)
    at: float = Field(strict=True)
    events: list[Event]


class Health(Payload):
    at: float
    uptime_s: float
    version: str
    cpu_percent: float
    memory_mib: float
    disk_free_mib: float
    outbox_depth: int
    outbox_dropped: int
    loop: dict[str, Scalar] = Field(default_factory=dict)
    buses: dict[str, dict[str, Scalar]] = Field(default_factory=dict)


P = TypeVar("P", bound=Payload)


def encode(payload: Payload) -> bytes:
    return _checked(type(payload).__name__, payload.model_dump_json(exclude_none=False).encode())


def encode_telemetry(seq: int, at: float, readings: list[ReadingFields]) -> bytes:
    """``encode(TelemetryBatch(seq=seq, at=at, readings=…))`` without a model per reading:
    the same JSON by the same serializer (pydantic's: keys in the same order, NaN and
    infinities as null), for the gateway's thousands of readings a second. The fields are
    not validated: they come from the gateway's own process image."""
    batch = {"v": SCHEMA_VERSION, "seq": seq, "at": at, "readings": readings}
    return _checked("TelemetryBatch", pydantic_core.to_json(batch, inf_nan_mode="null"))


def _checked(name: str, data: bytes) -> bytes:
    if len(data) > MAX_PAYLOAD:
        raise WireError(f"{name}: {len(data)} bytes > {MAX_PAYLOAD}")
    return data


def decode(model: type[P], data: bytes) -> P:
    """Parse and validate one payload; WireError says which rule it broke."""
    if len(data) > MAX_PAYLOAD:
        raise WireError(f"payload of {len(data)} bytes is over the {MAX_PAYLOAD}-byte limit")
    if model is TelemetryBatch and data[:1] == b"\x02":  # compact telemetry, version 2
        from gateway.wire import compact

        return cast(P, compact.decode_batch(data))
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    except RecursionError:  # "[[[[…": the parser gives up; so does the contract
        raise WireError("not JSON this side reads: nested too deep") from None
    if not isinstance(raw, dict):
        raise WireError(f"{model.__name__}: expected a JSON object")
    version = raw.get("v")
    if version != SCHEMA_VERSION:
        raise WireError(
            f"{model.__name__}: schema version {version!r}, this side reads {SCHEMA_VERSION}"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise WireError(f"{model.__name__}: {format_validation_error(exc)}") from None


from gateway.wire import config, ota, repair  # noqa: E402 - their models build on Payload, above

MODELS: dict[Kind, type[Payload]] = {
    Kind.STATE: State,
    Kind.TELEMETRY: TelemetryBatch,
    Kind.EVENTS: EventBatch,
    Kind.HEALTH: Health,
    Kind.OTA_COMMAND: ota.OtaCommand,
    Kind.OTA_STATUS: ota.OtaStatus,
    Kind.CONFIG_DESIRED: config.DesiredConfig,
    Kind.CONFIG_REQUEST: config.ConfigRequest,
    Kind.CONFIG_REPORTED: config.ReportedConfig,
    Kind.REPAIR_REQUEST: repair.RepairRequest,
    Kind.REPAIR_REPORT: repair.RepairReport,
}
