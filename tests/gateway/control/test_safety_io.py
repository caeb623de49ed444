"""The gateway's side of the SIO-1 claim protocol, as gateway/control/safety_io.py implements
it: read back before the first write, claim before the outputs, hold while claimed, claim
again when the board drops out, and alarm on what a person must look at."""

from __future__ import annotations

import asyncio

from gateway.control.actuator import Actuator
from gateway.control.alarms import AlarmLog, Severity
from gateway.control.engine import InterlockEngine
from gateway.control.loop import ControlConfig, Supervisor
from gateway.control.safety_io import CLAIM_VALUE, MISMATCH_GRACE_S, SafetyIo, Step
from gateway.control.watchdogs import WatchdogKeeper
from gateway.devices.codec import Value
from gateway.errors import BusTimeout
from gateway.image import ProcessImage, Quality
from tests.gateway import virtual_time

BOOT_SAFE, CLAIMED, FAILSAFE = 0, 1, 2
NORMAL = 0b0011  # feeder enabled, PV keep-alive on; recall and sounder off
FIRE = {  # what the fire interlock demands of the relays
    "charger_feeder_enable": 0,
    "pv_rsd_keepalive": 0,
    "elv_fire_recall_req": 1,
    "alarm_sounder": 1,
}


class Board:
    """The SIO-1 as the gateway sees it: its points in the process image."""

    def __init__(self, timeout_ms: int | None = None) -> None:
        self.now = 10.0
        self.image = ProcessImage(lambda: self.now)
        self.actuator = Actuator(self.image)
        self.alarms = AlarmLog()
        self.sio = SafetyIo("sio", self.actuator, self.image, self.alarms, timeout_ms)

    def reads(self, **points: int) -> None:
        """A poll of the board: what it reports now, read a moment after the last tick."""
        self.now += 0.001
        for name, value in points.items():
            self.image.update("sio", name, value)

    def read_back(
        self, state: int = BOOT_SAFE, outputs: int = 0, map_version: int = 0x0100
    ) -> None:
        self.reads(
            map_version=map_version,
            state=state,
            input_bitmap=0b11,
            output_bitmap=outputs,
            failsafe_trips=0,
        )

    def tick(self, dt: float = 0.05) -> list[Step]:
        self.now += dt
        return self.sio.tick(self.now)

    def claimed(self) -> None:
        """Claim, and let the next poll read the board in CLAIMED with the outputs sent."""
        self.read_back()
        steps = self.tick()
        assert [s.point for s in steps][-2:] == ["claim", "requested_outputs"]
        self.reads(state=CLAIMED, output_bitmap=int(steps[-1].value or 0))

    def demand(self, outputs: dict[str, int]) -> None:
        for point, value in outputs.items():
            self.actuator.demand("fire-alarm", "sio", point, value, 1, limit=False)

    def withdraw(self, outputs: dict[str, int]) -> None:
        for point in outputs:
            self.actuator.withdraw("fire-alarm", "sio", point)

    def alarm(self, what: str) -> str | None:
        event = self.alarms.active.get(f"sio:sio/{what}")
        if event is None:
            return None
        assert event.severity is Severity.MAJOR
        return event.message


def test_nothing_is_written_before_the_board_has_been_read_back() -> None:
    board = Board()
    assert board.tick() == []
    board.reads(map_version=0x0100, state=BOOT_SAFE, input_bitmap=0b11)
    assert board.tick() == [], "claimed without knowing the actual outputs"
    board.reads(output_bitmap=0)
    board.image.mark("sio", "state", Quality.STALE)
    assert board.tick() == [], "claimed on a stale state"
    board.reads(state=BOOT_SAFE)
    assert board.tick() != []


def test_a_board_with_another_register_map_is_never_claimed_and_raises_an_alarm() -> None:
    board = Board()
    board.read_back(map_version=0x0200)
    assert board.tick() == []
    assert board.tick() == []
    message = board.alarm("map")
    assert message is not None
    assert "512" in message
    assert "0x0100" in message


def test_the_claim_goes_first_then_the_outputs_wanted_now() -> None:
    board = Board()
    board.read_back(state=BOOT_SAFE)
    assert board.tick() == [Step("claim", CLAIM_VALUE), Step("requested_outputs", NORMAL)]
    assert board.sio.claims == 1


def test_a_watchdog_timeout_set_by_the_site_is_written_before_the_claim() -> None:
    board = Board(timeout_ms=1500)
    board.read_back()
    assert board.tick() == [
        Step("watchdog_timeout", 1500),
        Step("claim", CLAIM_VALUE),
        Step("requested_outputs", NORMAL),
    ]


def test_outputs_at_the_claim_are_those_demanded_at_that_moment() -> None:
    board = Board()
    board.demand(FIRE)
    board.read_back()
    assert board.tick()[-1] == Step("requested_outputs", 0b1100)


def test_while_the_claim_holds_only_a_change_of_the_wanted_outputs_is_written() -> None:
    board = Board()
    board.claimed()
    assert [board.tick() for _ in range(20)] == [[]] * 20, "the claim was not held"
    board.demand(FIRE)
    assert board.tick() == [Step("requested_outputs", 0b1100)]
    board.reads(output_bitmap=0b1100)
    assert board.tick() == []
    board.withdraw(FIRE)
    assert board.tick() == [Step("requested_outputs", NORMAL)], "not released to normal"
    assert board.sio.claims == 1


def test_a_board_that_leaves_claimed_raises_an_alarm_and_is_claimed_again() -> None:
    board = Board()
    board.claimed()
    board.demand(FIRE)
    board.reads(state=FAILSAFE, output_bitmap=0)  # heartbeats were missed: all relays off
    steps = board.tick()
    assert steps == [Step("claim", CLAIM_VALUE), Step("requested_outputs", 0b1100)]
    assert board.sio.claims == 2
    message = board.alarm("claim")
    assert message is not None
    assert "left CLAIMED" in message
    board.reads(state=CLAIMED, output_bitmap=0b1100)
    assert board.tick() == []
    assert board.alarm("claim") is None, "the alarm outlived the new claim"


def test_a_failed_claim_sequence_starts_again_from_the_claim() -> None:
    board = Board()
    board.read_back()
    board.tick()
    board.sio.lost()
    assert board.tick() == [Step("claim", CLAIM_VALUE), Step("requested_outputs", NORMAL)]


def test_a_rising_failsafe_trip_count_raises_an_alarm() -> None:
    board = Board()
    board.claimed()
    board.tick()
    assert board.alarm("trips") is None
    board.reads(failsafe_trips=1)
    board.tick()
    message = board.alarm("trips")
    assert message is not None
    assert "1" in message


def test_outputs_that_do_not_follow_the_request_raise_an_alarm_after_the_grace_time() -> None:
    board = Board()
    board.claimed()
    board.reads(output_bitmap=0b0001)  # the PV keep-alive relay dropped out
    board.tick()
    board.tick(MISMATCH_GRACE_S / 2)
    assert board.alarm("outputs") is None, "alarmed inside the grace time"
    board.tick(MISMATCH_GRACE_S / 2 + 0.05)
    assert board.alarm("outputs") is not None
    board.reads(output_bitmap=NORMAL)
    board.tick()
    assert board.alarm("outputs") is None


def test_a_fresh_claim_is_not_doubted_before_the_board_has_been_read_again() -> None:
    board = Board()
    board.read_back(state=BOOT_SAFE)
    board.tick()  # claim sent; the image still holds the state read before it
    assert board.tick() == []
    assert board.alarm("claim") is None
    assert board.sio.claims == 1


# -- through the supervisor -----------------------------------------------------------------


async def _claim_writes(fail_on: int | None) -> list[tuple[str, Value]]:
    """The SIO-1 writes a supervisor makes in its first half second; write number ``fail_on``
    (counting from 0) times out."""
    clock = asyncio.get_running_loop().time
    image = ProcessImage(clock)
    actuator, alarms = Actuator(image), AlarmLog()
    sio = SafetyIo("sio", actuator, image, alarms)
    for name, value in {
        "map_version": 0x0100,
        "state": BOOT_SAFE,
        "input_bitmap": 0b11,
        "output_bitmap": 0,
    }.items():
        image.update("sio", name, value)
    writes: list[tuple[str, Value]] = []

    async def writer(device: str, point: str, value: Value) -> None:
        writes.append((point, value))
        await asyncio.sleep(0.01)  # a transaction on the bus
        if len(writes) - 1 == fail_on:
            raise BusTimeout("sio", 1, "no response")
        if point == "requested_outputs":
            image.update("sio", "state", CLAIMED)  # the next poll reads it claimed

    engine = InterlockEngine([], {}, image, actuator, alarms)
    keeper = WatchdogKeeper(image, clock=clock)
    config = ControlConfig(period_ms=50)
    async with Supervisor(config, engine, actuator, keeper, writer, [sio], clock=clock):
        await asyncio.sleep(0.5)
    return writes


def test_the_supervisor_sends_the_claim_sequence_in_order_once() -> None:
    writes = virtual_time.run(_claim_writes(fail_on=None))
    assert writes == [("claim", CLAIM_VALUE), ("requested_outputs", NORMAL)]


def test_a_claim_write_that_fails_makes_the_supervisor_claim_again_from_the_start() -> None:
    writes = virtual_time.run(_claim_writes(fail_on=0))
    assert writes == [
        ("claim", CLAIM_VALUE),  # timed out: the outputs are not sent after it
        ("claim", CLAIM_VALUE),
        ("requested_outputs", NORMAL),
    ]
