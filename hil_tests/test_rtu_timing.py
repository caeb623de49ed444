"""t3.5 is kept after every fault: the RTU transport against the rig's strict line model.

For each fault of one unit — dead, a corrupt CRC, exception 02, a response split into chunks
with silences, a slow answer (think time), a request cancelled while its answer is on its way
— at 9600, 19200 and 115200 baud, the transport alternates a request to the faulty unit with
one to a healthy unit on the same line, as fast as it is allowed to. The line drops any
request that starts less than t3.5 after the last byte on the wire (in either direction) and
counts it: a violation shows as that count and as the healthy unit's answer missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from bench.uplink_e2e import PROFILE
from gateway.bus.rtu import RtuTransport
from gateway.devices.profile import Range, Table
from gateway.errors import BusTimeout, FrameError
from hil_tests.rig.fault_injection import UnitFaults
from hil_tests.rig.registers import RegisterMap, SimulatedUnit
from hil_tests.rig.rtu_line import RtuLineServer

pytestmark = pytest.mark.hil

HEALTHY, FAULTY = 1, 2
ROUNDS = 6
READ = bytes([3, 0, 0, 0, 10])  # read 10 holding registers from 0
#: Generous: on a loaded machine the line model's own thread may be late, and a gateway that
#: gave up on an answer the model still sends would collide with it (the model's fault).
TIMEOUT_S = 0.3


def dead(f: UnitFaults, unit: SimulatedUnit) -> None:
    f.dead = True


def crc(f: UnitFaults, unit: SimulatedUnit) -> None:
    f.corrupt_always = True


def exception_02(f: UnitFaults, unit: SimulatedUnit) -> None:
    unit.regs.unreadable.append(Range(table=Table.HOLDING, start=0, end=9))


def split(f: UnitFaults, unit: SimulatedUnit) -> None:
    f.chunk_size, f.chunk_gap_s = 4, 0.012


def think(f: UnitFaults, unit: SimulatedUnit) -> None:
    f.think_time_s = 0.03


FAULTS: dict[str, Callable[[UnitFaults, SimulatedUnit], None]] = {
    "dead unit": dead,
    "crc corruption": crc,
    "exception 02": exception_02,
    "split response": split,
    "think time": think,
    "cancelled request": think,  # cancelled while the slow answer is on its way
}


def units() -> dict[int, SimulatedUnit]:
    from gateway.devices import profile

    bench = profile.parse_profile(PROFILE, "bench/BENCH-50")
    return {u: SimulatedUnit(bench, RegisterMap.from_points(bench.points), u) for u in (1, 2)}


@pytest.mark.parametrize("baudrate", [9600, 19200, 115200])
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_no_request_starts_within_t35_of_the_last_byte_after_a_fault(
    fault: str, baudrate: int
) -> None:
    site = units()
    async with RtuLineServer(site, baudrate, name=fault) as line:
        FAULTS[fault](line.faults.of(FAULTY), site[FAULTY])
        async with RtuTransport("line", line.client_path, baudrate) as transport:
            healthy = []
            outcomes: list[str] = []  # what the faulty unit's requests came to
            for _ in range(ROUNDS):
                if fault == "cancelled request":
                    ask = asyncio.ensure_future(transport.transact(FAULTY, READ, TIMEOUT_S))
                    # the request is out and the answer not yet: the unit thinks for 30 ms
                    await asyncio.sleep(transport.wire_time(len(READ), 0) + 0.01)
                    ask.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ask
                else:
                    try:
                        await transport.transact(FAULTY, READ, TIMEOUT_S)
                        outcomes.append("answer")
                    except (BusTimeout, FrameError) as exc:
                        outcomes.append(str(exc))
                healthy.append(await transport.transact(HEALTHY, READ, TIMEOUT_S))
    seen = (line.stats, outcomes)
    assert line.stats.t35_violations == 0, seen
    assert line.stats.noise_bytes == 0, seen
    assert len(healthy) == ROUNDS
    assert all(pdu[:2] == b"\x03\x14" for pdu in healthy)
    if fault == "cancelled request":  # the answers came, after the transport stopped waiting
        assert line.stats.responses_sent == 2 * ROUNDS
