"""Modbus PDUs of the SIO-1 slave: one request PDU in, one response PDU out.

Function codes: 01/02 (coils = actual relays, discrete inputs), 03/04 (holding, input
registers), 06/16 (holding writes). 05/15 (coil writes) and every other function are
answered with exception 01: outputs are set only through HR 2. Checks follow the Modbus
application protocol order: function (01), quantity and structure (03), address range (02),
then the value and state checks of the register itself (03/04). A multi-register write is
checked whole against the state before it, then applied in address order, so it either
lands completely or changes nothing.
"""

import sio_regs as R

_MAX_BITS = 2000
_MAX_READ_REGS = 125
_MAX_WRITE_REGS = 123


def exception(function, code):
    """The exception response PDU for ``function``."""
    return bytes(((function | 0x80) & 0xFF, code))


def respond(ctl, pdu, now):
    """The response PDU to request ``pdu`` (function code + data), for controller ``ctl``."""
    if not pdu:
        return exception(0, R.ILLEGAL_FUNCTION)
    fc = pdu[0]
    if fc == 1 or fc == 2:
        return _read_bits(ctl, pdu)
    if fc == 3 or fc == 4:
        return _read_registers(ctl, pdu, now)
    if fc == 6:
        return _write_single(ctl, pdu, now)
    if fc == 16:
        return _write_multiple(ctl, pdu, now)
    return exception(fc, R.ILLEGAL_FUNCTION)


def _u16(pdu, at):
    return pdu[at] << 8 | pdu[at + 1]


def _read_bits(ctl, pdu):
    fc = pdu[0]
    if len(pdu) != 5:
        return exception(fc, R.ILLEGAL_VALUE)
    addr = _u16(pdu, 1)
    count = _u16(pdu, 3)
    if count < 1 or count > _MAX_BITS:
        return exception(fc, R.ILLEGAL_VALUE)
    size = R.N_COILS if fc == 1 else R.N_DISCRETE
    if addr + count > size:
        return exception(fc, R.ILLEGAL_ADDRESS)
    bits = (R.coils(ctl) if fc == 1 else R.discrete_inputs(ctl)) >> addr
    bits &= (1 << count) - 1
    nbytes = (count + 7) // 8
    out = bytearray(2 + nbytes)
    out[0] = fc
    out[1] = nbytes
    for i in range(nbytes):
        out[2 + i] = (bits >> (8 * i)) & 0xFF
    return bytes(out)


def _read_registers(ctl, pdu, now):
    fc = pdu[0]
    if len(pdu) != 5:
        return exception(fc, R.ILLEGAL_VALUE)
    addr = _u16(pdu, 1)
    count = _u16(pdu, 3)
    if count < 1 or count > _MAX_READ_REGS:
        return exception(fc, R.ILLEGAL_VALUE)
    if addr + count > (R.N_HOLDING if fc == 3 else R.N_INPUT):
        return exception(fc, R.ILLEGAL_ADDRESS)
    out = bytearray(2 + 2 * count)
    out[0] = fc
    out[1] = 2 * count
    for i in range(count):
        if fc == 3:
            value = R.holding_register(ctl, addr + i)
        else:
            value = R.input_register(ctl, addr + i, now)
        out[2 + 2 * i] = value >> 8
        out[3 + 2 * i] = value & 0xFF
    return bytes(out)


def _write_single(ctl, pdu, now):
    if len(pdu) != 5:
        return exception(6, R.ILLEGAL_VALUE)
    addr = _u16(pdu, 1)
    if addr >= R.N_HOLDING:
        return exception(6, R.ILLEGAL_ADDRESS)
    code = ctl.write_register(addr, _u16(pdu, 3), now)
    if code:
        return exception(6, code)
    return bytes(pdu)  # the echo of the request


def _write_multiple(ctl, pdu, now):
    if len(pdu) < 6:
        return exception(16, R.ILLEGAL_VALUE)
    addr = _u16(pdu, 1)
    count = _u16(pdu, 3)
    if count < 1 or count > _MAX_WRITE_REGS or pdu[5] != 2 * count or len(pdu) != 6 + 2 * count:
        return exception(16, R.ILLEGAL_VALUE)
    if addr + count > R.N_HOLDING:
        return exception(16, R.ILLEGAL_ADDRESS)
    for i in range(count):
        code = ctl.check_write(addr + i, _u16(pdu, 6 + 2 * i))
        if code:
            return exception(16, code)
    for i in range(count):
        ctl.write(addr + i, _u16(pdu, 6 + 2 * i), now)
    return bytes(pdu[:5])
