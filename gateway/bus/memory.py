"""An in-memory bus: scripted Modbus units that answer request PDUs from register tables.

:class:`MemoryTransport` implements :class:`~gateway.bus.transport.Transport` with no port or
socket. pymodbus decodes each request and encodes its response, as on a real line, so what
the scheduler sends and decodes is real Modbus; a :class:`MemoryUnit` answers it from its
tables. The transport records every transaction and can be told to fail in the ways the
scheduler, the breaker and the poller must survive: a dead unit, exception 02 for a range, a
think time, a corrupt response.

It is a test seam, like httpx's ``MockTransport``: it lets the bus be tested without ptys. It
is not a simulator; the HIL rig under ``hil_tests/`` is the simulator.

Time: think times and a dead unit's timeout go through ``sleep`` (asyncio's by default), and
``clock`` (``time.monotonic`` by default, which is what the scheduler reads) stamps the record.
Think times default to 0, and a dead unit waits only as long as the ``response_timeout`` it is
given, so keep the breaker's timeouts short in tests. To count a timeout without waiting for
it, pass a ``sleep`` that returns at once: every :class:`Transaction` records ``busy_s``, the
bus time it took or would have taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

from pymodbus.exceptions import ModbusException
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsResponse,
    ReadDiscreteInputsResponse,
    WriteMultipleCoilsResponse,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)

from gateway.bus.pdu import Read, Request, Write
from gateway.devices import codec
from gateway.devices.profile import Point, Range, Table
from gateway.errors import BusTimeout, FrameError, TransportClosed

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2

Outcome = Literal["answered", "exception", "timeout", "corrupt"]

_SERVER_DECODER = DecodePDU(is_server=True)
_TABLE_OF_FUNCTION = {
    1: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING,
    4: Table.INPUT,
    5: Table.COIL,
    6: Table.HOLDING,
    15: Table.COIL,
    16: Table.HOLDING,
}
_RESPONSE_OF_FUNCTION: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
    5: WriteSingleCoilResponse,
    6: WriteSingleRegisterResponse,
    15: WriteMultipleCoilsResponse,
    16: WriteMultipleRegistersResponse,
}


@dataclass(frozen=True, slots=True)
class Transaction:
    """One request as the bus saw it, recorded when it ended."""

    unit_id: int
    function: int
    address: int
    count: int
    #: ``clock()`` when the request arrived
    at: float
    outcome: Outcome
    #: seconds the bus was occupied: the unit's think time, or the whole timeout
    busy_s: float


@dataclass
class MemoryUnit:
    """One unit's four tables (an address never set reads 0) and the faults it is told to
    show. Change the fields between transactions to script a test."""

    tables: dict[Table, dict[int, int]] = field(default_factory=dict)
    #: ranges answered with exception 02 (illegal data address), reads and writes alike
    refused: list[Range] = field(default_factory=list)
    #: no answer at all: every request times out
    dead: bool = False
    #: seconds between the request and the response; longer than the timeout is a timeout
    think_s: float = 0.0
    #: how many of the next responses arrive corrupt (a bad CRC: FrameError)
    corrupt_next: int = 0

    def set(self, table: Table, address: int, values: list[int]) -> None:
        """Store raw registers (or 0/1 bits) from ``address`` on."""
        tab = self.tables.setdefault(table, {})
        for offset, value in enumerate(values):
            tab[address + offset] = value

    def get(self, table: Table, address: int, count: int) -> list[int]:
        tab = self.tables.get(table, {})
        return [tab.get(a, 0) for a in range(address, address + count)]

    def put(self, point: Point, value: codec.Value, scale_factor: int | None = None) -> None:
        """Store a point's engineering value, encoded as the gateway will decode it."""
        assert point.address is not None, f"{point.name}: place SunSpec points first"
        self.set(point.table, point.address, codec.encode(point, value, scale_factor))

    def refuse(self, table: Table, start: int, end: int | None = None) -> None:
        """Answer exception 02 for addresses ``start..end`` (inclusive; one address if no end)."""
        self.refused.append(Range(table=table, start=start, end=start if end is None else end))

    def refuses(self, request: Request) -> bool:
        """Whether the request touches a refused range."""
        count = _count(request)
        return any(
            r.table is request.table and r.overlaps(request.address, count) for r in self.refused
        )

    def answer(self, request: Request) -> list[int] | int:
        """The values read (``[]`` for a write, which is applied), or an exception code."""
        if self.refuses(request):
            return ILLEGAL_DATA_ADDRESS
        if isinstance(request, Write):
            self.set(request.table, request.address, list(request.values))
            return []
        return self.get(request.table, request.address, request.count)


class MemoryTransport:
    """A bus of :class:`MemoryUnit` by unit id; a unit id with no unit never answers.

    Not locked: it counts how many transactions overlap (``max_in_flight``), so a test can
    check that the scheduler keeps one in flight."""

    def __init__(
        self,
        name: str = "memory",
        units: dict[int, MemoryUnit] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.units = units if units is not None else {}
        self.log: list[Transaction] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.open = False
        self._clock = clock
        self._sleep = sleep

    async def __aenter__(self) -> Self:
        self.open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.open = False

    def wire_time(self, request_bytes: int, response_bytes: int) -> float:
        return 0.0

    async def transact(self, unit_id: int, pdu: bytes, response_timeout: float) -> bytes:
        if not self.open:
            raise TransportClosed(self.name, unit_id, "the in-memory bus is not open")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._transact(unit_id, pdu, response_timeout)
        finally:
            self.in_flight -= 1

    async def _transact(self, unit_id: int, pdu: bytes, response_timeout: float) -> bytes:
        at = self._clock()
        request = _decode_request(pdu)
        if request is None:
            function = pdu[0] if pdu else 0
            self._record(unit_id, function, 0, 0, at, "exception", 0.0)
            return _exception(function, ILLEGAL_FUNCTION)
        address, count = request.address, _count(request)
        unit = self.units.get(unit_id)
        if unit is None or unit.dead or unit.think_s > response_timeout:
            await self._sleep(response_timeout)
            self._record(unit_id, pdu[0], address, count, at, "timeout", response_timeout)
            raise BusTimeout(self.name, unit_id, f"no response within {response_timeout:.3f} s")
        await self._sleep(unit.think_s)
        if unit.corrupt_next > 0:
            unit.corrupt_next -= 1
            self._record(unit_id, pdu[0], address, count, at, "corrupt", unit.think_s)
            raise FrameError(self.name, unit_id, "CRC mismatch")
        answer = unit.answer(request)
        outcome: Outcome = "exception" if isinstance(answer, int) else "answered"
        self._record(unit_id, pdu[0], address, count, at, outcome, unit.think_s)
        return _encode_response(request, answer)

    def _record(
        self,
        unit_id: int,
        function: int,
        address: int,
        count: int,
        at: float,
        outcome: Outcome,
        busy_s: float,
    ) -> None:
        self.log.append(Transaction(unit_id, function, address, count, at, outcome, busy_s))


def _decode_request(pdu: bytes) -> Request | None:
    """The request a PDU carries, or None for a function this bus does not serve."""
    try:
        decoded = _SERVER_DECODER.decode(pdu)
    except (ModbusException, IndexError, ValueError, KeyError):
        return None
    table = _TABLE_OF_FUNCTION.get(decoded.function_code) if decoded is not None else None
    if decoded is None or table is None:
        return None
    if decoded.function_code <= 4:
        return Read(table, decoded.address, decoded.count)
    if table is Table.COIL:
        bits = decoded.bits[: decoded.count or len(decoded.bits)]
        return Write(table, decoded.address, tuple(int(b) for b in bits))
    return Write(table, decoded.address, tuple(decoded.registers))


def _encode_response(request: Request, answer: list[int] | int) -> bytes:
    """The response PDU to a request: its values, a write's echo, or an exception code."""
    function = request.function_code
    if isinstance(answer, int):
        return _exception(function, answer)
    values = answer if isinstance(request, Read) else list(request.values)
    bits = [bool(v) for v in values] if request.table.is_bits else None
    registers = None if request.table.is_bits else values
    pdu = _RESPONSE_OF_FUNCTION[function](
        address=request.address, count=len(values), bits=bits, registers=registers
    )
    return bytes([pdu.function_code]) + pdu.encode()


def _exception(function: int, code: int) -> bytes:
    pdu = ExceptionResponse(function, code)
    return bytes([pdu.function_code]) + pdu.encode()


def _count(request: Request) -> int:
    return request.count if isinstance(request, Read) else len(request.values)
