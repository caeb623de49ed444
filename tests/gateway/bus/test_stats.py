"""Transaction statistics: latency percentiles, bus throughput and utilisation, snapshots."""

from __future__ import annotations

import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.bus.stats import BusStats, DeviceStats, LatencyWindow

seconds = st.floats(0.0, 5.0, allow_nan=False)


def nearest_rank(samples: list[float], p: int) -> float:
    """The smallest sample with at least p % of the samples at or below it."""
    return min(x for x in samples if sum(v <= x for v in samples) * 100 >= p * len(samples))


def window_of(samples: list[float], size: int) -> LatencyWindow:
    window = LatencyWindow(size)
    for s in samples:
        window.add(s)
    return window


@given(st.lists(seconds, min_size=1, max_size=80), st.integers(1, 100), st.integers(0, 100))
@example(samples=[float(k) for k in range(100)], size=100, p=7)
@example(samples=[float(k) for k in range(25)], size=25, p=56)
def test_percentiles_are_nearest_rank_over_the_most_recent_samples(
    samples: list[float], size: int, p: int
) -> None:
    window = window_of(samples, size)
    recent = samples[-size:]
    assert window.count == len(recent)
    assert window.percentile(p) == nearest_rank(recent, p)


@given(st.lists(seconds, min_size=1, max_size=80), st.integers(1, 100))
def test_the_named_percentiles_are_ordered_and_within_the_samples(
    samples: list[float], size: int
) -> None:
    window = window_of(samples, size)
    recent = samples[-size:]
    assert window.p50 is not None
    assert window.p95 is not None
    assert window.p99 is not None
    assert min(recent) <= window.p50 <= window.p95 <= window.p99 <= max(recent)
    assert window.percentile(0) == min(recent)
    assert window.percentile(100) == max(recent)


def test_a_window_forgets_its_oldest_samples() -> None:
    window = window_of([10.0, 10.0, 10.0, 0.001, 0.002, 0.003], size=3)
    assert window.count == 3
    assert window.percentile(100) == 0.003


def test_the_7th_percentile_of_100_samples_is_the_7th_smallest() -> None:
    # 7 / 100 * 100 is 7.000000000000001 in floating point: a rank from p / 100 * n is one off
    window = window_of([float(k) for k in range(1, 101)], size=512)
    assert window.percentile(7) == 7.0


def test_an_empty_window_has_no_percentiles() -> None:
    window = LatencyWindow()
    assert window.count == 0
    assert window.percentile(50) is None
    assert (window.p50, window.p95, window.p99) == (None, None, None)


@given(
    st.floats(0.0, 1e4),
    st.floats(0.001, 1e5),
    st.floats(0.0, 1e5),
    st.integers(0, 10**6),
)
def test_utilisation_is_wire_time_over_elapsed_time_and_at_most_one(
    started: float, elapsed: float, busy: float, transactions: int
) -> None:
    stats = BusStats(started_at=started, wire_busy_s=busy, transactions=transactions)
    now = started + elapsed
    assert stats.utilisation(now) == pytest.approx(min(1.0, busy / (now - started)))
    assert 0.0 <= stats.utilisation(now) <= 1.0
    assert stats.transactions_per_s(now) == pytest.approx(transactions / (now - started))


@pytest.mark.parametrize("now", [100.0, 99.0])
def test_no_time_elapsed_means_no_rate_and_no_utilisation(now: float) -> None:
    stats = BusStats(started_at=100.0, wire_busy_s=1.0, transactions=5)
    assert stats.utilisation(now) == 0.0
    assert stats.transactions_per_s(now) == 0.0


def test_a_bus_busy_half_the_time_reports_half() -> None:
    stats = BusStats(started_at=10.0, wire_busy_s=2.5, transactions=40)
    assert stats.utilisation(15.0) == 0.5
    assert stats.transactions_per_s(15.0) == 8.0


DEVICE_KEYS = {
    "transactions",
    "timeouts",
    "crc_errors",
    "exceptions",
    "retries",
    "skipped_open",
    "latency_p50_ms",
    "latency_p99_ms",
}


def test_a_device_snapshot_reports_counters_and_latency_in_milliseconds() -> None:
    stats = DeviceStats(transactions=3, timeouts=1, crc_errors=2, exceptions=4, retries=5)
    stats.skipped_open = 6
    for s in (0.0123456, 0.020, 0.5):
        stats.latency.add(s)
    snap = stats.snapshot()
    assert set(snap) == DEVICE_KEYS
    assert snap["transactions"] == 3
    assert snap["timeouts"] == 1
    assert snap["crc_errors"] == 2
    assert snap["exceptions"] == 4
    assert snap["retries"] == 5
    assert snap["skipped_open"] == 6
    assert snap["latency_p50_ms"] == 20.0
    assert snap["latency_p99_ms"] == 500.0


def test_latency_in_a_snapshot_is_rounded_to_the_microsecond() -> None:
    stats = DeviceStats()
    stats.latency.add(0.0123456)
    assert stats.snapshot()["latency_p50_ms"] == 12.346


def test_a_device_that_never_answered_has_no_latency_in_its_snapshot() -> None:
    snap = DeviceStats(timeouts=7).snapshot()
    assert snap["latency_p50_ms"] is None
    assert snap["latency_p99_ms"] is None
    assert snap["timeouts"] == 7


def test_a_bus_snapshot_adds_rate_and_utilisation_at_the_given_time() -> None:
    stats = BusStats(started_at=0.0, wire_busy_s=1.0, transactions=10)
    stats.latency.add(0.040)
    snap = stats.snapshot(now=3.0)
    assert set(snap) == DEVICE_KEYS | {"tx_per_s", "utilisation"}
    assert snap["tx_per_s"] == 3.333
    assert snap["utilisation"] == 0.3333
    assert snap["latency_p50_ms"] == 40.0
    assert snap["transactions"] == 10


def test_bus_stats_start_counting_from_their_creation_on_the_monotonic_clock() -> None:
    before = time.monotonic()
    stats = BusStats()
    assert before <= stats.started_at <= time.monotonic()
    snap = stats.snapshot()
    assert snap["tx_per_s"] == 0.0
    assert snap["utilisation"] == 0.0
