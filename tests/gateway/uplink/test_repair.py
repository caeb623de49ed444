"""The gateway answers the fleet's repair requests from its outbox: each batch it still keeps
is published again unchanged on its own topic, and the report names the lost ranges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import wire
from gateway.mqtt import Message
from gateway.uplink.inbox import Inbox
from gateway.uplink.outbox_thread import OutboxThread
from gateway.uplink.repair import Repairer
from gateway.wire.repair import RepairReport, RepairRequest

TOPICS = {kind: wire.topic("s", "g", kind) for kind in wire.Kind}


class Published(Inbox):
    """The real inbox, its publishing recorded instead of sent to a broker."""

    def __init__(self) -> None:
        super().__init__(TOPICS)
        self.sent: list[tuple[wire.Kind, bytes]] = []

    async def send(self, kind: wire.Kind, payload: bytes) -> bool:
        self.sent.append((kind, payload))
        return True


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[OutboxThread]:
    thread = OutboxThread()
    await thread.open(
        tmp_path / "outbox.db", max_rows=1000, max_age_s=3600, last_to_drop=(), synchronous="full"
    )
    box = thread.outbox
    box.keep_sent_rows = 5
    for _ in range(8):
        await thread.run(
            box.append, "telemetry", TOPICS[wire.Kind.TELEMETRY], lambda seq: b"batch %d" % seq
        )
    rows = await thread.run(box.peek, 100)
    await thread.run(box.ack, *(row.id for row in rows))
    yield thread
    await thread.close()


async def test_kept_batches_are_sent_again_and_the_rest_reported_lost(outbox: OutboxThread) -> None:
    inbox = Published()
    Repairer(outbox, inbox).install()
    request = RepairRequest(id=7, kind="telemetry", ranges=[(2, 4), (7, 20)])
    topic = TOPICS[wire.Kind.REPAIR_REQUEST]
    await inbox.dispatch(Message(topic, wire.encode(request), 1, False, 1, None))
    *batches, (report_kind, report) = inbox.sent
    assert batches == [
        (wire.Kind.TELEMETRY, b"batch 4"),
        (wire.Kind.TELEMETRY, b"batch 7"),
        (wire.Kind.TELEMETRY, b"batch 8"),
    ]
    assert report_kind is wire.Kind.REPAIR_REPORT
    answered = wire.decode(RepairReport, report)
    assert (answered.request, answered.resent, answered.lost) == (7, 3, [(2, 3)])


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v": 1, "id": 1, "kind": "telemetry", "ranges": [[5, 2]]}',
        b'{"v": 1, "id": 1, "kind": "telemetry", "ranges": [[1, 1000000000]]}',
        b'{"v": 1, "id": 1, "kind": "state", "ranges": [[1, 2]]}',
        b'{"v": 1, "id": true, "kind": "telemetry", "ranges": [[1, 2]]}',
        b"[" * 5000,
    ],
)
async def test_a_bad_request_sends_nothing(outbox: OutboxThread, payload: bytes) -> None:
    inbox = Published()
    await Repairer(outbox, inbox).handle(payload)
    assert inbox.sent == []
