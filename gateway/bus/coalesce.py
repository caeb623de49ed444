"""Coalescing point reads into block reads with a cost model.

Reading two points in one request costs the registers of the gap between them; reading them
in two requests costs a second transaction's overhead (request frame, response framing, two
t3.5 gaps, the device's think time). The planner picks, per table, the partition of the
sorted point spans into consecutive groups with the least total cost, subject to the request
limits (125 registers / 2000 bits, or less for a device that says so), the device's
unreadable ranges and the walls learned from exception 02 answers. With a linear cost an
optimal plan always groups consecutive spans, so a dynamic programme over the sorted spans
is exact.

Spans that must come from one reading (``together``: a charger's current, power and state; a
meter's phases and total) are never cut apart: a block boundary may not fall between the
first and the last span of such a set. A set the device's walls split (learned from
exception 02 after the profile was checked) is read in pieces rather than not at all; the
poller says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.devices.profile import Range, Table
from gateway.errors import PlanError


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """The registers (or bits) of one point."""

    table: Table
    start: int
    count: int

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Block:
    """One read request and the spans it serves."""

    table: Table
    start: int
    count: int
    spans: tuple[Span, ...]

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Wall:
    """No block may contain both ``address - 1`` and ``address`` (learned from exception 02)."""

    table: Table
    address: int


@dataclass(frozen=True, slots=True)
class Limits:
    max_registers: int = 125
    max_bits: int = 2000

    def of(self, table: Table) -> int:
        return self.max_bits if table.is_bits else self.max_registers


@dataclass(frozen=True, slots=True)
class CostModel:
    """Cost of a read: ``request_overhead`` plus its payload (same unit, e.g. seconds)."""

    request_overhead: float
    per_register: float
    per_bit: float

    @classmethod
    def for_rtu(cls, baudrate: int, think_time_s: float = 0.0) -> CostModel:
        """Seconds of wire time: 8-byte request, 5 bytes of response framing, two t3.5."""
        char = 11 / baudrate
        t35 = 0.00175 if baudrate > 19200 else 3.5 * char
        return cls((8 + 5) * char + 2 * t35 + think_time_s, 2 * char, char / 8)

    @classmethod
    def for_tcp(cls, round_trip_s: float = 0.002, bytes_per_s: float = 1e7) -> CostModel:
        return cls(round_trip_s, 2 / bytes_per_s, 1 / (8 * bytes_per_s))

    def cost(self, block: Block | Span) -> float:
        per = self.per_bit if block.table.is_bits else self.per_register
        return self.request_overhead + block.count * per


def plan(
    spans: Iterable[Span],
    *,
    cost: CostModel,
    limits: Limits = Limits(),
    unreadable: Sequence[Range] = (),
    walls: Iterable[Wall] = (),
    together: Iterable[Iterable[Span]] = (),
) -> list[Block]:
    """The cheapest set of blocks that reads every span, each set of ``together`` in one
    block where the walls allow; sorted by (table, start)."""
    by_table: dict[Table, set[Span]] = {}
    for span in spans:
        if span.count <= 0:
            raise PlanError(f"span {span.table} {span.start}+{span.count}: count must be > 0")
        by_table.setdefault(span.table, set()).add(span)
    wall_set = {(w.table, w.address) for w in walls}
    sets = [frozenset(group) for group in together]
    blocks: list[Block] = []
    for table in sorted(by_table):
        ranges = [r for r in unreadable if r.table is table]
        table_walls = sorted(a for t, a in wall_set if t is table)
        ordered = sorted(by_table[table])
        uncut = _uncut(ordered, sets, limits.of(table), ranges, table_walls)
        blocks += _plan_table(ordered, table, cost, limits.of(table), ranges, table_walls, uncut)
    return blocks


def _uncut(
    spans: list[Span],
    sets: list[frozenset[Span]],
    limit: int,
    unreadable: list[Range],
    walls: list[int],
) -> frozenset[int]:
    """The cut positions (i: between ``spans[i-1]`` and ``spans[i]``) that would split a set
    of spans read together; a set that cannot be one block (too long, across a wall or an
    unreadable range) is cut where the plan likes."""
    index = {span: i for i, span in enumerate(spans)}
    forbidden: set[int] = set()
    for group in sets:
        members = sorted(index[s] for s in group if s in index)
        if len(members) < 2:
            continue
        start, end = spans[members[0]].start, max(spans[i].end for i in members)
        if end - start > limit or not _readable(start, end, unreadable, walls):
            continue
        forbidden.update(range(members[0] + 1, members[-1] + 1))
    return frozenset(forbidden)


def _plan_table(
    spans: list[Span],
    table: Table,
    cost: CostModel,
    limit: int,
    unreadable: list[Range],
    walls: list[int],
    uncut: frozenset[int] = frozenset(),
) -> list[Block]:
    for s in spans:
        if s.count > limit:
            raise PlanError(f"span {table} {s.start}+{s.count} is longer than the limit {limit}")
        for r in unreadable:
            if r.overlaps(s.start, s.count):
                raise PlanError(
                    f"span {table} {s.start}+{s.count} lies in unreadable range {r.start}..{r.end}"
                )
    per = cost.per_bit if table.is_bits else cost.per_register
    n = len(spans)
    # best[i]: least cost of reading spans[:i]; choice[i]: where the last group starts
    best = [0.0] + [float("inf")] * n
    choice = [0] * (n + 1)
    for i in range(1, n + 1):
        end = spans[i - 1].end
        start = spans[i - 1].start
        for j in range(i - 1, -1, -1):
            start = min(start, spans[j].start)
            end = max(end, spans[j].end)
            if end - start > limit:
                break
            if j < i - 1 and not _readable(start, end, unreadable, walls):
                break
            if j in uncut:  # the group would start inside a set read together
                continue
            c = best[j] + cost.request_overhead + (end - start) * per
            if c < best[i]:
                best[i], choice[i] = c, j
    blocks: list[Block] = []
    i = n
    while i > 0:
        j = choice[i]
        group = spans[j:i]
        start = min(s.start for s in group)
        end = max(s.end for s in group)
        blocks.append(Block(table, start, end - start, tuple(group)))
        i = j
    return blocks[::-1]


def _readable(start: int, end: int, unreadable: list[Range], walls: list[int]) -> bool:
    """Whether one request may cover addresses start..end-1."""
    if any(r.overlaps(start, end - start) for r in unreadable):
        return False
    return not any(start < w < end for w in walls)
