"""The SIO-1 firmware: one object that wires the board to the Modbus slave and the state
machine, and the main loop that runs it.

One pass of the loop (:meth:`Firmware.step`, at least every ``tick_ms``): answer the requests
that arrived on the data channel, debounce the inputs, run the state machine (watchdog,
feedback supervision), drive the relays, feed the hardware watchdog. A request is answered
after its effect is on the relays, so a read right after an HR 2 write sees the new outputs.
"""

import sio_identity
import sio_regs as R
from sio_crc import crc16
from sio_inputs import DEBOUNCE_MS, Debouncer
from sio_log import FaultLog
from sio_pdu import respond
from sio_rtu import RtuFramer, request_pdu, response_frame
from sio_state import Controller
from sio_ticks import ticks_diff
from version import VERSION

TICK_MS = 5
#: Hardware watchdog: a stalled loop resets the board (RP2040 allows at most 8388 ms).
WDT_TIMEOUT_MS = 1000
#: The unit id answered when the identity file is missing or bad (the board is then in FAULT).
DEFAULT_UNIT_ID = 1
IDENTITY_PATH = "identity.txt"
LOG_PATH = "fault.log"
#: Reads of the channel per pass; bounds the time one pass can take under a flood of bytes.
_MAX_READS = 8


def silence_ms(baudrate, tick_ms):
    """Silence that ends a frame of unknown length: t3.5 (Modbus serial line spec 2.5.1.1,
    11-bit characters, fixed 1.75 ms above 19200 baud) in whole ms, plus one loop tick because
    the loop sees bytes only when it reads them."""
    t35_us = 1750 if baudrate > 19200 else 38500000 // baudrate
    return (t35_us + 999) // 1000 + tick_ms


def self_test(board):
    """Boot self-test; the reason it failed, or "" when it passed."""
    if crc16(b"123456789") != 0x4B37:
        return "self-test: CRC-16 check value wrong"
    board.write_outputs(0)
    actual = board.read_outputs()
    if actual:
        return "self-test: relays read back 0x%02x with all off" % actual
    return ""


class Firmware:
    def __init__(
        self,
        board,
        unit_id,
        log=None,
        baudrate=115200,
        tick_ms=TICK_MS,
        debounce_ms=DEBOUNCE_MS,
        version=VERSION,
    ):
        self.board = board
        self.log = log
        self.tick_ms = tick_ms
        board.write_outputs(0)
        now = board.ticks_ms()
        self.ctl = Controller(now, unit_id, board.reset_cause(), self._entered)
        self.ctl.fw_version = version[0] << 8 | version[1]
        self.debounce = Debouncer(board.read_inputs(), now, debounce_ms)
        self.ctl.inputs = self.debounce.stable
        self.framer = RtuFramer(silence_ms(baudrate, tick_ms))
        self._rx = bytearray(64)
        self.note(
            "BOOT",
            "fw %d.%d unit %d reset cause %d" % (version[0], version[1], unit_id, self.ctl.reset_cause),
        )
        problem = self_test(board)
        if problem:
            self.ctl.fault(problem)
        self._drive()

    def run(self, should_stop=None):
        """The main loop, until ``should_stop()`` is true (on the board: forever)."""
        board = self.board
        board.wdt_start(WDT_TIMEOUT_MS)
        while should_stop is None or not should_stop():
            start = board.ticks_ms()
            self.step()
            left = self.tick_ms - ticks_diff(board.ticks_ms(), start)
            if left > 0:
                board.wait(left)

    def step(self):
        """One pass of the main loop."""
        board = self.board
        now = board.ticks_ms()
        self._serve(now)
        inputs = self.debounce.update(board.read_inputs(), now)
        self.ctl.tick(now, inputs, board.read_outputs())
        self._drive()
        board.wdt_feed()

    def request(self, pdu, now=None):
        """Answer one request PDU and put its effect on the relays; the response PDU."""
        if now is None:
            now = self.board.ticks_ms()
        response = respond(self.ctl, pdu, now)
        self._drive()
        return response

    def _serve(self, now):
        unit = self.ctl.unit_id
        for _ in range(_MAX_READS):
            n = self.board.recv_into(self._rx)
            self.framer.feed(self._rx, n, now)
            frame = self.framer.take(now)
            while frame is not None:
                pdu = request_pdu(self.framer, frame, unit)
                if pdu is not None:
                    self.board.send(response_frame(unit, self.request(pdu, now)))
                frame = self.framer.take(now)
            if not n:
                return

    def _drive(self):
        self.board.write_outputs(self.ctl.outputs())
        self.ctl.actual = self.board.read_outputs()

    def _entered(self, event, detail):
        """The state machine entered a state (FAILSAFE, FAULT): drive the relays to what it
        allows now, then log it. A flash write can take milliseconds and the relays must not
        wait for it."""
        self._drive()
        self.note(event, detail)

    def note(self, event, detail):
        """Append an event to the fault log (if the firmware has one)."""
        if self.log is not None:
            self.log.append(self.ctl.uptime_s, event, detail)


def boot(board, identity_path=IDENTITY_PATH, log_path=LOG_PATH, **options):
    """The firmware as it starts on a board: identity loaded (a missing or bad identity file
    fails the boot self-test, so the board answers on the default unit id in FAULT), fault
    log opened. ``options`` go to :class:`Firmware`."""
    identity = None
    problem = ""
    try:
        identity = sio_identity.load(identity_path)
    except OSError:
        problem = "identity: %s not found" % identity_path
    except ValueError as exc:
        problem = "identity: %s" % exc
    unit_id = identity.unit_id if identity is not None else DEFAULT_UNIT_ID
    firmware = Firmware(board, unit_id, FaultLog(log_path), **options)
    if problem:
        firmware.ctl.fault(problem)
    return firmware
