"""The board layer: everything the firmware needs from hardware, and nothing more.

:class:`Board` is the interface. ``board_rp2.Rp2Board`` implements it with ``machine``
pins, a UART (or a second USB CDC interface) and the hardware watchdog; the HIL rig's
``HostBoard`` (``hil_tests/rig/host_board.py``) implements it on CPython with a pty, simulated
relays and a clock the tests control. The firmware logic (``sio_app``) sees only these
methods, so the same code runs on both.

Bitmaps: bit n of the inputs is DI n (1 = contact closed), bit n of the outputs is coil n
(1 = relay energised).
"""


class Board:
    # -- time -------------------------------------------------------------------------------

    def ticks_ms(self):
        """Monotonic ms counter (wraps; compare with ``sio_ticks.ticks_diff``)."""
        raise NotImplementedError

    def wait(self, ms):
        """Sleep up to ``ms``, returning early when the Modbus channel has bytes to read."""
        raise NotImplementedError

    # -- hard-wired I/O ---------------------------------------------------------------------

    def read_inputs(self):
        """Raw (not debounced) input bitmap, 8 bits."""
        raise NotImplementedError

    def write_outputs(self, bitmap):
        """Energise exactly the relays in ``bitmap``."""
        raise NotImplementedError

    def read_outputs(self):
        """The relays as they actually are (read back from the output pins)."""
        raise NotImplementedError

    # -- the Modbus data channel (never the REPL) -------------------------------------------

    def recv_into(self, buf):
        """Read what has arrived (without blocking) into ``buf``; the byte count, 0 if none."""
        raise NotImplementedError

    def send(self, data):
        """Write ``data`` to the channel completely."""
        raise NotImplementedError

    # -- health -----------------------------------------------------------------------------

    def wdt_start(self, timeout_ms):
        """Arm the hardware watchdog: the board resets if not fed within ``timeout_ms``."""
        raise NotImplementedError

    def wdt_feed(self):
        raise NotImplementedError

    def reset_cause(self):
        """Why the board last reset, as IR 6 encodes it (``sio_regs.RESET_*``)."""
        raise NotImplementedError
