"""The SIO-1 safety I/O controller in the rig: the real firmware (``firmware/``), run by its
host board layer on a pseudo-terminal of its own — as on site, where the board has a serial
channel to itself — rather than a second model of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hil_tests.rig.nullmodem import NullModem

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"


class SafetyIoBoard:
    """A running firmware instance; ``handle`` is firmware/host_run.py's FirmwareHandle."""

    def __init__(self, unit_id: int, baudrate: int) -> None:
        if str(FIRMWARE) not in sys.path:
            sys.path.insert(0, str(FIRMWARE))
        import host_run  # firmware/: MicroPython modules, importable on CPython too

        self.modem = NullModem()
        self.handle: Any = host_run.start(self.modem.master, unit_id=unit_id, baudrate=baudrate)
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
