"""The SIO-1 board layer on CPython: the firmware running on a PC for tests and the HIL rig.

* Modbus channel: a file descriptor, normally the master side of a pty whose slave path the
  gateway opens like a USB serial port; without one, an in-memory channel (``inbox`` /
  ``outbox``) for unit tests.
* Inputs: contact bitmap set by the test (``set_input``), healthy by default (fire loop
  closed, e-stop released).
* Relays with feedback contacts: DI 2-4 follow coils 0-2 after ``feedback_delay_ms`` (a
  contactor pulling in), or are forced to a value (``force_feedback``) to simulate a welded
  or dead contactor.
* A fake hardware watchdog that records its feeds, and a clock: real (``RealClock``) or
  moved by the test (``ManualClock``), both wrapping like MicroPython's ``ticks_ms``.

Imports the firmware's modules by bare name, as they import each other: on CPython import it
after ``firmware/`` is on ``sys.path`` (:mod:`hil_tests.rig.firmware_host` puts it there).
Written in the firmware's MicroPython dialect (no annotations, no f-strings, ``%``
formatting), because tests/firmware also runs the firmware's main loop on this board under a
real MicroPython.
"""

# ruff: noqa: UP031  (MicroPython dialect, see above)

import os
import select
import time

import sio_regs as R
from sio_board import Board
from sio_ticks import TICKS_MAX, ticks_add, ticks_diff

HEALTHY_INPUTS = 0b11  # fire-alarm loop closed, e-stop released
_FEEDBACK_INPUTS = 0
for _di, _coil in R.FEEDBACK:
    _FEEDBACK_INPUTS |= 1 << _di
_SEND_TIMEOUT_S = 0.05
# Wall-clock seconds for timing checks; MicroPython (unit runs of this file) has no monotonic.
_monotonic = getattr(time, "monotonic", None) or (lambda: time.ticks_ms() / 1000)


class RealClock:
    """Milliseconds of ``time.monotonic()``, wrapped at 2**30 like MicroPython's ticks."""

    def ticks_ms(self):
        return int(_monotonic() * 1000) & TICKS_MAX

    def sleep_ms(self, ms):
        time.sleep(ms / 1000)


class ManualClock:
    """A clock that moves only when the test says so (``advance``) or the firmware waits."""

    def __init__(self, start=0):
        self.now = start & TICKS_MAX

    def ticks_ms(self):
        return self.now

    def advance(self, ms):
        self.now = ticks_add(self.now, ms)

    def sleep_ms(self, ms):
        self.advance(ms)


def input_index(name_or_index):
    """DI number of an input given by name (``"fire_alarm_loop"``) or number."""
    if isinstance(name_or_index, int):
        index = name_or_index
    elif name_or_index in R.INPUT_NAMES:
        index = R.INPUT_NAMES.index(name_or_index)
    else:
        raise ValueError("unknown input %r, expected one of %s" % (name_or_index, R.INPUT_NAMES))
    if not 0 <= index < R.N_DISCRETE:
        raise ValueError("input %d is outside 0..%d" % (index, R.N_DISCRETE - 1))
    return index


def coil_index(name_or_index):
    """Coil number of a relay with a feedback contact, by name or number."""
    index = name_or_index
    if not isinstance(index, int):
        if name_or_index not in R.OUTPUT_NAMES:
            raise ValueError("unknown output %r" % (name_or_index,))
        index = R.OUTPUT_NAMES.index(name_or_index)
    for _di, coil in R.FEEDBACK:
        if coil == index:
            return index
    raise ValueError("coil %r has no feedback contact (only coils 0-2 do)" % (name_or_index,))


class HostBoard(Board):
    def __init__(
        self,
        channel_fd=None,
        clock=None,
        inputs=HEALTHY_INPUTS,
        feedback_delay_ms=20,
        reset_cause=R.RESET_POWER_ON,
    ):
        self.clock = clock if clock is not None else RealClock()
        self.fd = channel_fd
        self.inbox = bytearray()  # the in-memory channel, when there is no fd
        self.outbox = bytearray()
        self.contacts = inputs & ~_FEEDBACK_INPUTS
        self.feedback_delay_ms = feedback_delay_ms
        self.cause = reset_cause
        self.relays = 0
        self.relays_changed_at = _monotonic()  # for timing checks in HIL tests
        self.wdt_timeout_ms = None
        self.wdt_feeds = 0
        self.wdt_last_feed = None
        now = self.clock.ticks_ms()
        self._forced = {}  # coil -> forced feedback value
        self._moved_at = {coil: now for _di, coil in R.FEEDBACK}
        self._before = {coil: 0 for _di, coil in R.FEEDBACK}  # feedback when the relay moved
        self._read_failed = False

    # -- test controls ------------------------------------------------------------------------

    def set_input(self, name_or_index, closed):
        """Close (True) or open (False) a hard-wired contact, e.g. ``("fire_alarm_loop", False)``
        opens the fire loop = fire alarm. Feedback inputs follow their relays: see
        :meth:`force_feedback`."""
        index = input_index(name_or_index)
        if _FEEDBACK_INPUTS >> index & 1:
            raise ValueError("DI %d is a feedback input: use force_feedback" % index)
        if closed:
            self.contacts |= 1 << index
        else:
            self.contacts &= ~(1 << index)

    def force_feedback(self, coil, value):
        """Force the feedback contact of ``coil`` (0-2 or its name) to ``value`` (0/1), or let it
        follow its relay again (``None``)."""
        coil = coil_index(coil)
        if value is None:
            self._forced.pop(coil, None)
        else:
            self._forced[coil] = 1 if value else 0

    def wdt_overdue(self):
        """True when the fake watchdog is armed and was not fed within its timeout."""
        if self.wdt_timeout_ms is None or self.wdt_last_feed is None:
            return False
        return ticks_diff(self.clock.ticks_ms(), self.wdt_last_feed) > self.wdt_timeout_ms

    # -- Board --------------------------------------------------------------------------------

    def ticks_ms(self):
        return self.clock.ticks_ms()

    def wait(self, ms):
        if self.fd is None or self._read_failed:
            # No fd, or a pty whose other side is closed (select would return at once).
            self._read_failed = False
            if not self.inbox:
                self.clock.sleep_ms(ms)
            return
        select.select([self.fd], [], [], ms / 1000)

    def read_inputs(self):
        now = self.clock.ticks_ms()
        bits = self.contacts
        for di, coil in R.FEEDBACK:
            if self._feedback(coil, now):
                bits |= 1 << di
        return bits

    def write_outputs(self, bitmap):
        if bitmap == self.relays:
            return
        now = self.clock.ticks_ms()
        for _di, coil in R.FEEDBACK:
            if (bitmap ^ self.relays) >> coil & 1:
                self._before[coil] = self._feedback(coil, now)
                self._moved_at[coil] = now
        self.relays = bitmap
        self.relays_changed_at = _monotonic()

    def read_outputs(self):
        return self.relays

    def recv_into(self, buf):
        if self.fd is None:
            n = min(len(buf), len(self.inbox))
            buf[:n] = self.inbox[:n]
            self.inbox = self.inbox[n:]
            return n
        try:
            data = os.read(self.fd, len(buf))
        except BlockingIOError:
            return 0
        except OSError:  # EIO: nobody has the other side of the pty open
            self._read_failed = True
            return 0
        buf[: len(data)] = data
        return len(data)

    def send(self, data):
        if self.fd is None:
            self.outbox += data
            return
        view = memoryview(bytes(data))
        deadline = _monotonic() + _SEND_TIMEOUT_S
        while view and _monotonic() < deadline:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                select.select([], [self.fd], [], _SEND_TIMEOUT_S)
            except OSError:
                return  # the line went away; the master will time out

    def wdt_start(self, timeout_ms):
        self.wdt_timeout_ms = timeout_ms
        self.wdt_last_feed = self.clock.ticks_ms()

    def wdt_feed(self):
        self.wdt_feeds += 1
        self.wdt_last_feed = self.clock.ticks_ms()

    def reset_cause(self):
        return self.cause

    def _feedback(self, coil, now):
        forced = self._forced.get(coil)
        if forced is not None:
            return forced
        if ticks_diff(now, self._moved_at[coil]) >= self.feedback_delay_ms:
            return self.relays >> coil & 1
        return self._before[coil]
