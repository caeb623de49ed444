"""The SIO-1 safety I/O controller in the rig: the real firmware (``firmware/``), run by its
host board layer on a pseudo-terminal of its own — as on site, where the board has a serial
channel to itself — rather than a second model of it."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from typing import Any

from hil_tests.rig.nullmodem import NullModem


class SafetyIoBoard:
    """A running firmware instance; ``handle`` is firmware_host's FirmwareHandle."""

    def __init__(self, unit_id: int, baudrate: int) -> None:
        from hil_tests.rig import firmware_host  # puts firmware/ on sys.path: only when needed

        self.modem = NullModem()
        self.handle: Any = firmware_host.start(
            self.modem.master, unit_id=unit_id, baudrate=baudrate
        )
        self.path = self.modem.path
        self._unpowered: tuple[threading.Event, threading.Thread] | None = None

    @property
    def powered(self) -> bool:
        return self._unpowered is None

    def set_input(self, name: str, closed: bool) -> None:
        """``set_input("fire_alarm_loop", False)`` opens the loop: a fire alarm."""
        self.handle.set_input(name, closed)

    @property
    def outputs(self) -> int:
        """The actual relay bitmap (bit n = coil n)."""
        return int(self.handle.outputs)

    @property
    def state_name(self) -> str:
        return str(self.handle.state_name)

    def power_off(self) -> None:
        """The board loses its supply: the firmware stops answering, every relay drops (the
        safe state of each output is de-energised), and what the gateway sends is lost."""
        if not self.powered:
            return
        self.handle._halt()  # firmware_host has reset() = halt + boot, but no halt alone
        self.handle.board.write_outputs(0)
        stop = threading.Event()
        drain = threading.Thread(target=self._discard, args=(stop,), name="sio-unpowered")
        self._unpowered = (stop, drain)
        drain.start()

    def power_on(self) -> None:
        """Supply back: the firmware boots as after a power-on, in BOOT-SAFE until claimed."""
        from hil_tests.rig import firmware_host

        if self._unpowered is None:
            return
        stop, drain = self._unpowered
        stop.set()
        drain.join()
        self._unpowered = None
        self.handle.reset(cause=firmware_host.R.RESET_POWER_ON)

    def _discard(self, stop: threading.Event) -> None:
        """Read and drop the line's bytes while unpowered, so the pty never fills up."""
        while not stop.is_set():
            ready, _, _ = select.select([self.modem.master], [], [], 0.05)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.modem.master, 4096)

    def stop(self) -> None:
        if self._unpowered is not None:
            self._unpowered[0].set()
            self._unpowered[1].join()
        try:
            self.handle.stop()
        finally:
            self.modem.close()
