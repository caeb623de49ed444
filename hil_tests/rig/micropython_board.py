"""A simulated MicroPython board on a pty, for ``gateway flash`` and the real ``mpremote``.

The board serves the master side of a pty in a thread; a client opens :attr:`path`
(``/dev/pts/N``) as it would ``/dev/ttyACM0``. It speaks what mpremote needs of a
MicroPython REPL: the friendly REPL (banner, Ctrl-C, Ctrl-D soft reboot), the raw REPL
(Ctrl-A, ``raw REPL; CTRL-B to exit``), raw-paste with flow control (``\\x05A\\x01`` →
``R\\x01`` + window size + ``\\x01`` credit) and classic raw mode (``code \\x04`` → ``OK``).
Code runs on CPython in one persistent namespace per boot (reset by a soft or hard reboot),
sandboxed to a flash directory on the host (:mod:`hil_tests.rig.micropython_sandbox`).

Booting follows ``firmware/main.py``: with a ``main.py`` in flash the SIO-1 firmware runs (the
host runner :mod:`hil_tests.rig.firmware_host` on a second pty, :attr:`data_path`, when
``data_line=True``); Ctrl-C stops it, leaves the ``maintenance`` flag and the watchdog resets
the board after the firmware's watchdog period; the next boot deletes the flag and stays in
the REPL. The firmware answers (IR 1) the version its flash's manifest names, or with
``boots_new_files=False`` that of ``firmware/`` whatever was copied (a board that did not
boot its new files). ``machine.reset()`` resets the board the same way (the pty stays: a
board whose USB serial outlives a reset, so the flasher does not need to find it again).

Fault knobs: ``version`` (say ``(1, 22, 0)``), ``not_micropython`` (a serial device that
answers ``ERROR`` to everything), ``die_after_bytes`` or :meth:`drop_link_after` (the USB
link drops after that many bytes were written to flash: the pty closes; :meth:`replug` brings
the board back on a new pty with the same flash), ``raw_paste=False`` (classic raw mode only).
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gateway.flash.firmware import MANIFEST, firmware_constant
from gateway.flash.plan import ENTRY
from hil_tests.rig.micropython_sandbox import BoardReset, FlashFs, Interpreter, Unplugged
from hil_tests.rig.nullmodem import NullModem

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
DEFAULT_VERSION = (1, 24, 1)
#: Raw-paste flow-control window the board announces.
WINDOW = 128
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"


class MicroPythonBoard:
    """A MicroPython board on a pty. Use as a context manager; see the module docstring."""

    def __init__(
        self,
        flash_dir: Path,
        *,
        version: tuple[int, int, int] = DEFAULT_VERSION,
        not_micropython: bool = False,
        die_after_bytes: int | None = None,
        raw_paste: bool = True,
        data_line: bool = False,
        watchdog_s: float | None = None,
        boots_new_files: bool = True,
    ) -> None:
        flash_dir.mkdir(parents=True, exist_ok=True)
        self.flash_dir = flash_dir
        self.version = version
        self.not_micropython = not_micropython
        self.die_after_bytes = die_after_bytes
        self.raw_paste = raw_paste
        self.boots_new_files = boots_new_files
        if watchdog_s is None:
            watchdog_s = float(str(_firmware_name("sio_app", "WDT_TIMEOUT_MS"))) / 1000
        self.watchdog_s = watchdog_s
        self.fs = FlashFs(flash_dir, self._write_budget)
        self.resets = 0
        self.bytes_written = 0
        self.unplugged = False
        self._data = NullModem() if data_line else None
        self._line: NullModem | None = None
        self._line_open = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._firmware: Any = None
        self._wdt_deadline: float | None = None
        self._mode = "friendly"
        self._buf = bytearray()
        self._paste_count = 0
        self._interp = Interpreter(self.fs, self.version)

    # -- the outside view -----------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The REPL port (``/dev/pts/N``); a new one after :meth:`replug`."""
        assert self._line is not None
        return self._line.path

    @property
    def data_path(self) -> str:
        """The SIO-1 Modbus data port (``data_line=True``)."""
        assert self._data is not None
        return self._data.path

    @property
    def firmware_running(self) -> bool:
        return self._firmware is not None

    def start(self) -> Self:
        self._line, self._line_open = NullModem(), True
        self._stop.clear()
        self.unplugged = False
        self._boot()
        self._thread = threading.Thread(target=self._serve, name="micropython-board", daemon=True)
        self._thread.start()
        return self

    def drop_link_after(self, nbytes: int) -> None:
        """Unplug the board once ``nbytes`` more bytes were written to its flash."""
        self.die_after_bytes = self.bytes_written + nbytes

    def replug(self) -> str:
        """Plug the board in again after it was unplugged: new pty, same flash; the path."""
        self.stop()
        self.die_after_bytes = None
        self.bytes_written = 0
        self.start()
        return self.path

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        self._stop_firmware()
        self._close_line()

    def _close_line(self) -> None:
        """Close the pty once: its fd numbers may belong to someone else afterwards."""
        if self._line is not None and self._line_open:
            self._line_open = False
            self._line.close()

    def close(self) -> None:
        self.stop()
        if self._data is not None:
            self._data.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the line -------------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._line is not None
        master = self._line.master
        while not self._stop.is_set():
            if self._wdt_deadline is not None and time.monotonic() >= self._wdt_deadline:
                self._hard_reset()
            ready, _, _ = select.select([master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            try:
                for byte in data:
                    self._feed(byte)
            except Unplugged:
                self._unplug()
                return

    def _send(self, data: bytes) -> None:
        """Write to the host; dropped when nobody reads (like a USB CDC with no host)."""
        assert self._line is not None
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view and time.monotonic() < deadline:
            try:
                view = view[os.write(self._line.master, view) :]
            except BlockingIOError:
                select.select([], [self._line.master], [], 0.05)
            except OSError:
                return

    def _unplug(self) -> None:
        self.unplugged = True
        self._stop_firmware()
        self._close_line()

    # -- the REPL ---------------------------------------------------------------------------------

    def _feed(self, byte: int) -> None:
        if self.not_micropython:
            if byte == 0x0D:
                self._send(b"\r\nERROR\r\n")
            return
        if self._mode == "running":
            if byte == 0x03:
                self._interrupt_firmware()
            return
        handler = {"friendly": self._friendly, "raw": self._raw, "paste": self._paste}[self._mode]
        handler(byte)

    def _friendly(self, byte: int) -> None:
        if byte == 0x01:
            self._mode, self._buf = "raw", bytearray()
            self._send(b"\r\n" + RAW_BANNER)
        elif byte == 0x02:
            self._send(b"\r\n" + self._banner() + b">>> ")
        elif byte == 0x03:
            self._send(b"\r\nKeyboardInterrupt\r\n>>> ")
        elif byte == 0x04:
            self._send(b"MPY: soft reboot\r\n")
            self._soft_reset()
            self._boot()
        elif byte == 0x0D:
            self._send(b"\r\n>>> ")
        else:
            self._send(bytes([byte]))

    def _raw(self, byte: int) -> None:
        if byte == 0x01:
            if self._buf == b"\x05A":
                self._buf = bytearray()
                self._enter_paste()
                return
            self._buf = bytearray()
            self._send(RAW_BANNER)
        elif byte == 0x02:
            self._mode = "friendly"
            self._send(b"\r\n" + self._banner() + b">>> ")
        elif byte == 0x03:
            self._buf = bytearray()
        elif byte == 0x04:
            code, self._buf = bytes(self._buf), bytearray()
            if not code:
                self._send(b"OK\r\nMPY: soft reboot\r\n")
                self._soft_reset()
                self._send(RAW_BANNER)
                return
            self._send(b"OK")
            self._execute(code)
        else:
            self._buf.append(byte)

    def _enter_paste(self) -> None:
        if not self.raw_paste:
            self._send(b"R\x00")
            return
        self._mode, self._paste_count = "paste", 0
        self._send(b"R\x01" + struct.pack("<H", WINDOW) + b"\x01")

    def _paste(self, byte: int) -> None:
        if byte == 0x04:
            code, self._buf = bytes(self._buf), bytearray()
            self._mode = "raw"
            self._send(b"\x04")
            self._execute(code)
            return
        self._buf.append(byte)
        self._paste_count += 1
        if self._paste_count % WINDOW == 0:
            self._send(b"\x01")

    def _execute(self, code: bytes) -> None:
        try:
            out, err = self._interp.run(code)
        except BoardReset:
            self._hard_reset()
            return
        self._send(out + b"\x04" + err + b"\x04>")

    # -- boot, reset, firmware ------------------------------------------------------------------

    def _banner(self) -> bytes:
        release = ".".join(map(str, self.version))
        return (
            f"MicroPython v{release} on 2024-11-29; Raspberry Pi Pico with RP2040\r\n"
            'Type "help()" for more information.\r\n'
        ).encode()

    def _soft_reset(self) -> None:
        self._interp = Interpreter(self.fs, self.version)

    def _hard_reset(self) -> None:
        """machine.reset() or the watchdog: a fresh interpreter, and main.py runs."""
        self.resets += 1
        self._wdt_deadline = None
        self._stop_firmware()
        self._soft_reset()
        self._mode, self._buf = "friendly", bytearray()
        self._boot()

    def _boot(self) -> None:
        """What firmware/main.py does at boot, or the bare REPL without a main.py."""
        flag = self.flash_dir / _firmware_name("main", "MAINTENANCE_FLAG")
        if not (self.flash_dir / ENTRY).is_file():
            self._mode = "friendly"
            self._send(self._banner() + b">>> ")
        elif flag.exists():
            flag.unlink()
            self._mode = "friendly"
            self._send(
                b"SIO-1 maintenance boot: relays off, firmware not started (reset to resume)\r\n"
                + self._banner()
                + b">>> "
            )
        else:
            self._mode = "running"
            self._start_firmware()

    def _start_firmware(self) -> None:
        if self._data is None:
            return
        from hil_tests.rig import firmware_host  # puts firmware/ on sys.path: only when needed

        identity = self.flash_dir / _firmware_name("sio_app", "IDENTITY_PATH")
        self._firmware = firmware_host.start(
            self._data.master,
            identity=str(identity),
            state_dir=str(self.flash_dir),
            version=self.installed_version() if self.boots_new_files else None,
        )

    def installed_version(self) -> tuple[int, int] | None:
        """The firmware version the flash's manifest names (``gateway flash`` writes it):
        CPython cannot run the compiled modules, so the host runner runs ``firmware/`` and
        answers this version in IR 1."""
        manifest = self.flash_dir / MANIFEST
        text = manifest.read_text(errors="replace") if manifest.is_file() else ""
        for line in text.splitlines():
            key, _, value = line.partition("=")
            major, _, minor = value.strip().partition(".")
            if key.strip() == "version" and major.isdigit() and minor.isdigit():
                return int(major), int(minor)
        return None

    def _stop_firmware(self) -> None:
        firmware, self._firmware = self._firmware, None
        if firmware is not None:
            firmware.stop()

    def _interrupt_firmware(self) -> None:
        """Ctrl-C while main.py runs: relays off, maintenance flag, watchdog reset soon."""
        self._stop_firmware()
        flag = self.flash_dir / _firmware_name("main", "MAINTENANCE_FLAG")
        flag.write_text("1")
        self._send(
            b"SIO-1 stopped, relays off; the watchdog resets the board into maintenance mode\r\n"
            + self._banner()
            + b">>> "
        )
        self._mode = "friendly"
        self._wdt_deadline = time.monotonic() + self.watchdog_s

    def _write_budget(self, size: int) -> int:
        """Bytes of a write of ``size`` that reach flash before the link drops."""
        allowed = size
        if self.die_after_bytes is not None:
            allowed = max(0, min(size, self.die_after_bytes - self.bytes_written))
        self.bytes_written += allowed
        return allowed


def _firmware_name(module: str, constant: str) -> str:
    return str(firmware_constant(FIRMWARE, module, constant))
