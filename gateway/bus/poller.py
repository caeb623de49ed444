"""What to read from one device, when, and how to put the answers into the process image.

A :class:`DevicePoller` holds the device's profile (with SunSpec addresses placed), its read
plan per poll class (coalesced blocks, re-planned when an exception 02 teaches it that a block
cannot be read in one piece), the due time of each poll class, its circuit breaker and its
statistics. The bus scheduler asks it for work and hands it the answers; it never touches
the bus itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.bus.breaker import BreakerState, CircuitBreaker
from gateway.bus.coalesce import Block, CostModel, Limits, Span, Wall, plan
from gateway.bus.config import Device, PollPeriods
from gateway.bus.stats import DeviceStats, LatencyWindow
from gateway.devices import codec
from gateway.devices.profile import Point, PollClass, Profile
from gateway.errors import CodecError
from gateway.image import ProcessImage, Quality

log = logging.getLogger(__name__)

#: Lower runs first. Commands (writes) and explicit requests use priority 0.
CLASS_PRIORITY = {PollClass.SAFETY: 1, PollClass.TELEMETRY: 2, PollClass.SLOW: 3}
COMMAND_PRIORITY = 0
#: A value older than this many poll periods reads STALE (docs/devices.md#quality: 3 missed polls).
STALE_AFTER_PERIODS = 3


@dataclass
class PollCycle:
    """The blocks of one poll class still to read in the current cycle."""

    cls: PollClass
    period: float
    next_due: float
    started: float = 0.0
    pending: list[Block] = field(default_factory=list)
    durations: LatencyWindow = field(default_factory=LatencyWindow)
    overruns: int = 0


class DevicePoller:
    """One device on a bus: its read plan, poll timers, breaker and decoding."""

    def __init__(
        self,
        device: Device,
        profile: Profile,
        periods: PollPeriods,
        image: ProcessImage,
        cost: CostModel,
        breaker: CircuitBreaker,
    ) -> None:
        self.device = device
        self.name = device.name
        self.unit_id = device.unit_id
        self.profile = profile
        self.image = image
        self.cost = cost
        self.breaker = breaker
        self.stats = DeviceStats()
        self.min_gap_s = device.min_gap_ms / 1000
        self.last_request_end = 0.0
        self.walls: set[Wall] = set()
        self.unreadable_points: set[str] = set()
        self.ready = profile.sunspec is None  # SunSpec devices are placed by discovery first
        self.cycles: dict[PollClass, PollCycle] = {}
        self._blocks_of: dict[PollClass, list[Block]] = {}
        self._span_points: dict[Span, list[Point]] = {}
        self._split_groups: set[str] = set()
        self._periods = periods
        self._points = profile.point_map
        breaker.on_change = self._breaker_changed

    # -- set-up -----------------------------------------------------------------------------

    def place(self, profile: Profile, now: float) -> None:
        """Start polling with a profile whose points all carry absolute addresses."""
        self.profile = profile
        self._points = profile.point_map
        self._span_points = {}
        for p in profile.points:
            if p.address is not None:
                self._span_points.setdefault(_span(p), []).append(p)
        for p in profile.points:
            if p.readable and (period := self._periods.period(p.poll or PollClass.NEVER)):
                self.image.declare(self.name, p.name, STALE_AFTER_PERIODS * period + 1.0)
        self.replan(now)
        self.ready = True

    def replan(self, now: float) -> None:
        """(Re)build the read plan of every poll class; keep each class's due time."""
        by_class: dict[PollClass, list[Point]] = {}
        for p in self.profile.points:
            if p.readable and p.poll in CLASS_PRIORITY and p.name not in self.unreadable_points:
                by_class.setdefault(p.poll, []).append(p)
        limits = Limits(self.profile.max_read_registers, self.profile.max_read_bits)
        for cls, points in by_class.items():
            names = {p.name for p in points}
            together = [
                [_span(p) for p in members if p.name in names]
                for members in self.profile.groups.values()
            ]
            blocks = plan(
                (_span(p) for p in points),
                cost=self.cost,
                limits=limits,
                unreadable=self.profile.unreadable,
                walls=self.walls,
                together=together,
            )
            self._say_split(blocks, together)
            period = self._periods.period(cls)
            assert period is not None
            old = self.cycles.get(cls)
            if old is not None:  # a new plan mid-cycle (exception 02): the cycle goes on
                old.period = period
                self.cycles[cls] = old
            else:
                self.cycles[cls] = PollCycle(cls, period, now)
            self._blocks_of[cls] = blocks

    def _say_split(self, blocks: list[Block], together: list[list[Span]]) -> None:
        """Log (once per group) a group the device's walls made the plan read in pieces."""
        block_of = {span: n for n, block in enumerate(blocks) for span in block.spans}
        for name, spans in zip(self.profile.groups, together, strict=True):
            if len({block_of.get(s) for s in spans}) > 1 and name not in self._split_groups:
                self._split_groups.add(name)
                log.warning(
                    "%s (unit %d): group %r is read in pieces: the device refuses one read "
                    "across it (exception 02); its values may come from different moments",
                    self.name, self.unit_id, name,
                )  # fmt: skip

    # -- scheduling -------------------------------------------------------------------------

    def due_cycles(self, now: float) -> Iterable[PollCycle]:
        """Start every poll class whose time has come; a class still busy counts an overrun."""
        if not self.ready:
            return []
        started = []
        for cls, cycle in self.cycles.items():
            if now < cycle.next_due:
                continue
            if cycle.pending:
                cycle.overruns += 1
            else:
                cycle.pending = list(self._blocks_of[cls])
                cycle.started = now
                started.append(cycle)
            # never catch up in a burst after a stall: the next cycle is one period from now
            cycle.next_due = max(cycle.next_due + cycle.period, now)
        return started

    def next_due(self) -> float | None:
        if not self.ready or not self.cycles:
            return None
        return min(c.next_due for c in self.cycles.values())

    def eligible_at(self) -> float:
        """Earliest time a request to this device may start (per-device minimum gap)."""
        return self.last_request_end + self.min_gap_s

    # -- answers ----------------------------------------------------------------------------

    def store(self, block: Block, values: list[int], at: float) -> None:
        """Decode every point of a block into the image (scale factors first)."""
        points = sorted(self._block_points(block), key=lambda p: p.scale_factor is not None)
        with self.image.block():
            for p in points:
                assert p.address is not None
                raw = values[p.address - block.start : p.address - block.start + p.width]
                try:
                    sf = self._scale_factor(p)
                    value = codec.decode(p, raw, sf)
                except CodecError as exc:
                    log.warning("%s: %s", self.name, exc)
                    self.image.mark(self.name, p.name, Quality.BAD, at)
                    continue
                self.image.update(self.name, p.name, value, at)

    def mark(self, block: Block, quality: Quality, at: float) -> None:
        with self.image.block():
            for p in self._block_points(block):
                self.image.mark(self.name, p.name, quality, at)

    def split(self, block: Block, now: float) -> list[Block]:
        """Exception 02 on a block: read its spans apart from now on, and return the new
        blocks for them. A single span that is refused marks its points unreadable (BAD)."""
        if len(block.spans) > 1:
            for span in block.spans[1:]:
                self.walls.add(Wall(span.table, span.start))
            log.info(
                "%s: %s %d+%d refused (exception 02); reading its %d parts separately",
                self.name,
                block.table,
                block.start,
                block.count,
                len(block.spans),
            )
        else:
            for p in self._block_points(block):
                self.unreadable_points.add(p.name)
                self.image.mark(self.name, p.name, Quality.BAD, now)
            log.warning(
                "%s: %s %d+%d refused (exception 02); points %s marked BAD",
                self.name,
                block.table,
                block.start,
                block.count,
                ", ".join(p.name for p in self._block_points(block)),
            )
        self.replan(now)
        wanted = set(block.spans)
        return [
            b for blocks in self._blocks_of.values() for b in blocks if wanted.intersection(b.spans)
        ]

    def cycle_done(self, cls: PollClass, now: float) -> None:
        cycle = self.cycles[cls]
        if not cycle.pending:
            cycle.durations.add(now - cycle.started)

    def drop_pending(self) -> None:
        """The device is unavailable: abandon the current cycles."""
        for cycle in self.cycles.values():
            cycle.pending.clear()

    # -- internals --------------------------------------------------------------------------

    def _block_points(self, block: Block) -> list[Point]:
        return [p for span in block.spans for p in self._span_points.get(span, [])]

    def _scale_factor(self, point: Point) -> int | None:
        if point.scale_factor is None:
            return None
        sf = self.image.value(self.name, point.scale_factor)
        return sf if isinstance(sf, int) else None

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN and old is BreakerState.CLOSED:
            log.warning("%s (unit %d): unavailable, not answering", self.name, self.unit_id)
            self.image.mark_device(self.name, Quality.OFFLINE)
            self.drop_pending()
        elif new is BreakerState.CLOSED and old is not BreakerState.CLOSED:
            log.warning("%s (unit %d): recovered", self.name, self.unit_id)


def _span(p: Point) -> Span:
    assert p.address is not None
    return Span(p.table, p.address, p.width)
