"""Report-by-exception: which samples of the process image go to the fleet, in batches.

A point is reported when its quality changes, when its value moves beyond its deadband from
the value last reported (any change at all for booleans, enums, strings and a deadband of
0), and at least every ``max_interval_s`` even when nothing changed, so the fleet can tell a
quiet point from a dead uplink. Within one batch the latest sample of a point wins, except
that a change of quality is never merged away: a point that goes BAD and back to GOOD within
a batch interval is reported twice, in order.

After every batch the fleet's view of each point is within the deadband of the last sample
seen: a value that changed while its point already had a report pending replaces that
report, so the last value before a quiet period is the one sent.

:class:`Reporter` is pure logic (no clock, no I/O) so it can be property-tested; the uplink
feeds it from an image listener and takes a batch every ``batch_interval_s``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal, NamedTuple

from pydantic import Field

from gateway import wire
from gateway.image import Sample
from gateway.validation import Strict

NUMBERS = (int, float)  # and bool, an int, which differs() treats as not a number
PointKey = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*\.[a-z][a-z0-9_]*$")]
NonNegative = Annotated[float, Field(ge=0)]
#: ``compact``: telemetry in wire version 2; ``json``: version 1.
WireFormat = Literal["compact", "json"]


class PointRule(NamedTuple):
    """How one point is reported."""

    deadband: float
    max_interval_s: float


class PointOverride(Strict):
    deadband: float | None = Field(default=None, ge=0)
    max_interval_s: float | None = Field(default=None, gt=0, le=86400)


class ReportConfig(Strict):
    """Report-by-exception settings (keys of the ``[uplink]`` table, see
    ``gateway.uplink.config``)."""

    #: How often pending changes are sent as one telemetry batch.
    batch_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: A batch is sent early when this many readings are pending (keeps it far below
    #: ``wire.MAX_PAYLOAD``).
    max_batch: int = Field(default=200, ge=1, le=500)
    #: Unchanged values are sent again at least this often.
    max_interval_s: float = Field(default=300.0, gt=0, le=86400)
    #: Absolute deadband of a numeric point whose unit has none below.
    deadband: NonNegative = 0.0
    #: Absolute deadband by the profile's unit, e.g. ``{ V = 1.0, W = 50, degC = 0.5 }``.
    deadband_by_unit: dict[str, NonNegative] = Field(default_factory=dict)
    #: Per point (``"device.point"``) overrides of the deadband and the maximum interval.
    points: dict[PointKey, PointOverride] = Field(default_factory=dict)
    #: ``compact``: telemetry in wire version 2, a twentieth of the bytes (docs/wire.md);
    #: ``json``: version 1, for a fleet older than version 2.
    wire_format: WireFormat = "compact"
    #: A compact batch carries the point map inline at start and at least this often (a map
    #: is about 150 bytes compressed; a restarted fleet refuses batches until it has one).
    point_map_every_s: float = Field(default=10.0, gt=0, le=86400)

    def rule(self, device: str, point: str, unit: str | None) -> PointRule:
        """The rule of one point: its override, else its unit's deadband, else the default."""
        override = self.points.get(f"{device}.{point}", PointOverride())
        deadband = override.deadband
        if deadband is None:
            deadband = self.deadband_by_unit.get(unit or "", self.deadband)
        interval = override.max_interval_s or self.max_interval_s
        return PointRule(deadband, interval)

    def rules(self, units: Mapping[tuple[str, str], str | None]) -> PointRules:
        """A rule lookup for :class:`Reporter`, given each point's unit from its profile
        (every point of the site, in order: the point map of compact telemetry)."""
        return PointRules(self, units)


class PointRules:
    """Each point's :class:`PointRule`, and the site's points and wire settings that come
    with them to the producer (through :attr:`Reporter.rules`)."""

    def __init__(self, config: ReportConfig, units: Mapping[tuple[str, str], str | None]) -> None:
        self.config = config
        self.units = units

    def __call__(self, device: str, point: str) -> PointRule:
        return self.config.rule(device, point, self.units.get((device, point)))


def reference_problems(
    where: str, report: ReportConfig, points: Mapping[str, Collection[str]]
) -> list[str]:
    """Overrides that name a device or point the site does not have, for the site check
    (``points``: device → its point names)."""
    problems = []
    for key in report.points:
        device, point = key.split(".", 1)
        if device not in points:
            known = ", ".join(sorted(points)) or "none defined"
            problems.append(f"{where}.points.{key}: no device {device!r} (devices: {known})")
        elif point not in points[device]:
            problems.append(f"{where}.points.{key}: device {device!r} has no point {point!r}")
    return problems


@dataclass(slots=True)
class _Point:
    rule: PointRule
    sent: Sample | None = None  # what the fleet was last sent
    sent_at: float = -math.inf  # when (monotonic), for the maximum interval
    latest: Sample | None = None  # the last sample seen
    pending: list[Sample] = field(default_factory=list)  # one per run of equal quality


class Reporter:
    """Collects samples and decides what goes into the next telemetry batch."""

    def __init__(self, rule: Callable[[str, str], PointRule], max_batch: int = 200) -> None:
        self._rule = rule
        #: the rule lookup given (a :class:`PointRules` carries the site's points)
        self.rules = rule
        self._max_batch = max_batch
        self._points: dict[tuple[str, str], _Point] = {}
        self._pending: dict[tuple[str, str], _Point] = {}  # points with readings, in order
        self._count = 0
        # No point is due for its maximum interval before this (monotonic); a lower bound,
        # so take() looks at every point only when one may be due.
        self._due = -math.inf

    @property
    def pending(self) -> int:
        """Readings waiting for the next batch."""
        return self._count

    @property
    def due(self) -> float:
        """No point is due for its maximum interval before this (monotonic): until then,
        :meth:`take` has nothing to send that was not offered."""
        return self._due

    def offer(self, device: str, point: str, sample: Sample) -> bool:
        """Take a new sample of a point; True when a full batch is pending (send it now)."""
        return self.offer_all([(device, point, sample)])

    def offer_all(self, updates: Iterable[tuple[str, str, Sample]]) -> bool:
        """Take new samples (device, point, sample), in order, like :meth:`offer` each; True
        when a full batch is pending (send it now)."""
        points = self._points
        for device, point, sample in updates:
            key = (device, point)
            p = points.get(key)
            if p is None:
                p = points[key] = _Point(self._rule(device, point))
            p.latest = sample
            pending = p.pending
            if pending:
                if pending[-1].quality is sample.quality:
                    pending[-1] = sample
                else:
                    pending.append(sample)
                    self._count += 1
            elif p.sent is None or differs(p.rule.deadband, p.sent, sample):
                pending.append(sample)
                self._pending[key] = p
                self._count += 1
        return self._count >= self._max_batch

    def take(self, now: float) -> list[tuple[str, str, Sample]]:
        """The readings of the next batch (at most ``max_batch``, more than that only to keep
        one point's readings together), including points due for their maximum interval;
        they count as sent at ``now`` (monotonic). Empty when nothing is due."""
        if now >= self._due:
            self._take_due(now)
        out: list[tuple[str, str, Sample]] = []
        taken = 0
        due = self._due
        for (device, point), p in self._pending.items():
            pending = p.pending
            if out and len(out) + len(pending) > self._max_batch:
                break
            for sample in pending:
                out.append((device, point, sample))
            p.sent, p.sent_at, p.pending = pending[-1], now, []
            due = min(due, now + p.rule.max_interval_s)
            taken += 1
        self._due = due
        self._count -= len(out)
        if taken == len(self._pending):
            self._pending.clear()
        else:
            for key in list(itertools.islice(self._pending, taken)):
                del self._pending[key]
        return out

    def _take_due(self, now: float) -> None:
        """Make every point due for its maximum interval pending; note when the next one is."""
        due = math.inf
        for key, p in self._points.items():
            if p.pending or p.latest is None:
                continue
            if now - p.sent_at >= p.rule.max_interval_s:
                p.pending.append(p.latest)
                self._pending[key] = p
                self._count += 1
            else:
                due = min(due, p.sent_at + p.rule.max_interval_s)
        self._due = due


def differs(deadband: float, old: Sample, new: Sample) -> bool:
    """Whether ``new`` must be reported after ``old`` was: another quality, another type, or
    a value beyond the deadband (any change for non-numeric values)."""
    if old.quality is not new.quality:
        return True
    a, b = old.value, new.value
    if isinstance(a, NUMBERS) and isinstance(b, NUMBERS):
        if isinstance(a, bool) or isinstance(b, bool):
            return type(a) is not type(b) or a != b
        change = abs(b - a)
        if change <= deadband:
            return False
        if change > deadband:
            return True
        # NaN: one value is NaN (a change unless both are), or the same infinity twice
        return math.isnan(a) != math.isnan(b)
    return type(a) is not type(b) or a != b


def reading(device: str, point: str, sample: Sample, wall_offset: float) -> wire.ReadingFields:
    """A sample's fields on the wire (for :func:`wire.encode_telemetry`); ``wall_offset`` is
    ``time.time() - time.monotonic()``, taken once per batch, to turn the sample's monotonic
    time into wall-clock time."""
    return {
        "d": device,
        "p": point,
        "v": sample.value,
        "q": sample.quality.value,
        "t": sample.at + wall_offset,
    }
