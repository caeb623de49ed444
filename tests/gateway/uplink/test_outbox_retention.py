"""The outbox keeps acknowledged batches for a while so the fleet can ask for what a broker
dropped; what it no longer keeps is reported as lost, by range."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.uplink.outbox import Outbox

TOPIC = "doorstep/v1/s/g/telemetry"


def _fill(outbox: Outbox, n: int) -> None:
    for _ in range(n):
        outbox.append("telemetry", TOPIC, lambda seq: b"batch %d" % seq)


def _ack_all(outbox: Outbox) -> None:
    outbox.ack(*(row.id for row in outbox.peek(10_000)))


def test_acknowledged_batches_are_kept_and_found_by_number(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        _fill(outbox, 10)
        _ack_all(outbox)
        assert outbox.depth == 0  # nothing waits for the broker any more
        kept, lost = outbox.sent("telemetry", 3, 5)
        assert [(s.seq, s.payload, s.topic) for s in kept] == [
            (3, b"batch 3", TOPIC), (4, b"batch 4", TOPIC), (5, b"batch 5", TOPIC),
        ]  # fmt: skip
        assert lost == []
        assert outbox.sent("telemetry", 9, 1_000_000_000) == (
            outbox.sent("telemetry", 9, 10)[0],
            [],
        )


def test_retention_is_bounded_by_rows_and_age_and_the_rest_is_lost(tmp_path: Path) -> None:
    now = [1000.0]
    with Outbox(tmp_path / "o.db", keep_sent_rows=5, keep_sent_s=60, clock=lambda: now[0]) as box:
        _fill(box, 8)
        _ack_all(box)
        kept, lost = box.sent("telemetry", 1, 8)
        assert [s.seq for s in kept] == [4, 5, 6, 7, 8]
        assert lost == [(1, 3)]
        _fill(box, 2)  # 9 and 10 wait for the broker: not lost
        now[0] += 61
        box.prune()
        assert box.sent("telemetry", 1, 10) == ([], [(1, 8)])


def test_the_outbox_file_is_the_owners_alone(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db"):
        pass
    assert stat.S_IMODE((tmp_path / "o.db").stat().st_mode) == 0o600


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(0, 30),
    st.integers(1, 40),
    st.integers(0, 40),
)
def test_every_asked_number_is_kept_waiting_or_lost_exactly_once(
    sent: int, keep: int, first: int, span: int
) -> None:
    with (
        tempfile.TemporaryDirectory() as directory,
        Outbox(Path(directory) / "o.db", keep_sent_rows=keep) as outbox,
    ):
        _fill(outbox, sent)
        _ack_all(outbox)
        _fill(outbox, 3)  # waiting
        last = first + span
        kept, lost = outbox.sent("telemetry", first, last)
        numbers = [s.seq for s in kept] + [n for a, b in lost for n in range(a, b + 1)]
        waiting = set(range(sent + 1, sent + 4))
        expected = [n for n in range(first, min(last, sent + 3) + 1) if n not in waiting]
        assert sorted(numbers) == expected
        assert len(numbers) == len(set(numbers))
        assert [s.seq for s in kept] == [n for n in expected if n > sent - keep]


def test_retention_can_be_switched_off(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", keep_sent_rows=0) as outbox:
        _fill(outbox, 3)
        _ack_all(outbox)
        assert outbox.sent("telemetry", 1, 3) == ([], [(1, 3)])
