"""Modbus TCP to one endpoint (a device, or a TCP-to-RTU gateway holding several units).

One connection, one transaction in flight. A timeout does not close the connection (a dead
unit behind a TCP gateway must not cut off its neighbours); a late answer is recognised by its
transaction id and dropped. A broken connection is reopened on the next transaction, with a
growing pause between attempts so a missing device is not hammered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self

from gateway.backoff import Backoff
from gateway.errors import BusTimeout, FrameError, TransportClosed

_MBAP = 7
_RECONNECT_MIN_S = 0.5
_RECONNECT_MAX_S = 10.0


class TcpTransport:
    def __init__(self, name: str, host: str, port: int = 502, connect_timeout: float = 2.0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tid = 0
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._reconnects = Backoff(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        self.stale_answers = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def wire_time(self, request_bytes: int, response_bytes: int) -> float:
        return 0.0

    async def transact(self, unit_id: int, pdu: bytes, response_timeout: float) -> bytes:
        async with self._lock:
            reader, writer = await self._connection(unit_id)
            self._tid = (self._tid + 1) & 0xFFFF
            tid = self._tid
            header = tid.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big")
            try:
                writer.write(header + bytes([unit_id]) + pdu)
                await writer.drain()
            except OSError as exc:
                await self._close()
                raise TransportClosed(self.name, unit_id, f"send failed: {exc}") from None
            return await self._answer(reader, unit_id, tid, response_timeout)

    async def _answer(
        self, reader: asyncio.StreamReader, unit_id: int, tid: int, response_timeout: float
    ) -> bytes:
        deadline = time.monotonic() + response_timeout
        while True:
            mid_frame = False
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    head = await reader.readexactly(_MBAP)
                    mid_frame = True
                    length = int.from_bytes(head[4:6], "big")
                    if not 2 <= length <= 254:
                        raise FrameError(self.name, unit_id, f"MBAP length {length} is invalid")
                    body = await reader.readexactly(length - 1)
            except TimeoutError:
                if mid_frame:  # the stream is out of step: start over with a new connection
                    await self._close()
                raise BusTimeout(
                    self.name, unit_id, f"no response within {response_timeout:.3f} s"
                ) from None
            except (asyncio.IncompleteReadError, OSError) as exc:
                await self._close()
                raise TransportClosed(self.name, unit_id, f"connection lost: {exc}") from None
            except FrameError:
                await self._close()
                raise
            if int.from_bytes(head[0:2], "big") != tid:
                self.stale_answers += 1  # a late answer to a request that timed out
                continue
            if head[6] != unit_id:
                raise FrameError(self.name, unit_id, f"response from unit {head[6]}")
            return body

    async def _connection(self, unit_id: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            return self._reader, self._writer
        now = time.monotonic()
        if now < self._retry_at:
            raise TransportClosed(
                self.name,
                unit_id,
                f"{self.host}:{self.port} unreachable; retry in {self._retry_at - now:.1f} s",
            )
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            self._retry_at = time.monotonic() + self._reconnects.next()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise TransportClosed(
                self.name, unit_id, f"cannot connect to {self.host}:{self.port}: {reason}"
            ) from None
        self._reconnects.reset()
        return self._reader, self._writer

    async def _close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
