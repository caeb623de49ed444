"""A MicroPython board's REPL over USB serial: the one module that touches mpremote.

``gateway flash`` drives the board through mpremote's Python API
(``mpremote.transport_serial.SerialTransport``: raw REPL, raw-paste, file operations), which
its authors say will change; everything else uses :class:`BoardLink`. Every error of
mpremote, pyserial and the board is translated here into the :class:`FlashError` family,
with a message a technician can act on.

The snippets sent to the board are MicroPython (``hashlib`` or ``uhashlib``, ``os.ilistdir``)
and keep their names short, because the board's REPL namespace persists between them.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import io
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from gateway.errors import BoardError, LinkLost, NotMicroPython, PortError

BAUDRATE = 115200
#: How long a board may take to stop its program and show the raw REPL banner.
RAW_REPL_TIMEOUT_S = 5.0
#: Longest wait for one read from the port: bounds every step on a board that went silent
#: (mpremote's own default waits forever on a pty).
READ_TIMEOUT_S = 1.0
#: Bytes per write snippet; mpremote's ``cp`` uses the same.
CHUNK_BYTES = 256
#: ``os.ilistdir`` entry type of a regular file.
_S_IFREG = 0x8000

_PRELUDE = """\
import os
try:
    import hashlib
except ImportError:
    import uhashlib as hashlib
try:
    import binascii
except ImportError:
    import ubinascii as binascii
def _dsh(n, b=bytearray(256)):
    h = hashlib.sha256()
    m = memoryview(b)
    with open(n, 'rb') as f:
        while True:
            k = f.readinto(b)
            if not k:
                break
            h.update(m[:k])
    return binascii.hexlify(h.digest()).decode()
"""
_PROBE = (
    "import sys\n"
    "print(repr((sys.implementation.name, tuple(sys.implementation.version)[:3], sys.platform)))"
)
#: OS errors of the port itself (the board went away), as opposed to the board's file system.
_LINK_ERRNOS = {errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF, errno.EPIPE}
_LIST_HASHES = (
    "_dsr = {}\n"
    "for _dse in os.ilistdir():\n"
    f"    if _dse[1] == {_S_IFREG}:\n"
    "        _dsr[_dse[0]] = _dsh(_dse[0])\n"
    "print(repr(_dsr))"
)


@dataclass(frozen=True)
class BoardInfo:
    """What the board says it runs: ``sys.implementation`` and ``sys.platform``."""

    implementation: str
    version: tuple[int, ...]
    platform: str

    @property
    def version_text(self) -> str:
        return ".".join(str(v) for v in self.version)


def port_error(port: str, exc: BaseException) -> PortError:
    """The plain message for a port that would not open, from the OS error behind it."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return PortError(
            f"no board found on {port} (is it plugged in? try `mpremote connect list`)"
        )
    if code == errno.EACCES or "Permission denied" in text:
        return PortError(
            f"permission denied on {port}: add this user to the 'dialout' group "
            "(sudo usermod -aG dialout $USER), then log out and in again"
        )
    if code in (errno.EBUSY, errno.EAGAIN) or "lock" in text.lower() or "busy" in text.lower():
        return PortError(
            f"port busy: another program (a serial console, mpremote, the gateway) has {port} open"
        )
    return PortError(f"cannot open {port}: {text}")


def holders(port: str, proc: Path = Path("/proc")) -> list[str]:
    """Other processes that have ``port`` open, as "name (pid N)".

    A serial console (screen, minicom, picocom without --lock) opens the port without the
    exclusive lock pyserial and mpremote take, so the open succeeds and the console then
    swallows the board's answers (or, if it reads nothing, sits there while the board is
    rewritten). Linux shows every open file under /proc/PID/fd: a process holding the same
    character device is using the port. This process and the ones that started it are not
    counted (a test harness, or the shell, may hold the line's other end)."""
    try:
        target = os.stat(port)
    except OSError:
        return []
    if not stat.S_ISCHR(target.st_mode):
        return []
    skip = _ancestors(proc)
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                info = os.stat(fd)
            except OSError:
                continue
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == target.st_rdev:
                try:
                    name = (entry / "comm").read_text().strip()
                except OSError:
                    name = "a process"
                found.append(f"{name} (pid {entry.name})")
                break
    return found


def _ancestors(proc: Path) -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            pid = int(fields[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _diagnose_open(port: str) -> PortError:
    """mpremote reports every open failure as "failed to access": open the port once more
    the same way (exclusive lock) to learn the OS error behind it."""
    try:
        probe = serial.Serial(port, BAUDRATE, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        return port_error(port, exc)
    probe.close()
    return PortError(f"cannot open {port}: it opened on a second try; run the command again")


class BoardLink:
    """One session with a MicroPython board's raw REPL. Open it with :meth:`open` (a context
    manager); every method raises only :class:`FlashError` subclasses."""

    def __init__(self, port: str, transport: SerialTransport) -> None:
        self.port = port
        self._transport = transport
        self._prelude_sent = False

    @classmethod
    def open(cls, port: str, raw_repl_timeout: float = RAW_REPL_TIMEOUT_S) -> Self:
        """Open ``port``, interrupt whatever runs (Ctrl-C) and enter the raw REPL."""
        if busy := holders(port):
            raise PortError(
                f"port busy: {', '.join(busy)} has {port} open (a serial console that does "
                "not lock the port): close it, then run the command again"
            )
        try:
            transport = SerialTransport(port, baudrate=BAUDRATE, timeout=READ_TIMEOUT_S)
        except TransportError:
            raise _diagnose_open(port) from None
        link = cls(port, transport)
        try:
            # mpremote prints what it got instead of the banner; the message below says it
            with contextlib.redirect_stdout(io.StringIO()):
                transport.enter_raw_repl(soft_reset=False, timeout_overall=raw_repl_timeout)
        except (serial.SerialException, OSError) as exc:
            link.close()
            raise link._lost("entering the raw REPL", exc) from None
        except TransportError:
            link.close()
            raise NotMicroPython(
                f"not MicroPython: no raw REPL on {port} "
                "(is this the SIO-1's REPL port, and does the board run MicroPython?)"
            ) from None
        return link

    def close(self) -> None:
        """Close the port; a board that already went away is not an error."""
        with contextlib.suppress(OSError, serial.SerialException, TransportError):
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what the board runs and holds ---------------------------------------------------------

    def info(self) -> BoardInfo:
        """``sys.implementation`` and ``sys.platform`` of the board."""
        with self._translated("reading sys.implementation"):
            out = self._transport.exec(_PROBE)
        answer = self._literal(out, "sys.implementation")
        match answer:
            case (str(name), tuple(version), str(platform)) if all(
                isinstance(v, int) for v in version
            ):
                return BoardInfo(name, tuple(version), platform)
        raise NotMicroPython(f"not MicroPython: unexpected answer on {self.port}: {answer!r}")

    def file_hashes(self) -> dict[str, str]:
        """SHA-256 (hex) of every file in the board's root directory, computed on the board."""
        self._ensure_prelude()
        with self._translated("hashing the board's files"):
            out = self._transport.exec(_LIST_HASHES)
        listing = self._literal(out, "the board's file list")
        if not isinstance(listing, dict):
            raise LinkLost(f"garbled file list from {self.port}: {listing!r}")
        return {str(k): str(v) for k, v in listing.items()}

    def sha256(self, name: str) -> str | None:
        """SHA-256 (hex) of one file computed on the board, or None if it does not exist."""
        self._ensure_prelude()
        code = f"try:\n    print(repr(_dsh({name!r})))\nexcept OSError:\n    print('None')"
        with self._translated(f"hashing {name}"):
            out = self._transport.exec(code)
        result = self._literal(out, f"the hash of {name}")
        return None if result is None else str(result)

    def read_file(self, name: str) -> bytes | None:
        """The content of a (small) file, or None if it does not exist."""
        with self._translated(f"reading {name}"):
            try:
                return bytes(self._transport.fs_readfile(name))
            except OSError as exc:
                if exc.errno == errno.ENOENT and not isinstance(exc, serial.SerialException):
                    return None
                raise

    # -- changing the board ---------------------------------------------------------------------

    def write_file(self, name: str, data: bytes, progress: Callable[[int], None]) -> None:
        """Write ``data`` to ``name`` (in place: callers write temporary names).
        ``progress`` gets the bytes written so far, after each chunk."""
        with self._translated(f"writing {name}"):
            self._transport.fs_writefile(
                name,
                data,
                chunk_size=CHUNK_BYTES,
                progress_callback=lambda written, _total: progress(written),
            )

    def rename(self, old: str, new: str) -> None:
        """Rename a file, replacing ``new`` (one atomic step on littlefs)."""
        with self._translated(f"renaming {old} to {new}"):
            self._transport.exec(f"import os\nos.rename({old!r}, {new!r})")

    def remove(self, name: str) -> None:
        with self._translated(f"removing {name}"):
            self._transport.exec(f"import os\nos.remove({name!r})")

    def leave(self) -> None:
        """Leave the raw REPL for the normal one (Ctrl-B): nothing runs, nothing resets."""
        with self._translated("leaving the raw REPL"):
            self._transport.exit_raw_repl()

    def reset(self) -> None:
        """Hard-reset the board (``machine.reset()``) without waiting for an answer: the USB
        link drops, and the board boots its ``main.py``. Close the link afterwards."""
        with self._translated("resetting the board"):
            self._transport.exec_raw_no_follow("import machine\nmachine.reset()")

    # -- helpers ----------------------------------------------------------------------------------

    def _ensure_prelude(self) -> None:
        if not self._prelude_sent:
            with self._translated("preparing the board"):
                self._transport.exec(_PRELUDE)
            self._prelude_sent = True

    def _literal(self, out: bytes, what: str) -> object:
        try:
            return ast.literal_eval(out.decode().strip())
        except (ValueError, SyntaxError, UnicodeDecodeError):
            raise LinkLost(f"garbled answer from {self.port} for {what}: {out[:80]!r}") from None

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """mpremote, pyserial and board errors → :class:`FlashError` naming ``action``."""
        try:
            yield
        except TransportExecError as exc:
            last = str(exc.error_output).strip().splitlines()[-1:] or ["(no traceback)"]
            raise BoardError(f"the board failed {action}: {last[0]}") from None
        except (TransportError, serial.SerialException, struct.error) as exc:
            raise self._lost(action, exc) from None
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                raise self._lost(action, exc) from None
            # mpremote turns a file-system error on the board into an OSError with its errno
            reason = "the board's flash is full" if exc.errno == errno.ENOSPC else exc
            raise BoardError(f"the board failed {action}: {reason}") from None

    def _lost(self, action: str, exc: BaseException) -> LinkLost:
        return LinkLost(f"the board stopped answering on {self.port} while {action}: {exc}")
