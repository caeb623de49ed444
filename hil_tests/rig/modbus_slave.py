"""The slave side of Modbus: a request PDU in, the response PDU of a simulated unit out.

pymodbus decodes the requests and encodes the responses; the rig's own units
(:class:`~hil_tests.rig.registers.SimulatedUnit`) answer them, and their exceptions become
exception responses. Shared by the RTU line server and the TCP server.
"""

from __future__ import annotations

from pymodbus.exceptions import ModbusException
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
    WriteMultipleCoilsRequest,
    WriteMultipleCoilsResponse,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.mei_message import ReadDeviceInformationRequest, ReadDeviceInformationResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from gateway.devices.profile import Table
from hil_tests.rig.registers import ExceptionCode, SimModbusError, SimulatedUnit

_SERVER_DECODER = DecodePDU(is_server=True)
_READS: dict[int, tuple[Table, type[ModbusPDU]]] = {
    1: (Table.COIL, ReadCoilsResponse),
    2: (Table.DISCRETE, ReadDiscreteInputsResponse),
    3: (Table.HOLDING, ReadHoldingRegistersResponse),
    4: (Table.INPUT, ReadInputRegistersResponse),
}
_READ_REQUESTS = (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
)
_MAX_COUNT = {Table.COIL: 2000, Table.DISCRETE: 2000, Table.HOLDING: 125, Table.INPUT: 125}


def decode_request(pdu: bytes) -> ModbusPDU | None:
    """The request, or None when the function code is unknown or the PDU is malformed."""
    try:
        return _SERVER_DECODER.decode(pdu)
    except (ModbusException, IndexError, ValueError, KeyError):
        return None


def respond(unit: SimulatedUnit, pdu: bytes) -> bytes:
    """The response PDU (function code + data) of ``unit`` to the request ``pdu``."""
    function = pdu[0] if pdu else 0
    request = decode_request(pdu)
    if request is None:
        return exception_pdu(function, ExceptionCode.ILLEGAL_FUNCTION)
    try:
        response = _answer(unit, request)
    except SimModbusError as exc:
        return exception_pdu(function, exc.code)
    return bytes([response.function_code]) + response.encode()


def exception_pdu(function: int, code: int) -> bytes:
    return bytes([(function | 0x80) & 0xFF, int(code)])


def _answer(unit: SimulatedUnit, req: ModbusPDU) -> ModbusPDU:
    fc = req.function_code
    if isinstance(req, _READ_REQUESTS):
        table, response_class = _READS[fc]
        if not 1 <= req.count <= _MAX_COUNT[table]:
            raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, f"count {req.count}")
        values = unit.read(table, req.address, req.count)
        if table.is_bits:
            return response_class(bits=[bool(v) for v in values])
        return response_class(registers=values)
    if isinstance(req, WriteSingleRegisterRequest):
        unit.write(Table.HOLDING, req.address, list(req.registers))
        return WriteSingleRegisterResponse(address=req.address, registers=list(req.registers))
    if isinstance(req, WriteMultipleRegistersRequest):
        if not 1 <= len(req.registers) <= 123:
            raise SimModbusError(ExceptionCode.ILLEGAL_DATA_VALUE, "register count")
        unit.write(Table.HOLDING, req.address, list(req.registers))
        return WriteMultipleRegistersResponse(address=req.address, count=len(req.registers))
    if isinstance(req, WriteSingleCoilRequest):
        unit.write(Table.COIL, req.address, [int(req.bits[0])])
        return WriteSingleCoilResponse(address=req.address, bits=list(req.bits[:1]))
    if isinstance(req, WriteMultipleCoilsRequest):
        bits = [int(b) for b in req.bits[: req.count or len(req.bits)]]
        unit.write(Table.COIL, req.address, bits)
        return WriteMultipleCoilsResponse(address=req.address, count=len(bits))
    if isinstance(req, ReadDeviceInformationRequest) and unit.device_identification:
        return ReadDeviceInformationResponse(read_code=1, information=unit.device_identification)
    raise SimModbusError(ExceptionCode.ILLEGAL_FUNCTION, f"function {fc}")
