"""The SIO-1 state machine: BOOT-SAFE, CLAIMED, FAILSAFE, FAULT (docs/safety.md#sio-1-states).

Outputs are energised only in CLAIMED, where they follow HR 2. A claim (HR 3 = 0xC1A1)
enters CLAIMED from BOOT-SAFE or FAILSAFE; writes to HR 0 are heartbeats, and a CLAIMED
board that hears none for ``watchdog_timeout`` ms drops to FAILSAFE on its own. A relay whose
feedback contact disagrees with it for more than 500 ms puts the board in FAULT, which only a
reset leaves. HR 2 is cleared on every entry to BOOT-SAFE, FAILSAFE and FAULT, so a new
claim never re-applies an old bitmap.

A hold (HR 5 = seconds, 1..30, only while CLAIMED with the fire loop and the e-stop closed)
is what the gateway asks for just before a planned restart: the outputs stay as they are
without heartbeats until the next heartbeat, but the board drops to FAILSAFE by itself the
moment the fire loop or the e-stop opens, or when the hold runs out.

Pure logic: time comes in as ``now`` (ms ticks), inputs and actual outputs come from the
board layer, and nothing here touches hardware, so host tests drive it tick by tick.
"""

import sio_regs as R
from sio_ticks import ticks_diff


class Controller:
    """The registers and the state of one board.

    ``log(event, detail)`` is called on every entry to FAILSAFE or FAULT (the fault log).
    """

    def __init__(self, now, unit_id, reset_cause, log=None):
        self.unit_id = unit_id
        self.reset_cause = reset_cause
        self.fw_version = R.VERSION[0] << 8 | R.VERSION[1]  # IR 1
        self.heartbeat = 0  # last value written to HR 0
        self.timeout_ms = R.TIMEOUT_DEFAULT_MS
        self.requested = 0  # HR 2
        self.hold_s = 0  # HR 5 while a hold lasts, else 0
        self._hold_from = now
        self.failsafe_trips = 0
        self.inputs = 0  # debounced DI bitmap
        self.actual = 0  # relays as read back from the board
        self.uptime_s = 0
        self.fault_reason = ""
        self.state = R.BOOT_SAFE
        self._log = log
        self._beat = now  # tick of the last heartbeat or claim
        self._last = now
        self._ms = 0  # uptime remainder below one second
        self._mismatch = [None] * len(R.FEEDBACK)  # tick each feedback started to disagree

    # -- outputs and timers ---------------------------------------------------------------

    def outputs(self):
        """The relay bitmap to drive now: HR 2 while CLAIMED, all off in every other state."""
        return self.requested if self.state == R.CLAIMED else 0

    def remaining_ms(self, now):
        """Watchdog (or hold) time left while CLAIMED (0 in every other state)."""
        if self.state != R.CLAIMED:
            return 0
        if self.hold_s:
            left = self.hold_s * 1000 - ticks_diff(now, self._hold_from)
        else:
            left = self.timeout_ms - ticks_diff(now, self._beat)
        return left if left > 0 else 0

    # -- register writes ------------------------------------------------------------------

    def check_write(self, addr, value):
        """The Modbus exception code a write of ``value`` to HR ``addr`` gets, or 0 if accepted.

        No side effects, so a multi-register write is checked whole before any of it lands.
        """
        if addr == R.HR_WATCHDOG_TIMEOUT:
            if value < R.TIMEOUT_MIN_MS or value > R.TIMEOUT_MAX_MS:
                return R.ILLEGAL_VALUE
        elif addr == R.HR_REQUESTED_OUTPUTS:
            if self.state != R.CLAIMED:
                return R.DEVICE_FAILURE
            if value & ~R.OUTPUT_MASK:
                return R.ILLEGAL_VALUE
        elif addr == R.HR_CLAIM:
            if value != R.CLAIM_VALUE:
                return R.ILLEGAL_VALUE
            if self.state == R.FAULT:
                return R.DEVICE_FAILURE
        elif addr == R.HR_UNIT_ID:
            if value != self.unit_id:  # the unit id comes from the identity file only
                return R.ILLEGAL_VALUE
        elif addr == R.HR_HOLD:
            if value < 1 or value > R.HOLD_MAX_S:
                return R.ILLEGAL_VALUE
            if self.state != R.CLAIMED or self.inputs & R.HOLD_INPUTS != R.HOLD_INPUTS:
                return R.DEVICE_FAILURE
        return 0

    def write(self, addr, value, now):
        """Apply a write that :meth:`check_write` accepted."""
        if addr == R.HR_HEARTBEAT:
            self.heartbeat = value
            self._beat = now
            self.hold_s = 0  # the gateway is back: the hold ends
        elif addr == R.HR_HOLD:
            self.hold_s = value
            self._hold_from = now
        elif addr == R.HR_WATCHDOG_TIMEOUT:
            self.timeout_ms = value
        elif addr == R.HR_REQUESTED_OUTPUTS:
            self.requested = value
        elif addr == R.HR_CLAIM and self.state != R.CLAIMED:
            # A claim while CLAIMED changes nothing: only HR 0 writes are heartbeats.
            self.state = R.CLAIMED
            self._beat = now

    def write_register(self, addr, value, now):
        """Check and apply one register write; the exception code, or 0."""
        code = self.check_write(addr, value)
        if not code:
            self.write(addr, value, now)
        return code

    # -- the periodic part ----------------------------------------------------------------

    def tick(self, now, inputs, actual):
        """One main-loop tick: debounced ``inputs`` and ``actual`` relays as the board sees
        them now; trips the watchdog and the feedback supervision."""
        self._count_uptime(now)
        self.inputs = inputs
        self.actual = actual
        if self.state == R.CLAIMED and self.hold_s:
            if inputs & R.HOLD_INPUTS != R.HOLD_INPUTS:
                self._trip("fire loop or e-stop opened during a %d s hold" % self.hold_s)
            elif ticks_diff(now, self._hold_from) >= self.hold_s * 1000:
                self._trip("a %d s hold ran out without a heartbeat" % self.hold_s)
        elif self.state == R.CLAIMED and ticks_diff(now, self._beat) >= self.timeout_ms:
            self._trip("no heartbeat for %d ms" % self.timeout_ms)
        self._check_feedback(now)

    def _trip(self, why):
        self.failsafe_trips = (self.failsafe_trips + 1) & 0xFFFF
        self._enter(R.FAILSAFE, why)

    def fault(self, reason):
        """Enter FAULT (feedback mismatch, failed self-test); only a reset leaves it."""
        if self.state != R.FAULT:
            self.fault_reason = reason
            self._enter(R.FAULT, reason)

    def _check_feedback(self, now):
        for i in range(len(R.FEEDBACK)):
            di, coil = R.FEEDBACK[i]
            if (self.inputs >> di ^ self.actual >> coil) & 1 == 0:
                self._mismatch[i] = None
                continue
            since = self._mismatch[i]
            if since is None:
                self._mismatch[i] = now
            elif ticks_diff(now, since) > R.FEEDBACK_FAULT_MS:
                self.fault(
                    "DI %d (%s) = %d disagrees with coil %d for > %d ms"
                    % (di, R.INPUT_NAMES[di], self.inputs >> di & 1, coil, R.FEEDBACK_FAULT_MS)
                )

    def _enter(self, state, why):
        self.state = state
        self.requested = 0  # never re-apply an old bitmap after a new claim
        self.hold_s = 0
        if self._log is not None:
            self._log(R.STATE_NAMES[state], why)

    def _count_uptime(self, now):
        self._ms += ticks_diff(now, self._last)
        self._last = now
        if self._ms >= 1000:
            self.uptime_s = (self.uptime_s + self._ms // 1000) & 0xFFFFFFFF
            self._ms %= 1000
