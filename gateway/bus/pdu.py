"""Modbus requests and responses as our own small types, encoded by pymodbus.

pymodbus owns the byte layout of PDUs (and the RTU/MBAP framing, see :mod:`.frames`); this
module is the one place that touches its PDU classes, so a pymodbus upgrade changes one file.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.exceptions import ModbusException
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from gateway.devices.profile import Table
from gateway.errors import ResponseError

_READ_CLASSES: dict[Table, type[ModbusPDU]] = {
    Table.COIL: ReadCoilsRequest,
    Table.DISCRETE: ReadDiscreteInputsRequest,
    Table.HOLDING: ReadHoldingRegistersRequest,
    Table.INPUT: ReadInputRegistersRequest,
}
_CLIENT_DECODER = DecodePDU(is_server=False)


@dataclass(frozen=True, slots=True)
class Read:
    """Read ``count`` registers (or bits) of one table."""

    table: Table
    address: int
    count: int

    @property
    def function_code(self) -> int:
        return self.table.read_function

    def response_bytes(self) -> int:
        """Length of the response PDU (function code + byte count + data)."""
        data = (self.count + 7) // 8 if self.table.is_bits else 2 * self.count
        return 2 + data


@dataclass(frozen=True, slots=True)
class Write:
    """Write registers (holding) or bits (coil). A multi-register value goes in one FC16."""

    table: Table
    address: int
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.table.writable:
            raise ValueError(f"table {self.table} is read-only")
        if not self.values:
            raise ValueError("a write needs at least one value")

    @property
    def function_code(self) -> int:
        single = len(self.values) == 1
        if self.table is Table.COIL:
            return 5 if single else 15
        return 6 if single else 16

    def response_bytes(self) -> int:
        return 5


Request = Read | Write


@dataclass(frozen=True, slots=True)
class ExceptionAnswer:
    """The device answered with a Modbus exception code."""

    function_code: int
    exception_code: int


def encode_request(request: Request) -> bytes:
    """Function code + data of a request."""
    pdu: ModbusPDU
    if isinstance(request, Read):
        pdu = _READ_CLASSES[request.table](address=request.address, count=request.count)
    elif request.table is Table.COIL:
        bits = [bool(v) for v in request.values]
        pdu = (
            WriteSingleCoilRequest(address=request.address, bits=bits)
            if len(bits) == 1
            else WriteMultipleCoilsRequest(address=request.address, bits=bits)
        )
    else:
        regs = list(request.values)
        pdu = (
            WriteSingleRegisterRequest(address=request.address, registers=regs)
            if len(regs) == 1
            else WriteMultipleRegistersRequest(address=request.address, registers=regs)
        )
    return bytes([pdu.function_code]) + pdu.encode()


def decode_response(request: Request, data: bytes) -> list[int] | ExceptionAnswer:
    """Values read (registers, or 0/1 per bit) or, for writes, ``[]``; or the exception."""
    if not data:
        raise ResponseError("empty response")
    if data[0] == request.function_code | 0x80 and len(data) >= 2:
        return ExceptionAnswer(request.function_code, data[1])
    if data[0] != request.function_code:
        raise ResponseError(
            f"response function {data[0]:#04x} does not answer request {request.function_code:#04x}"
        )
    try:
        pdu = _CLIENT_DECODER.decode(data)
    except (ModbusException, IndexError, ValueError) as exc:
        raise ResponseError(f"undecodable response: {exc}") from None
    if pdu is None or isinstance(pdu, ExceptionResponse):
        raise ResponseError("undecodable response")
    if isinstance(request, Write):
        return []
    if request.table.is_bits:
        bits = [int(b) for b in pdu.bits[: request.count]]
        if len(bits) != request.count:
            raise ResponseError(f"expected {request.count} bits, got {len(bits)}")
        return bits
    regs = list(pdu.registers)
    if len(regs) != request.count:
        raise ResponseError(f"expected {request.count} registers, got {len(regs)}")
    return regs


def response_frame_size(head: bytes) -> int | None:
    """Total RTU frame size of a response from its first bytes (unit id first), or None
    while not enough bytes have arrived to tell. Unknown function codes raise."""
    if len(head) < 2:
        return None
    if head[1] & 0x80:
        return 5
    cls = _CLIENT_DECODER.lookupPduClass(head)
    if cls is None:
        raise ResponseError(f"unknown function code {head[1]:#04x} in response")
    size = cls.calculateRtuFrameSize(head)
    # pymodbus says 998/999 for "not enough bytes yet"; no RTU frame is over 256 bytes
    return size if size and size <= 256 else None
