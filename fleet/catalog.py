"""The device catalog: what the fleet knows of each device model, read from the gateway's own
profiles (``gateway/devices/profiles/``) when first asked, so a new profile needs no second
copy on the fleet side.

For each model: its kind and description, and for each point a gateway reports its label
and unit, what each value of an enum, bit or flag means (and which values are an alarm
state), and whether people see it at all: scale-factor points and ``internal`` bookkeeping
stay in the API but off people's screens. Labels are English; the pages translate them
through the catalogue (:mod:`fleet.i18n`), with the English label as the message id.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache

from pydantic import BaseModel

from gateway.devices.profile import (
    Access,
    DeviceKind,
    PointType,
    PollClass,
    Profile,
    available_models,
    load_profile,
)


class Shape(StrEnum):
    """How a point's value reads and plots."""

    NUMBER = "number"  # a measurement: plotted with its min/max band
    STATE = "state"  # one of a few labelled values (enum, bit, flag): plotted as steps
    BITS = "bits"  # a set of labelled bits
    TEXT = "text"  # a string (nameplate)


#: A gateway reports a value when it changes and at least every maximum report interval
#: (``[uplink.reporting] max_interval_s``, 300 s by default) even when it does not, so a value
#: is stale once two of those intervals and a minute have passed without a report; slow
#: points (nameplates, counters) may be polled less often than that.
REPORT_INTERVAL_S = 300.0
STALE_AFTER_S = {
    PollClass.SAFETY: 2 * REPORT_INTERVAL_S + 60,
    PollClass.TELEMETRY: 2 * REPORT_INTERVAL_S + 60,
    PollClass.SLOW: 3600.0,
    PollClass.NEVER: 3600.0,
}


class PointInfo(BaseModel):
    name: str
    label: str
    unit: str = ""
    shape: Shape
    #: value → what a person reads (enum, bit and flag values; bit number for a bitfield)
    values: dict[int, str] = {}
    #: values (bits, for a bitfield) that read as an alarm or out-of-service state
    alarm_values: list[int] = []
    #: shown to people (False: scale factors and internal bookkeeping)
    visible: bool = True
    description: str = ""
    stale_after_s: float


class ModelInfo(BaseModel):
    model: str
    kind: DeviceKind
    description: str
    #: the points people see first, in this order
    key_points: list[str]
    points: dict[str, PointInfo]


def _shape(kind: PointType, values: dict[int, str]) -> Shape:
    if kind is PointType.BITFIELD:
        return Shape.BITS
    if kind is PointType.STRING:
        return Shape.TEXT
    if kind in (PointType.ENUM, PointType.BIT) or values:
        return Shape.STATE
    return Shape.NUMBER


def describe(profile: Profile) -> ModelInfo:
    """The catalog entry of one profile: the points a gateway reports (readable, polled)."""
    scale_factors = {p.scale_factor for p in profile.points if p.scale_factor}
    points: dict[str, PointInfo] = {}
    for raw in profile.points:
        p = profile.resolved(raw)
        if p.access is Access.W or p.poll is PollClass.NEVER:
            continue  # never read, so never reported
        values = dict(p.value_labels or {})
        if not values and p.type is PointType.ENUM and p.enum:
            values = dict(p.enum)  # unlabelled: the register's own names
        if not values and p.type is PointType.BITFIELD and p.bits:
            values = dict(p.bits)
        points[p.name] = PointInfo(
            name=p.name,
            label=p.display_name,
            unit=p.unit or "",
            shape=_shape(p.type, values),
            values=dict(sorted(values.items())),
            alarm_values=sorted(p.alarm_values),
            visible=not (p.internal or p.name in scale_factors),
            description=p.description,
            stale_after_s=STALE_AFTER_S[p.poll or PollClass.TELEMETRY],
        )
    return ModelInfo(
        model=profile.model,
        kind=profile.kind,
        description=profile.description,
        key_points=[k for k in profile.key_points if k in points and points[k].visible],
        points=points,
    )


@cache
def catalog() -> dict[str, ModelInfo]:
    """Every model the gateway has a profile for, by model name (read once per process)."""
    return {model: describe(load_profile(model)) for model in available_models()}


def model(name: str) -> ModelInfo | None:
    """The model's entry, or None for a model this fleet has no profile of."""
    return catalog().get(name)
