"""The coalescing planner: every point read, nothing unreadable touched, least wire time."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.bus.coalesce import Block, CostModel, Limits, Span, Wall, plan
from gateway.devices.profile import Range, Table
from gateway.errors import PlanError

# Addresses are drawn from a small window so that points crowd together, gaps are sometimes
# worth merging and limits, walls and unreadable ranges actually get in the way.
REGISTER_WINDOW = 300
BIT_WINDOW = 4000


@dataclass(frozen=True)
class Case:
    """One planner input that a device could legitimately present."""

    spans: list[Span]
    cost: CostModel
    limits: Limits
    unreadable: list[Range]
    walls: list[Wall]


def window(table: Table) -> int:
    return BIT_WINDOW if table.is_bits else REGISTER_WINDOW


cost_models = st.one_of(
    st.builds(CostModel.for_rtu, st.integers(1200, 115200), st.sampled_from([0.0, 0.002])),
    st.builds(CostModel.for_tcp, st.sampled_from([0.0005, 0.002, 0.02])),
)
tight_limits = st.builds(Limits, st.integers(1, 125), st.integers(1, 2000))
limits = st.one_of(st.just(Limits()), tight_limits)


@st.composite
def spans_within(draw: st.DrawFn, limit: Limits, max_size: int) -> list[Span]:
    """Point spans on any table, each no wider than that table's limit."""
    result = []
    for _ in range(draw(st.integers(1, max_size))):
        table = draw(st.sampled_from(list(Table)))
        widest = min(limit.of(table), 250 if table.is_bits else 16)
        width = draw(st.integers(1, widest))
        result.append(Span(table, draw(st.integers(0, window(table) - width)), width))
    return result


@st.composite
def unreadable_ranges(draw: st.DrawFn) -> list[Range]:
    result = []
    for _ in range(draw(st.integers(0, 3))):
        table = draw(st.sampled_from(list(Table)))
        start = draw(st.integers(0, window(table) - 1))
        length = draw(st.integers(1, window(table) // 20))
        result.append(Range(table=table, start=start, end=start + length - 1))
    return result


@st.composite
def walls(draw: st.DrawFn) -> list[Wall]:
    result = []
    for _ in range(draw(st.integers(0, 4))):
        table = draw(st.sampled_from(list(Table)))
        result.append(Wall(table, draw(st.integers(1, window(table) - 1))))
    return result


@st.composite
def cases(draw: st.DrawFn, max_spans: int = 12) -> Case:
    """Valid inputs: points that overlap an unreadable range are left out (they are errors)."""
    limit = draw(limits)
    ranges = draw(unreadable_ranges())
    spans = [
        s
        for s in draw(spans_within(limit, max_spans))
        if not any(r.table is s.table and r.overlaps(s.start, s.count) for r in ranges)
    ]
    assume(spans)
    return Case(spans, draw(cost_models), limit, ranges, draw(walls()))


def run(case: Case) -> list[Block]:
    return plan(
        case.spans,
        cost=case.cost,
        limits=case.limits,
        unreadable=case.unreadable,
        walls=case.walls,
    )


def total(cost: CostModel, blocks: Sequence[Block | Span]) -> float:
    return sum(cost.cost(b) for b in blocks)


def crosses(start: int, end: int, wall: Wall) -> bool:
    return start < wall.address < end


# -- the brute-force reference ----------------------------------------------------------------


def partitions(items: list[Span]) -> Iterator[list[list[Span]]]:
    """Every way to split ``items`` into non-empty groups (all set partitions)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in partitions(rest):
        yield [[first], *smaller]
        for k in range(len(smaller)):
            yield [*smaller[:k], [first, *smaller[k]], *smaller[k + 1 :]]


def contiguous_partitions(items: list[Span]) -> Iterator[list[list[Span]]]:
    """Every way to cut the sorted ``items`` into runs of neighbours."""
    for cuts in range(1 << max(0, len(items) - 1)):
        groups, current = [], [items[0]]
        for k, item in enumerate(items[1:]):
            if cuts >> k & 1:
                groups.append(current)
                current = []
            current.append(item)
        yield [*groups, current]


def group_cost(case: Case, group: list[Span]) -> float:
    """Cost of reading ``group`` in one request, or infinity when no request may do that."""
    table = group[0].table
    start, end = min(s.start for s in group), max(s.end for s in group)
    if end - start > case.limits.of(table):
        return math.inf
    if len(group) > 1:
        if any(r.table is table and r.overlaps(start, end - start) for r in case.unreadable):
            return math.inf
        if any(w.table is table and crosses(start, end, w) for w in case.walls):
            return math.inf
    return case.cost.cost(Block(table, start, end - start, tuple(group)))


def cheapest(case: Case, *, contiguous_only: bool) -> float:
    best = 0.0
    for table in {s.table for s in case.spans}:
        spans = sorted({s for s in case.spans if s.table is table})
        splits = contiguous_partitions(spans) if contiguous_only else partitions(spans)
        best += min(sum(group_cost(case, g) for g in groups) for groups in splits)
    return best


def straddles_a_wall(case: Case) -> bool:
    return any(
        w.table is s.table and crosses(s.start, s.end, w) for s in case.spans for w in case.walls
    )


# -- properties -------------------------------------------------------------------------------


@given(cases())
def test_every_point_is_read_completely_by_exactly_one_block_of_its_own_table(case: Case) -> None:
    blocks = run(case)
    for span in case.spans:
        serving = [b for b in blocks if span in b.spans]
        assert len(serving) == 1, f"{span} is served by {serving}"
        block = serving[0]
        assert block.table is span.table
        assert block.start <= span.start
        assert span.end <= block.end
    assert {s for b in blocks for s in b.spans} == set(case.spans)


@given(cases())
def test_a_block_reads_exactly_the_hull_of_its_points_in_table_and_address_order(
    case: Case,
) -> None:
    blocks = run(case)
    for b in blocks:
        assert b.spans, b
        assert all(s.table is b.table for s in b.spans)
        assert b.start == min(s.start for s in b.spans)
        assert b.end == max(s.end for s in b.spans)
    assert blocks == sorted(blocks, key=lambda b: (b.table, b.start))


@given(cases())
def test_no_block_touches_an_unreadable_range(case: Case) -> None:
    for b in run(case):
        for r in case.unreadable:
            assert not (r.table is b.table and r.overlaps(b.start, b.count)), (b, r)


@given(cases())
def test_only_a_single_point_that_itself_straddles_a_wall_is_read_across_it(case: Case) -> None:
    for b in run(case):
        for w in case.walls:
            if w.table is b.table and crosses(b.start, b.end, w):
                assert len(b.spans) == 1, (b, w)


@given(cases())
def test_no_block_exceeds_the_request_limit_of_its_table(case: Case) -> None:
    for b in run(case):
        assert b.count <= case.limits.of(b.table)
        assert b.count <= (2000 if b.table.is_bits else 125)


@given(cases())
def test_a_plan_never_costs_more_than_one_request_per_point(case: Case) -> None:
    blocks = run(case)
    alone = total(case.cost, sorted(set(case.spans)))
    assert total(case.cost, blocks) <= alone * (1 + 1e-9)
    assert len(blocks) <= len(set(case.spans))


@given(cases(max_spans=7))
def test_the_plan_is_the_cheapest_grouping_of_neighbouring_points(case: Case) -> None:
    expected = cheapest(case, contiguous_only=True)
    assert total(case.cost, run(case)) == pytest.approx(expected, rel=1e-9)


@given(cases(max_spans=7))
def test_the_plan_is_the_cheapest_of_all_possible_groupings(case: Case) -> None:
    # A point that straddles a wall may still be read on its own (it is how the poller finds
    # out that the point itself is refused), but then it can no longer absorb its neighbours,
    # and grouping only neighbours is no longer guaranteed to be optimal. Walls come from
    # exception 02 at the start of a point, so that needs overlapping points; left out here.
    assume(not straddles_a_wall(case))
    expected = cheapest(case, contiguous_only=False)
    assert total(case.cost, run(case)) == pytest.approx(expected, rel=1e-9)


# -- impossible inputs ------------------------------------------------------------------------


@given(cases(), st.data())
def test_a_point_inside_an_unreadable_range_is_refused_by_name(
    case: Case, data: st.DataObject
) -> None:
    victim = data.draw(st.sampled_from(case.spans))
    offset = data.draw(st.integers(0, victim.count - 1))
    bad = Range(table=victim.table, start=victim.start + offset, end=victim.start + offset)
    with pytest.raises(PlanError) as refused:
        plan(case.spans, cost=case.cost, limits=case.limits, unreadable=[*case.unreadable, bad])
    offenders = [
        s
        for s in case.spans
        if any(r.table is s.table and r.overlaps(s.start, s.count) for r in [*case.unreadable, bad])
    ]
    message = str(refused.value)
    assert "unreadable" in message
    assert any(f"{s.table} {s.start}+{s.count}" in message for s in offenders), message


@given(st.sampled_from(list(Table)), st.integers(0, 1000), tight_limits, st.data())
def test_a_point_wider_than_the_limit_is_refused_by_name(
    table: Table, start: int, limit: Limits, data: st.DataObject
) -> None:
    width = data.draw(st.integers(limit.of(table) + 1, limit.of(table) + 50))
    with pytest.raises(PlanError, match=rf"{table} {start}\+{width} .*limit {limit.of(table)}"):
        plan([Span(table, start, width)], cost=CostModel.for_tcp(), limits=limit)


@pytest.mark.parametrize("count", [0, -1])
def test_an_empty_point_is_refused(count: int) -> None:
    with pytest.raises(PlanError, match=rf"holding 7\+{count}"):
        plan([Span(Table.HOLDING, 7, count)], cost=CostModel.for_tcp())


def test_an_unreadable_range_of_another_table_does_not_refuse_a_point() -> None:
    elsewhere = Range(table=Table.INPUT, start=0, end=10)
    blocks = plan([Span(Table.HOLDING, 5, 1)], cost=CostModel.for_tcp(), unreadable=[elsewhere])
    assert blocks == [Block(Table.HOLDING, 5, 1, (Span(Table.HOLDING, 5, 1),))]


# -- behaviour at a glance --------------------------------------------------------------------


def extents(blocks: list[Block]) -> list[tuple[int, int]]:
    return [(b.start, b.count) for b in blocks]


def test_two_points_far_apart_at_9600_are_read_separately_but_close_ones_together() -> None:
    rtu = CostModel.for_rtu(9600)
    close = [Span(Table.HOLDING, 0, 1), Span(Table.HOLDING, 5, 1)]
    far = [Span(Table.HOLDING, 0, 1), Span(Table.HOLDING, 100, 1)]
    assert extents(plan(close, cost=rtu)) == [(0, 6)]
    assert extents(plan(far, cost=rtu)) == [(0, 1), (100, 1)]


def test_a_fast_line_merges_a_gap_that_a_slow_line_reads_around() -> None:
    # the t3.5 gaps stop shrinking above 19200 baud, so a request costs relatively more there
    points = [Span(Table.INPUT, 0, 2), Span(Table.INPUT, 22, 2)]
    assert extents(plan(points, cost=CostModel.for_rtu(9600))) == [(0, 2), (22, 2)]
    assert extents(plan(points, cost=CostModel.for_rtu(115200))) == [(0, 24)]


def test_over_tcp_points_anywhere_within_125_registers_are_one_request() -> None:
    points = [Span(Table.HOLDING, a, 1) for a in (0, 60, 124)]
    assert extents(plan(points, cost=CostModel.for_tcp())) == [(0, 125)]
    wider = [*points, Span(Table.HOLDING, 125, 1)]
    assert len(plan(wider, cost=CostModel.for_tcp())) == 2


def test_coils_are_merged_up_to_2000_bits_and_no_further() -> None:
    tcp = CostModel.for_tcp()
    fits = [Span(Table.COIL, 0, 1), Span(Table.COIL, 1999, 1)]
    too_far = [Span(Table.COIL, 0, 1), Span(Table.COIL, 2000, 1)]
    assert extents(plan(fits, cost=tcp)) == [(0, 2000)]
    assert extents(plan(too_far, cost=tcp)) == [(0, 1), (2000, 1)]


def test_a_device_with_a_smaller_limit_gets_smaller_requests() -> None:
    points = [Span(Table.HOLDING, a, 1) for a in range(0, 40, 4)]
    blocks = plan(points, cost=CostModel.for_tcp(), limits=Limits(max_registers=16))
    assert all(b.count <= 16 for b in blocks)
    assert len(blocks) == 3


def test_a_cheap_gap_is_not_merged_across_an_unreadable_range() -> None:
    points = [Span(Table.HOLDING, 0, 1), Span(Table.HOLDING, 3, 1)]
    hole = Range(table=Table.HOLDING, start=1, end=1)
    assert extents(plan(points, cost=CostModel.for_tcp(), unreadable=[hole])) == [(0, 1), (3, 1)]


def test_a_wall_learned_from_exception_02_splits_the_block_there() -> None:
    points = [Span(Table.HOLDING, a, 1) for a in (0, 2, 4, 6)]
    wall = Wall(Table.HOLDING, 4)
    assert extents(plan(points, cost=CostModel.for_tcp(), walls=[wall])) == [(0, 3), (4, 3)]


def test_tables_are_planned_apart_even_at_the_same_addresses() -> None:
    points = [Span(Table.INPUT, 0, 1), Span(Table.HOLDING, 1, 1), Span(Table.COIL, 2, 1)]
    blocks = plan(points, cost=CostModel.for_tcp())
    assert [(b.table, b.start, b.count) for b in blocks] == [
        (Table.COIL, 2, 1),
        (Table.HOLDING, 1, 1),
        (Table.INPUT, 0, 1),
    ]


def test_the_same_point_requested_twice_is_read_once() -> None:
    point = Span(Table.HOLDING, 10, 2)
    assert plan([point, point], cost=CostModel.for_tcp()) == [Block(Table.HOLDING, 10, 2, (point,))]


# -- points read together ---------------------------------------------------------------------


@st.composite
def cases_with_sets(draw: st.DrawFn, max_spans: int = 7) -> tuple[Case, list[list[Span]]]:
    """A case and up to two sets of its spans (one table each) that must be read together."""
    case = draw(cases(max_spans=max_spans))
    tables = sorted(t for t in {s.table for s in case.spans} if len(_of(case, t)) > 1)
    assume(tables)
    sets = []
    for _ in range(draw(st.integers(1, 2))):
        of_table = _of(case, draw(st.sampled_from(tables)))
        sets.append(draw(st.lists(st.sampled_from(of_table), min_size=2, unique=True)))
    return case, sets


def _of(case: Case, table: Table) -> list[Span]:
    return sorted({s for s in case.spans if s.table is table})


def one_read(case: Case, group: list[Span]) -> bool:
    """Whether a single request may read all of ``group``."""
    return group_cost(case, group) != math.inf


def planned(case: Case, sets: list[list[Span]]) -> list[Block]:
    return plan(
        case.spans,
        cost=case.cost,
        limits=case.limits,
        unreadable=case.unreadable,
        walls=case.walls,
        together=sets,
    )


@given(cases_with_sets())
def test_points_read_together_come_from_one_block_whenever_one_read_can_hold_them(
    data: tuple[Case, list[list[Span]]],
) -> None:
    case, sets = data
    blocks = planned(case, sets)
    block_of = {span: n for n, block in enumerate(blocks) for span in block.spans}
    assert set(block_of) == set(case.spans)  # still every point, exactly once
    for group in sets:
        if one_read(case, sorted(set(group))):
            assert len({block_of[s] for s in group}) == 1, f"{group} split across blocks"


@given(cases_with_sets())
def test_reading_points_together_costs_the_least_a_plan_that_keeps_them_together_can(
    data: tuple[Case, list[list[Span]]],
) -> None:
    case, sets = data
    kept = [sorted(set(g)) for g in sets if one_read(case, sorted(set(g)))]
    best = 0.0
    for table in {s.table for s in case.spans}:
        spans = sorted({s for s in case.spans if s.table is table})
        allowed = [
            groups
            for groups in contiguous_partitions(spans)
            if all(any(set(g) <= set(run_) for run_ in groups) for g in kept if g[0].table is table)
        ]
        best += min(sum(group_cost(case, g) for g in groups) for groups in allowed)
    assert total(case.cost, planned(case, sets)) == pytest.approx(best, rel=1e-9)
