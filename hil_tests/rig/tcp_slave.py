"""Modbus TCP serving simulated units on 127.0.0.1.

MBAP framing (transaction id echoed, unit id routed). A unit id that no unit answers gets
exception 0x0B, "gateway target device failed to respond", which is what a TCP-to-RTU
gateway sends; a dead unit (fault) gets no answer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from hil_tests.rig.fault_injection import Faults
from hil_tests.rig.modbus_slave import exception_pdu, respond
from hil_tests.rig.registers import SimulatedUnit

GATEWAY_TARGET_FAILED = 0x0B


class TcpSlaveServer:
    def __init__(
        self,
        units: Mapping[int, SimulatedUnit],
        *,
        faults: Faults | None = None,
        lock: threading.Lock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.units = dict(units)
        self.faults = faults or Faults()
        self.host = host
        self.port = port
        self.requests = 0
        self._lock = lock or threading.Lock()
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                head = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
                self.requests += 1
                answer = await self._answer(head[6], body)
                if answer is None:
                    continue
                frame = head[:4] + (len(answer) + 1).to_bytes(2, "big") + head[6:7] + answer
                await self._send(head[6], writer, frame)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, unit_id: int, pdu: bytes) -> bytes | None:
        unit = self.units.get(unit_id)
        if unit is None:
            return exception_pdu(pdu[0] if pdu else 0, GATEWAY_TARGET_FAILED)
        faults = self.faults.of(unit_id)
        if faults.dead:
            return None
        if faults.think_time_s:
            await asyncio.sleep(faults.think_time_s)
        with self._lock:
            return respond(unit, pdu)

    async def _send(self, unit_id: int, writer: asyncio.StreamWriter, frame: bytes) -> None:
        faults = self.faults.of(unit_id)
        size = faults.chunk_size or len(frame)
        for i in range(0, len(frame), size):
            if i and faults.chunk_gap_s:
                await asyncio.sleep(faults.chunk_gap_s)
            writer.write(frame[i : i + size])
            await writer.drain()
