"""The outbox: order, sequence numbers that survive a restart, acknowledgement, bounds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import OutboxError
from gateway.uplink.outbox import Outbox

TOPIC = "doorstep/v1/s/g/telemetry"


def payload(seq: int) -> bytes:
    return f"batch {seq}".encode()


def test_rows_come_back_in_order_with_consecutive_sequence_numbers(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        seqs = [box.append("telemetry", TOPIC, payload) for _ in range(5)]
        rows = box.peek(10)
    assert seqs == [1, 2, 3, 4, 5]
    assert [r.payload for r in rows] == [payload(s) for s in seqs]
    assert [r.id for r in rows] == sorted(r.id for r in rows)


def test_each_kind_has_its_own_sequence(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        assert box.append("telemetry", TOPIC, payload) == 1
        assert box.append("events", "e", payload) == 1
        assert box.append("telemetry", TOPIC, payload) == 2
        assert [r.kind for r in box.peek(10)] == ["telemetry", "events", "telemetry"]


def test_a_reopened_outbox_continues_the_sequence_and_keeps_unacknowledged_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        for _ in range(3):
            box.append("telemetry", TOPIC, payload)
        box.ack(box.peek(1)[0].id)
    with Outbox(path) as box:
        assert box.depth == 2
        assert [r.payload for r in box.peek(10)] == [payload(2), payload(3)]
        assert box.append("telemetry", TOPIC, payload) == 4


def test_sequence_numbers_are_never_reused_even_when_every_row_was_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.append("telemetry", TOPIC, payload)
        box.ack(*(r.id for r in box.peek(10)))
    with Outbox(path) as box:
        assert box.depth == 0
        assert box.append("telemetry", TOPIC, payload) == 2
        assert box.peek(1)[0].id == 2  # AUTOINCREMENT: ids are not reused either


def test_a_failing_payload_stores_nothing_and_spends_no_number(tmp_path: Path) -> None:
    def broken(seq: int) -> bytes:
        raise ValueError("too large")

    with Outbox(tmp_path / "o.db") as box:
        with pytest.raises(ValueError, match="too large"):
            box.append("telemetry", TOPIC, broken)
        assert box.depth == 0
        assert box.append("telemetry", TOPIC, payload) == 1


def test_peek_after_a_cursor_returns_the_following_rows(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        for _ in range(5):
            box.append("telemetry", TOPIC, payload)
        first = box.peek(2)
        rest = box.peek(10, after=first[-1].id)
    assert [r.payload for r in first + rest] == [payload(s) for s in range(1, 6)]


def test_acknowledging_a_row_twice_or_an_unknown_row_changes_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        box.append("telemetry", TOPIC, payload)
        row = box.peek(1)[0]
        box.ack(row.id)
        box.ack(row.id, 999)
        assert box.depth == 0


def test_a_full_outbox_drops_the_oldest_rows_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_rows=3) as box:
        for _ in range(5):
            box.append("telemetry", TOPIC, payload)
        assert box.depth == 3
        assert box.dropped == 2
        assert [r.payload for r in box.peek(10)] == [payload(3), payload(4), payload(5)]
    with Outbox(path, max_rows=3) as box:
        assert box.dropped == 2


def test_alarms_are_dropped_only_after_every_other_kind(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_rows=3, last_to_drop=["events"]) as box:
        box.append("events", "e", payload)
        box.append("telemetry", TOPIC, payload)
        box.append("events", "e", payload)
        box.append("telemetry", TOPIC, payload)  # drops telemetry 1, not the older event
        assert [(r.kind, r.payload) for r in box.peek(10)] == [
            ("events", payload(1)),
            ("events", payload(2)),
            ("telemetry", payload(2)),
        ]
        box.append("events", "e", payload)  # drops telemetry 2
        box.append("events", "e", payload)  # only events left: the oldest goes
        assert [(r.kind, r.payload) for r in box.peek(10)] == [
            ("events", payload(2)),
            ("events", payload(3)),
            ("events", payload(4)),
        ]
        assert box.dropped == 3


def test_rows_older_than_the_age_bound_are_pruned_and_counted(tmp_path: Path) -> None:
    now = [1000.0]
    with Outbox(tmp_path / "o.db", max_age_s=60, clock=lambda: now[0]) as box:
        box.append("telemetry", TOPIC, payload)
        now[0] = 1030.0
        box.append("telemetry", TOPIC, payload)
        assert box.prune(now=1059.0) == 0
        assert box.prune(now=1061.0) == 1
        assert [r.payload for r in box.peek(10)] == [payload(2)]
        assert box.dropped == 1


def test_an_append_is_idempotent_by_its_source_number(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        assert box.append("events", "e", payload, source=("alarms", 1)) == 1
        assert box.append("events", "e", payload, source=("alarms", 2)) == 2
        assert box.append("events", "e", payload, source=("alarms", 2)) is None
    with Outbox(path) as box:
        assert box.append("events", "e", payload, source=("alarms", 1)) is None
        assert box.last_source("alarms") == 2
        assert box.depth == 2


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path):
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_file_that_is_not_a_database_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match=r"o\.db"):
        Outbox(path)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(["telemetry", "events"])),
        st.tuples(st.just("ack"), st.integers(1, 4)),
        st.tuples(st.just("reopen"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_any_history_keeps_order_and_never_reuses_a_number(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, object]]
) -> None:
    """Model: the rows left are exactly the appended ones minus an acknowledged prefix, in
    order; every kind's numbers are 1, 2, 3, … across reopenings; bounds hold."""
    path = tmp_path_factory.mktemp("outbox") / "o.db"
    expected: list[tuple[str, int]] = []  # (kind, seq) in the outbox, in order
    last = {"telemetry": 0, "events": 0}
    dropped = 0
    box = Outbox(path, max_rows=8)
    try:
        for op, arg in ops:
            if op == "append":
                kind = str(arg)
                seq = box.append(kind, kind, lambda s, k=kind: f"{k}:{s}".encode())
                assert seq == last[kind] + 1
                last[kind] = seq
                expected.append((kind, seq))
                if len(expected) > 8:
                    expected.pop(0)
                    dropped += 1
            elif op == "ack":
                rows = box.peek(int(str(arg)))
                box.ack(*(r.id for r in rows))
                del expected[: len(rows)]
            else:
                box.close()
                box = Outbox(path, max_rows=8)
            rows = box.peek(100)
            assert [r.payload.decode() for r in rows] == [f"{k}:{s}" for k, s in expected]
            assert box.depth == len(expected)
            assert box.dropped == dropped
    finally:
        box.close()
