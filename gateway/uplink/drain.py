"""The drain: outbox rows published to the broker in order, deleted once acknowledged.

In aiomqtt 2.5.1 ``publish(qos=1)`` returns only after paho's ``on_publish``, which paho 2.2
calls on the PUBACK; it times out (:class:`~gateway.errors.BrokerError`) after the client's
``timeout``, and it is NOT woken when the connection drops: the connection's session runs the
drain beside a watcher that does notice, so a lost connection cancels the publishes at once.

Up to ``window`` publishes are in flight; they are handed to paho in outbox order and paho
writes them in that order, and a row is deleted only when it and every row before it were
acknowledged. After a reconnect the drain starts again from the oldest row still in the
outbox: the broker sees every row at least once and in order, and a row re-sent carries the
same payload and sequence number, so the fleet's de-duplication by sequence number makes it
exactly once. (A PUBACK means the broker took the message; MQTT 3.1.1 cannot say that an ACL
then discarded it.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from gateway.mqtt import Client
from gateway.uplink.outbox import Row
from gateway.uplink.outbox_thread import OutboxThread

#: how long the drain holds acknowledged rows before deleting them when no new row comes to
#: peek in the same trip to the outbox thread (a row acknowledged but not yet deleted when the
#: gateway dies is sent again, which the fleet drops as a duplicate)
ACK_DELAY_S = 0.25


class Drain:
    """Publishes the outbox's rows over one connection at a time (:meth:`run`)."""

    def __init__(self, outbox: OutboxThread, window: int, publish_timeout_s: float) -> None:
        self._outbox = outbox
        self._window = window
        self._timeout = publish_timeout_s
        self._idle = asyncio.Event()  # the drain found the outbox empty

    async def run(self, client: Client) -> None:
        """Publish outbox rows in id order, ``window`` at a time; delete each acknowledged
        prefix. Starts from the oldest row: whatever was in flight before is sent again.
        Returns only by an error (the connection's)."""
        appended = self._outbox.appended
        inflight: deque[tuple[int, asyncio.Task[None]]] = deque()
        acked: list[int] = []
        cursor = 0
        async with asyncio.TaskGroup() as group:
            while True:
                appended.clear()
                room = self._window - len(inflight)
                rows = await self._outbox.run(self._settle, acked, room, cursor)
                acked = []
                for row in rows:
                    publish = client.publish(row.topic, row.payload, qos=1, timeout=self._timeout)
                    inflight.append((row.id, group.create_task(publish, name=f"publish:{row.id}")))
                    cursor = row.id
                if inflight:
                    self._idle.clear()
                    await asyncio.wait([inflight[0][1]])
                    while inflight and inflight[0][1].done():
                        row_id, task = inflight.popleft()
                        task.result()  # a failed publish ends the session
                        acked.append(row_id)
                    if not inflight and not appended.is_set():
                        # The deletes ride on the trip that peeks the next rows (at most
                        # ACK_DELAY_S later) rather than take one of their own.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(ACK_DELAY_S):
                                await appended.wait()
                elif not rows:
                    self._idle.set()
                    await appended.wait()

    async def emptied(self) -> None:
        """Until the running drain finds the outbox empty (the caller bounds the wait)."""
        self._idle.clear()
        self._outbox.appended.set()
        await self._idle.wait()

    def _settle(self, acked: list[int], room: int, cursor: int) -> list[Row]:
        """(outbox thread) Delete the acknowledged rows, then up to ``room`` rows after
        ``cursor``: one trip to the outbox thread per turn of the drain."""
        outbox = self._outbox.outbox
        outbox.ack(*acked)
        return outbox.peek(room, cursor) if room else []
