"""The SIO-1 safety I/O controller in the rig: the real firmware (``firmware/``), run by its
host board layer on a pseudo-terminal of its own — as on site, where the board has a serial
channel to itself — rather than a second model of it."""

from __future__ import annotations

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

    def stop(self) -> None:
        try:
            self.handle.stop()
        finally:
            self.modem.close()
