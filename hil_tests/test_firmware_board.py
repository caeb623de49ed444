"""The SIO-1 firmware's main loop on the host board layer, on a real pseudo-terminal, talked
to with real Modbus RTU frames by the gateway's own transport: the claim protocol, the
outputs, the watchdog and the refusals of docs/devices.md#sio-1.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import select
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.bus.pdu import ExceptionAnswer, Read, Write, decode_response, encode_request
from gateway.bus.rtu import RtuTransport, rtu_frame
from gateway.devices.profile import Table
from hil_tests.rig import firmware_host
from hil_tests.rig.nullmodem import NullModem

pytestmark = pytest.mark.hil

# firmware/'s flat modules, on sys.path since firmware_host was imported
R = importlib.import_module("sio_regs")
sio_app = importlib.import_module("sio_app")

UNIT = 5
RESPONSE_TIMEOUT_S = 0.5
#: twice the firmware's 5 ms main-loop pass (docs/safety.md#sio-1-states); the thread may be
#: scheduled late.
TICK_S = 0.010
SCHEDULING_SLACK_S = 0.015


@pytest.fixture
def line() -> Iterator[NullModem]:
    with NullModem() as modem:
        yield modem


@pytest.fixture
def sio(line: NullModem) -> Iterator[object]:
    with firmware_host.start(line.master, unit_id=UNIT) as handle:
        yield handle


@pytest.fixture
async def bus(sio: object, line: NullModem) -> AsyncIterator[RtuTransport]:
    async with RtuTransport("sio", line.path, 115200) as transport:
        yield transport


async def ask(bus: RtuTransport, request: Read | Write) -> list[int] | ExceptionAnswer:
    response = await bus.transact(UNIT, encode_request(request), RESPONSE_TIMEOUT_S)
    return decode_response(request, response)


async def ir(bus: RtuTransport, address: int) -> int:
    [value] = await ask(bus, Read(Table.INPUT, address, 1))
    return value


async def write(bus: RtuTransport, address: int, *values: int) -> list[int] | ExceptionAnswer:
    return await ask(bus, Write(Table.HOLDING, address, values))


async def claim(bus: RtuTransport, timeout_ms: int) -> None:
    assert await write(bus, R.HR_WATCHDOG_TIMEOUT, timeout_ms) == []
    assert await write(bus, R.HR_CLAIM, R.CLAIM_VALUE) == []
    assert await ir(bus, R.IR_STATE) == R.CLAIMED


async def until(condition: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.001)


async def test_claim_sequence_of_devices_md(sio: object, bus: RtuTransport) -> None:
    # 1. Before the first write: map version, state, inputs, actual outputs.
    assert await ir(bus, R.IR_MAP_VERSION) == 0x0100
    assert await ir(bus, R.IR_STATE) == R.BOOT_SAFE
    assert await ir(bus, R.IR_INPUTS) == 0b11  # fire loop healthy, e-stop released
    assert await ir(bus, R.IR_OUTPUTS) == 0
    # 2. A non-default timeout, the outputs wanted now, the claim. The board refuses
    # HR 2 outside CLAIMED (exception 04, no change), so the bitmap written
    # before the claim does not land; the claim starts with every output off, and the
    # outputs wanted now go in right after it.
    assert await write(bus, R.HR_WATCHDOG_TIMEOUT, 300) == []
    refused = await write(bus, R.HR_REQUESTED_OUTPUTS, 0b0011)
    assert refused == ExceptionAnswer(6, R.DEVICE_FAILURE)
    assert await write(bus, R.HR_CLAIM, R.CLAIM_VALUE) == []
    assert await ir(bus, R.IR_STATE) == R.CLAIMED
    assert sio.outputs == 0
    assert await write(bus, R.HR_REQUESTED_OUTPUTS, 0b0011) == []
    assert sio.outputs == 0b0011
    assert await ir(bus, R.IR_OUTPUTS) == 0b0011
    # 3. Heartbeats at timeout/3 hold the claim for many timeouts.
    for n in range(15):
        assert await write(bus, R.HR_HEARTBEAT, n) == []
        await asyncio.sleep(0.1)
    assert await ir(bus, R.IR_STATE) == R.CLAIMED
    assert await ir(bus, R.IR_FAILSAFE_TRIPS) == 0
    assert await ask(bus, Read(Table.COIL, 0, 8)) == [1, 1, 0, 0, 0, 0, 0, 0]


async def test_outputs_follow_hr2_only_while_claimed(sio: object, bus: RtuTransport) -> None:
    await claim(bus, 100)
    for bitmap in (0b0001, 0b1110, 0b1111, 0):
        assert await write(bus, R.HR_HEARTBEAT, 1, 100, bitmap) == []
        assert sio.outputs == bitmap
    assert await write(bus, R.HR_REQUESTED_OUTPUTS, 0b0101) == []
    # The state changes first and the relays follow in the same pass of the main loop: wait
    # for both rather than read the relays in between.
    await until(lambda: sio.state == R.FAILSAFE and sio.outputs == 0, 1.0, "FAILSAFE, relays off")
    assert await write(bus, R.HR_REQUESTED_OUTPUTS, 0b0101) == ExceptionAnswer(6, 4)
    assert await ask(bus, Read(Table.HOLDING, R.HR_REQUESTED_OUTPUTS, 1)) == [0]
    assert await write(bus, R.HR_CLAIM, R.CLAIM_VALUE) == []
    assert sio.outputs == 0, "a new claim re-applied an old bitmap"
    assert await write(bus, R.HR_REQUESTED_OUTPUTS, 0b0110) == []
    assert sio.outputs == 0b0110


async def test_stopped_heartbeats_drop_every_output_within_the_timeout(
    sio: object, bus: RtuTransport
) -> None:
    timeout_s = 0.2
    await claim(bus, int(timeout_s * 1000))
    assert await write(bus, R.HR_REQUESTED_OUTPUTS, 0b1111) == []
    sent = time.monotonic()
    assert await write(bus, R.HR_HEARTBEAT, 7) == []  # the last heartbeat
    answered = time.monotonic()
    await until(lambda: sio.outputs == 0, 2.0, "outputs off")
    off = sio.board.relays_changed_at
    # The heartbeat landed between `sent` and `answered`; ticks are whole ms.
    assert off - sent >= timeout_s - 0.002, f"off {off - sent:.4f} s after the heartbeat"
    limit = timeout_s + TICK_S + SCHEDULING_SLACK_S
    assert off - answered <= limit, f"off {off - answered:.4f} s after the heartbeat"
    assert await ir(bus, R.IR_STATE) == R.FAILSAFE
    assert await ir(bus, R.IR_FAILSAFE_TRIPS) == 1
    assert await ir(bus, R.IR_WATCHDOG_REMAINING) == 0


async def test_coil_writes_are_illegal_function(sio: object, bus: RtuTransport) -> None:
    await claim(bus, 1000)
    assert await write(bus, R.HR_REQUESTED_OUTPUTS, 0b0010) == []
    assert await ask(bus, Write(Table.COIL, 0, (1,))) == ExceptionAnswer(5, 1)
    assert await ask(bus, Write(Table.COIL, 0, (1, 0, 1, 1))) == ExceptionAnswer(15, 1)
    assert sio.outputs == 0b0010


async def test_hr2_write_in_boot_safe_is_device_failure(sio: object, bus: RtuTransport) -> None:
    assert await write(bus, R.HR_REQUESTED_OUTPUTS, 0b0001) == ExceptionAnswer(6, 4)
    # Inside a multi-register write too, and then nothing of it lands.
    assert await write(bus, R.HR_WATCHDOG_TIMEOUT, 900, 0b0001) == ExceptionAnswer(16, 4)
    assert await ask(bus, Read(Table.HOLDING, 0, 5)) == [0, 500, 0, 0, UNIT]
    assert sio.outputs == 0
    assert await ir(bus, R.IR_STATE) == R.BOOT_SAFE


async def test_an_open_fire_loop_reaches_the_gateway_debounced(
    sio: object, bus: RtuTransport
) -> None:
    sio.set_input("fire_alarm_loop", False)
    await until(lambda: sio.inputs & 1 == 0, 1.0, "debounced fire alarm")
    assert await ask(bus, Read(Table.DISCRETE, 0, 2)) == [0, 1]
    sio.set_input("estop", False)
    await until(lambda: sio.inputs == 0, 1.0, "debounced e-stop")
    assert await ir(bus, R.IR_INPUTS) == 0


async def test_a_welded_contactor_faults_until_a_reset(sio: object, bus: RtuTransport) -> None:
    sio.force_feedback("charger_feeder_enable", 1)  # relay off, contact closed
    await until(lambda: sio.state == R.FAULT, 2.0, "FAULT")
    assert await ir(bus, R.IR_STATE) == R.FAULT
    assert await write(bus, R.HR_CLAIM, R.CLAIM_VALUE) == ExceptionAnswer(6, 4)
    assert any(" FAULT DI 2 (charger_feeder_fb)" in line for line in sio.fault_log())
    sio.force_feedback("charger_feeder_enable", None)
    sio.reset(R.RESET_HARD)
    assert await ir(bus, R.IR_STATE) == R.BOOT_SAFE
    assert await ir(bus, R.IR_RESET_CAUSE) == R.RESET_HARD
    await claim(bus, 500)


def test_start_on_a_tty_path_and_a_missing_identity_boots_into_fault(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        with firmware_host.start(path, identity=str(tmp_path / "absent.txt")) as handle:
            assert handle.state == R.FAULT
            assert handle.unit_id == sio_app.DEFAULT_UNIT_ID
            request = encode_request(Read(Table.INPUT, R.IR_STATE, 1))
            os.write(master, rtu_frame(sio_app.DEFAULT_UNIT_ID, request))
            response = b""
            deadline = time.monotonic() + 2
            while len(response) < 7 and time.monotonic() < deadline:
                if select.select([master], [], [], 0.1)[0]:
                    response += os.read(master, 64)
            assert response == rtu_frame(sio_app.DEFAULT_UNIT_ID, bytes([4, 2, 0, R.FAULT]))
    finally:
        os.close(master)
        os.close(slave)
