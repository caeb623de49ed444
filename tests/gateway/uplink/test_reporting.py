"""Report-by-exception: what goes to the fleet, when, and in batches of bounded size."""

from __future__ import annotations

import asyncio
import math
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway import wire
from gateway.image import Quality, Sample
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from gateway.uplink.reporting import (
    PointOverride,
    PointRule,
    ReportConfig,
    Reporter,
    WireFormat,
    differs,
)
from gateway.wire import compact

GOOD = Quality.GOOD


def fixed(deadband: float, interval: float = 10.0) -> Reporter:
    return Reporter(lambda d, p: PointRule(deadband, interval), max_batch=100)


def values(batch: list[tuple[str, str, Sample]]) -> list[Any]:
    return [s.value for _, _, s in batch]


def test_a_change_beyond_the_deadband_is_in_the_next_batch_and_one_within_it_is_not() -> None:
    r = fixed(deadband=1.0)
    r.offer("m", "v", Sample(230.0, 0.0, GOOD))
    assert values(r.take(0.0)) == [230.0]
    r.offer("m", "v", Sample(230.9, 0.1, GOOD))
    assert r.take(0.2) == []
    r.offer("m", "v", Sample(231.5, 0.3, GOOD))
    assert values(r.take(0.4)) == [231.5]


def test_the_deadband_is_measured_from_the_value_last_sent_so_a_slow_drift_is_reported() -> None:
    r = fixed(deadband=1.0)
    r.offer("m", "v", Sample(10.0, 0.0, GOOD))
    r.take(0.0)
    sent = []
    for i in range(1, 30):
        r.offer("m", "v", Sample(10.0 + i * 0.2, i, GOOD))
        sent += values(r.take(i))
    assert sent, "a drift of 5.8 past a deadband of 1 must be reported"
    assert all(b - a > 1.0 for a, b in zip([10.0, *sent], sent, strict=False))


def test_an_unchanged_point_is_sent_again_after_its_maximum_interval() -> None:
    r = fixed(deadband=0.0, interval=5.0)
    r.offer("m", "v", Sample(1, 0.0, GOOD))
    assert values(r.take(0.0)) == [1]
    r.offer("m", "v", Sample(1, 1.0, GOOD))
    assert r.take(4.9) == []
    assert values(r.take(5.0)) == [1]


def test_a_quality_change_is_reported_even_within_the_deadband_and_never_merged_away() -> None:
    r = fixed(deadband=100.0)
    r.offer("m", "v", Sample(1.0, 0.0, GOOD))
    r.take(0.0)
    r.offer("m", "v", Sample(1.0, 0.1, Quality.OFFLINE))
    r.offer("m", "v", Sample(1.0, 0.2, GOOD))
    batch = r.take(0.3)
    assert [s.quality for _, _, s in batch] == [Quality.OFFLINE, GOOD]


def test_non_numeric_values_are_reported_on_any_change() -> None:
    assert differs(1000.0, Sample("idle", 0, GOOD), Sample("busy", 0, GOOD))
    assert differs(1000.0, Sample(True, 0, GOOD), Sample(False, 0, GOOD))
    assert differs(1000.0, Sample(1, 0, GOOD), Sample(True, 0, GOOD))  # another type
    assert not differs(0.0, Sample(float("nan"), 0, GOOD), Sample(float("nan"), 0, GOOD))


def rule_of_differs(deadband: float, old: Sample, new: Sample) -> bool:
    """differs() as its docstring states it, written plainly: the oracle for the fast one."""
    if old.quality is not new.quality:
        return True
    a, b = old.value, new.value
    if (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        if math.isnan(a) or math.isnan(b):
            return not (math.isnan(a) and math.isnan(b))
        return abs(b - a) > deadband
    return type(a) is not type(b) or a != b


any_value = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64), st.floats(), st.text(max_size=3),
    st.sampled_from([0, 1, 0.0, 1.0, -0.0, True, False, math.inf, -math.inf, math.nan]),
)  # fmt: skip


@given(
    deadband=st.one_of(st.floats(0, 1e6), st.just(math.inf)),
    a=any_value,
    b=any_value,
    qa=st.sampled_from(Quality),
    qb=st.sampled_from(Quality),
)
def test_differs_follows_its_rule(
    deadband: float, a: object, b: object, qa: Quality, qb: Quality
) -> None:
    old, new = Sample(a, 0.0, qa), Sample(b, 1.0, qb)  # type: ignore[arg-type]
    assert differs(deadband, old, new) == rule_of_differs(deadband, old, new)


def test_a_full_batch_is_signalled_and_batches_never_exceed_the_maximum() -> None:
    r = Reporter(lambda d, p: PointRule(0.0, 60.0), max_batch=10)
    full = [r.offer("m", f"p{i}", Sample(i, 0.0, GOOD)) for i in range(25)]
    assert full.index(True) == 9
    sizes = []
    while batch := r.take(0.0):
        sizes.append(len(batch))
    assert sizes == [10, 10, 5]


def test_rules_come_from_point_overrides_then_units_then_the_default() -> None:
    cfg = ReportConfig(
        deadband=0.5,
        max_interval_s=60,
        deadband_by_unit={"V": 2.0},
        points={"meter-1.power": PointOverride(deadband=50, max_interval_s=5)},
    )
    assert cfg.rule("meter-1", "power", "W") == PointRule(50, 5)
    assert cfg.rule("meter-1", "voltage", "V") == PointRule(2.0, 60)
    assert cfg.rule("meter-1", "freq", "Hz") == PointRule(0.5, 60)


@pytest.mark.parametrize("wire_format", ["json", "compact"])
async def test_a_batch_too_large_for_the_wire_is_split_and_nothing_is_lost(
    tmp_path: Path, wire_format: WireFormat
) -> None:
    """500 readings of 1 kB of random text are 2× wire.MAX_PAYLOAD (compressed too): they go
    as several batches, each under the limit, in order. (The broker is a closed port:
    nothing leaves, everything is kept.)"""
    config = UplinkConfig(
        broker="mqtt://127.0.0.1:9", max_batch=500, reconnect_min_s=5, wire_format=wire_format
    )
    texts = [secrets.token_urlsafe(1000) for _ in range(500)]
    async with Uplink(config, site="s", gateway="g", state_dir=tmp_path) as uplink:
        for i in range(500):
            uplink.on_sample("d", f"p{i}", Sample(texts[i], 0.0, GOOD))
        await uplink.flush()
        assert uplink.depth >= 2
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        rows = db.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    batches = [wire.decode(wire.TelemetryBatch, p) for (p,) in rows]
    assert all(len(p) <= wire.MAX_PAYLOAD for (p,) in rows)
    assert all(compact.is_compact(p) == (wire_format == "compact") for (p,) in rows)
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    assert [(r.p, r.v) for b in batches for r in b.readings] == [
        (f"p{i}", texts[i]) for i in range(500)
    ]


async def test_a_clean_stop_puts_pending_readings_in_the_outbox(tmp_path: Path) -> None:
    config = UplinkConfig(broker="mqtt://127.0.0.1:9", batch_interval_s=60, reconnect_min_s=5)
    async with Uplink(config, site="s", gateway="g", state_dir=tmp_path) as uplink:
        uplink.on_sample("d", "p", Sample(1, 0.0, GOOD))
        await asyncio.sleep(0)
    async with Uplink(config, site="s", gateway="g", state_dir=tmp_path) as uplink:
        assert uplink.depth == 1


# -- the state machine ---------------------------------------------------------------------------

POINTS = {"p0": 0.0, "p1": 1.0, "p2": 5.0, "p3": 0.5}  # point → deadband
INTERVAL = 10.0
MAX_BATCH = 3
numbers = st.one_of(st.integers(-20, 20), st.floats(-20, 20, allow_nan=False))


def collapse(qualities: list[Quality]) -> list[Quality]:
    return [q for i, q in enumerate(qualities) if i == 0 or qualities[i - 1] is not q]


class ReportingMachine(RuleBasedStateMachine):
    """Against a model: after every round of batches the fleet has each point within its
    deadband of the latest sample, has seen every change of quality in order, and got each
    unchanged point at least every maximum interval and no more often."""

    @initialize()
    def start(self) -> None:
        self.reporter = Reporter(lambda d, p: PointRule(POINTS[p], INTERVAL), MAX_BATCH)
        self.now = 0.0
        self.sent: dict[str, Sample] = {}  # what the fleet has
        self.sent_at: dict[str, float] = {}
        self.offered: dict[str, list[Sample]] = {p: [] for p in POINTS}
        self.latest: dict[str, Sample] = {}

    @rule(point=st.sampled_from(sorted(POINTS)), value=numbers, quality=st.sampled_from(Quality))
    def offer(self, point: str, value: float, quality: Quality) -> None:
        sample = Sample(value, self.now, quality)
        self.reporter.offer("d", point, sample)
        self.offered[point].append(sample)
        self.latest[point] = sample

    @rule(dt=st.sampled_from([0.1, 1.0, 4.0, 10.0]))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule()
    def take(self) -> None:
        got: dict[str, list[Sample]] = {p: [] for p in POINTS}
        while batch := self.reporter.take(self.now):
            points_in_batch = {p for _, p, _ in batch}
            assert len(batch) <= MAX_BATCH or len(points_in_batch) == 1
            for _, point, sample in batch:
                got[point].append(sample)
        for point, deadband in POINTS.items():
            self._check_point(point, deadband, got[point])
            self.offered[point] = []

    def _check_point(self, point: str, deadband: float, got: list[Sample]) -> None:
        offered = self.offered[point]
        before = self.sent.get(point)
        changed = any(before is None or differs(deadband, before, s) for s in offered)
        due = point in self.latest and self.now - self.sent_at.get(point, -1e9) >= INTERVAL
        if changed or due:
            assert got, f"{point}: changed={changed} due={due} but not reported"
            assert got[-1] == self.latest[point], f"{point}: the last value is not the latest"
            self.sent[point], self.sent_at[point] = got[-1], self.now
        else:
            assert got == [], f"{point}: reported without a change or being due"
        if before is not None:
            assert collapse([before.quality, *(s.quality for s in got)]) == collapse(
                [before.quality, *(s.quality for s in offered)]
            ), f"{point}: a change of quality was merged away"

    @invariant()
    def pending_counts_readings(self) -> None:
        assert self.reporter.pending >= 0


TestReportingMachine = ReportingMachine.TestCase
TestReportingMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("value", [0.0, 1e9])
def test_a_first_sample_is_always_reported(value: float) -> None:
    r = fixed(deadband=1e12)
    r.offer("m", "v", Sample(value, 0.0, GOOD))
    assert values(r.take(0.0)) == [value]
