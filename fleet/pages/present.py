"""A device's latest values as a person reads them: the point's label and unit from its
profile (in the person's language), an enum or flag as its word, a bitfield as the words of
its set bits, whether the value is an alarm state, and how old it is (the gateway's read
time) with a mark when it is older than its point's staleness limit. Points hidden from
people (scale factors, bookkeeping) are left out; a model without a profile shows its points
by name."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fleet.catalog import STALE_AFTER_S, ModelInfo, PointInfo, Shape, model
from fleet.i18n.formats import Formats
from fleet.queries.attention import in_alarm
from fleet.queries.site import DeviceView, PointValue
from gateway.devices.profile import PollClass

Translate = Callable[[str], str]
#: How old a value of a point the catalog does not know may be before it reads as stale.
UNKNOWN_STALE_AFTER_S = STALE_AFTER_S[PollClass.TELEMETRY]


@dataclass(frozen=True)
class Reading:
    point: str
    label: str
    text: str
    #: "ok", "alarm" (an alarm state), "bad" or "offline" (the gateway's quality)
    state: str
    at: datetime
    stale: bool
    #: what a plot of it draws: a band ("number"), steps ("state"), or nothing (None)
    plot: str | None


@dataclass(frozen=True)
class DeviceCard:
    name: str
    model: str
    kind: str  # the device kind, e.g. "elevator"; "" for a model without a profile
    description: str
    key: list[Reading]
    more: list[Reading]
    last_seen: datetime | None
    offline: bool = False
    alarms: list[Reading] = field(default_factory=list)


def value_text(info: PointInfo, value: object, fmt: Formats, _: Translate) -> str:
    """The value in words (states, bits) or as a number with its unit."""
    if value is None:
        return _("no value")
    if info.shape is Shape.STATE and isinstance(value, bool | int | float):
        number = int(value)
        label = info.values.get(number)
        return _(label) if label is not None else _("unknown value %(value)s") % {"value": value}
    if info.shape is Shape.BITS and isinstance(value, int) and not isinstance(value, bool):
        words = [_(label) for bit, label in info.values.items() if value >> bit & 1]
        return ", ".join(words) if words else _("none")
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, int | float) and math.isfinite(value):
        shown = fmt.number(value)
        return f"{shown} {_(info.unit)}" if info.unit else shown
    return str(value)


def _unknown_point(name: str) -> PointInfo:
    return PointInfo(name=name, label=name, shape=Shape.NUMBER, stale_after_s=UNKNOWN_STALE_AFTER_S)


def reading(info: PointInfo, pv: PointValue, fmt: Formats, _: Translate, now: datetime) -> Reading:
    alarm = bool(info.alarm_values) and in_alarm(info.shape, frozenset(info.alarm_values), pv.value)
    state = pv.quality if pv.quality in ("bad", "offline") else "alarm" if alarm else "ok"
    stale = pv.quality == "stale" or now - pv.at > timedelta(seconds=info.stale_after_s)
    plot = {Shape.NUMBER: "number", Shape.STATE: "state"}.get(info.shape)
    return Reading(
        point=info.name, label=_(info.label), text=value_text(info, pv.value, fmt, _),
        state=state, at=pv.at, stale=stale, plot=plot,
    )  # fmt: skip


def card(device: DeviceView, fmt: Formats, _: Translate, now: datetime | None = None) -> DeviceCard:
    now = now or datetime.now(UTC)
    info: ModelInfo | None = model(device.model)
    known = info.points if info else {}
    readings: dict[str, Reading] = {}
    for name, pv in device.points.items():
        point = known.get(name) or _unknown_point(name)
        if point.visible:
            readings[name] = reading(point, pv, fmt, _, now)
    key_names = info.key_points if info else []
    key = [readings[k] for k in key_names if k in readings]
    more = [r for name, r in readings.items() if name not in key_names]
    values = list(readings.values())
    return DeviceCard(
        name=device.name,
        model=device.model,
        kind=info.kind.value if info else "",
        description=_(info.description) if info else "",
        key=key,
        more=more,
        last_seen=device.last_seen,
        offline=bool(values) and all(r.state == "offline" for r in values),
        alarms=[r for r in values if r.state == "alarm"],
    )
