"""The Modbus check that the SIO-1 answers as itself after ``gateway flash`` reset it.

Over the board's data channel (not its REPL), read the registers that say what runs: the
register map version (the SIO-1 profile's identity), the firmware version and the state.
"""

from __future__ import annotations

import asyncio
import time

from gateway.bus.pdu import ExceptionAnswer, Read, decode_response
from gateway.bus.pdu import encode_request as encode
from gateway.bus.rtu import RtuTransport
from gateway.devices.profile import Table, load_profile
from gateway.errors import GatewayError, ResponseError, VerificationFailed

#: The SIO-1 data channel's line speed (firmware ``sio_app.Firmware``).
DATA_BAUDRATE = 115200


#: The input registers that say what runs on the board (SIO-1 profile), read in one request.
_CHECKED = ("map_version", "fw_version", "state")


def _checked_registers() -> tuple[Read, list[int]]:
    """One read covering the checked points, and each point's index in its answer."""
    points = load_profile("SIO-1").point_map
    addresses = [points[name].address or 0 for name in _CHECKED]
    start = min(addresses)
    return Read(Table.INPUT, start, max(addresses) - start + 1), [a - start for a in addresses]


async def verify_sio(port: str, unit_id: int, version: tuple[int, int], within: float) -> str:
    """Wait until the SIO-1 answers on its data port and check that it runs ``version`` in a
    healthy state: a one-line summary, or :class:`VerificationFailed`."""
    request, where = _checked_registers()
    deadline = time.monotonic() + within
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            async with RtuTransport("sio-verify", port, DATA_BAUDRATE) as bus:
                pdu = await bus.transact(unit_id, encode(request), 0.3)
            answer = decode_response(request, pdu)
        except (GatewayError, ResponseError) as exc:  # still booting, or the port is back soon
            last = str(exc)
            await asyncio.sleep(0.1)
            continue
        if isinstance(answer, ExceptionAnswer):
            raise VerificationFailed(
                f"verification failed: the SIO-1 (unit {unit_id}) on {port} answered "
                f"exception {answer.exception_code:02d} to reading its input registers"
            )
        values = [answer[i] for i in where]
        return _check_values(f"the SIO-1 (unit {unit_id}) on {port}", values, version)
    raise VerificationFailed(
        f"verification failed: no answer from the SIO-1 (unit {unit_id}) on {port} "
        f"within {within:g} s ({last})"
    )


def _check_values(where: str, values: list[int], version: tuple[int, int]) -> str:
    """map_version, fw_version and state as read: the summary, or what is wrong."""
    map_version, fw, state = values
    profile = load_profile("SIO-1")
    points, expected = profile.point_map, profile.identity["map_version"]
    state_name = (points["state"].enum or {}).get(state, str(state))
    if map_version != expected:
        raise VerificationFailed(
            f"verification failed: {where} answers map version {map_version:#06x}, "
            f"expected {expected:#06x}"
        )
    if fw != version[0] << 8 | version[1]:
        raise VerificationFailed(
            f"verification failed: {where} runs firmware {fw >> 8}.{fw & 0xFF}, "
            f"expected {version[0]}.{version[1]}"
        )
    if state_name == "FAULT":
        raise VerificationFailed(
            f"verification failed: {where} is in FAULT after booting (a bad identity file or "
            "a failed self-test; its fault.log says which)"
        )
    return f"{where} answers: map {map_version:#06x}, firmware {fw >> 8}.{fw & 0xFF}, {state_name}"
