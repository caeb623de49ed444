"""What a code snippet sees on the simulated MicroPython board: one persistent namespace run
by CPython, with ``os``, ``open``, ``sys``, ``hashlib``/``uhashlib``, ``binascii`` and
``machine`` replaced by small fakes that offer only what MicroPython offers, confined to a
flash directory on the host, and printing errors as MicroPython does
(``OSError: [Errno 2] ENOENT``), which mpremote parses.

Not a security sandbox (the code comes from our own flasher): it keeps a snippet inside the
board's flash and makes CPython look like the board.
"""

from __future__ import annotations

import binascii
import builtins
import contextlib
import errno
import hashlib
import importlib
import io
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Self

_S_IFDIR, _S_IFREG = 0x4000, 0x8000
_SIM_MODULES = {"time", "utime", "struct", "ustruct", "gc", "errno", "uerrno", "micropython"}


class BoardReset(BaseException):
    """``machine.reset()`` (or the watchdog): the board restarts."""


class Unplugged(BaseException):
    """The USB link dropped (``die_after_bytes``)."""


def _oserror(code: int) -> OSError:
    """An OSError as MicroPython prints it: ``OSError: [Errno 2] ENOENT``."""
    return OSError(code, errno.errorcode[code])


class FlashFs:
    """The board's flash file system: a host directory nobody can leave."""

    def __init__(self, root: Path, write_budget: Callable[[int], int]) -> None:
        self.root = root
        self._budget = write_budget
        self.log: list[tuple[str, ...]] = []  # ("open", name, mode), ("rename", a, b), …

    def path(self, name: str) -> Path:
        parts = [p for p in PurePosixPath(name or ".").parts if p not in ("/", ".")]
        if ".." in parts:
            raise _oserror(errno.ENOENT)
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def _os_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise _oserror(exc.errno or errno.EIO) from None

    def open(self, name: str, mode: str = "r", *_: object) -> SimFile:
        self.log.append(("open", name, mode))
        with self._os_errors():
            if self.path(name).is_dir():
                raise _oserror(errno.EISDIR)
            return SimFile(self.path(name).open(mode), self._budget)

    def ilistdir(self, name: str = "") -> Iterator[tuple[str, int, int, int]]:
        with self._os_errors():
            entries = sorted(self.path(name).iterdir())
        for entry in entries:
            kind = _S_IFDIR if entry.is_dir() else _S_IFREG
            yield (entry.name, kind, 0, 0 if entry.is_dir() else entry.stat().st_size)

    def listdir(self, name: str = "") -> list[str]:
        return [entry[0] for entry in self.ilistdir(name)]

    def stat(self, name: str) -> tuple[int, ...]:
        with self._os_errors():
            st = self.path(name).stat()
        mode = _S_IFDIR if self.path(name).is_dir() else _S_IFREG
        mtime = int(st.st_mtime)
        return (mode, 0, 0, 0, 0, 0, st.st_size, mtime, mtime, mtime)

    def remove(self, name: str) -> None:
        self.log.append(("remove", name))
        with self._os_errors():
            self.path(name).unlink()

    def rename(self, old: str, new: str) -> None:
        self.log.append(("rename", old, new))
        with self._os_errors():
            self.path(old).replace(self.path(new))

    def mkdir(self, name: str) -> None:
        with self._os_errors():
            self.path(name).mkdir()

    def rmdir(self, name: str) -> None:
        with self._os_errors():
            self.path(name).rmdir()

    def module(self, version: tuple[int, int, int]) -> types.SimpleNamespace:
        """The ``os`` module as MicroPython offers it."""
        release = ".".join(map(str, version))
        uname = types.SimpleNamespace(
            sysname="rp2",
            nodename="rp2",
            release=release,
            version=f"v{release} on 2024-11-29 (GNU 13.2.1 MinSizeRel)",
            machine="Raspberry Pi Pico with RP2040",
        )
        return types.SimpleNamespace(
            listdir=self.listdir,
            ilistdir=self.ilistdir,
            stat=self.stat,
            remove=self.remove,
            rename=self.rename,
            mkdir=self.mkdir,
            rmdir=self.rmdir,
            getcwd=lambda: "/",
            sync=lambda: None,
            uname=lambda: uname,
            statvfs=lambda _path="/": (4096, 4096, 352, 300, 300, 0, 0, 0, 0, 255),
        )


class SimFile:
    """An open file in flash; writes count against the board's ``die_after_bytes``."""

    def __init__(self, f: Any, budget: Callable[[int], int]) -> None:
        self._f = f
        self._budget = budget

    def write(self, data: bytes | str) -> int:
        allowed = self._budget(len(data))
        if allowed < len(data):
            self._f.write(data[:allowed])
            self._f.close()
            raise Unplugged
        return int(self._f.write(data))

    def read(self, n: int = -1) -> bytes | str:
        return self._f.read(n)

    def readinto(self, buf: bytearray) -> int:
        return int(self._f.readinto(buf))

    def readline(self) -> bytes | str:
        return self._f.readline()

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._f.seek(offset, whence))

    def tell(self) -> int:
        return int(self._f.tell())

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Sha256:
    """MicroPython's ``hashlib.sha256``: ``update`` and ``digest``, no ``hexdigest``."""

    def __init__(self, data: bytes = b"") -> None:
        self._h = hashlib.sha256(data)

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()


class Interpreter:
    """One persistent MicroPython namespace, sandboxed to the board's flash."""

    def __init__(self, fs: FlashFs, version: tuple[int, int, int]) -> None:
        self._out = io.StringIO()
        sys_module = types.SimpleNamespace(
            implementation=types.SimpleNamespace(
                name="micropython", version=(*version, ""), _machine="Raspberry Pi Pico"
            ),
            version=f"3.4.0; MicroPython v{'.'.join(map(str, version))}",
            platform="rp2",
            byteorder="little",
            path=["", ".frozen", "/lib"],
            stdout=self._out,
            print_exception=lambda exc, _file=None: self._out.write(_traceback_text(exc)),
        )
        hashlib_module = types.SimpleNamespace(sha256=_Sha256)
        binascii_module = types.SimpleNamespace(
            hexlify=binascii.hexlify,
            unhexlify=binascii.unhexlify,
            a2b_base64=binascii.a2b_base64,
            b2a_base64=binascii.b2a_base64,
        )
        machine_module = types.SimpleNamespace(
            reset=self._reset, soft_reset=self._reset, unique_id=lambda: b"\xe6\x61\x41\x04"
        )
        self._modules: dict[str, object] = {
            "os": fs.module(version),
            "uos": fs.module(version),
            "sys": sys_module,
            "hashlib": hashlib_module,
            "uhashlib": hashlib_module,
            "binascii": binascii_module,
            "ubinascii": binascii_module,
            "machine": machine_module,
        }
        sandboxed = dict(vars(builtins))
        sandboxed.update(open=fs.open, print=self._print, __import__=self._import)
        for name in ("input", "exit", "quit", "breakpoint", "help"):
            sandboxed.pop(name, None)
        self.namespace: dict[str, object] = {"__builtins__": sandboxed, "__name__": "__main__"}

    def run(self, code: bytes) -> tuple[bytes, bytes]:
        """Execute one snippet: (stdout, traceback) as the board sends them."""
        self._out.seek(0)
        self._out.truncate()
        err = ""
        try:
            exec(compile(code.decode(), "<stdin>", "exec"), self.namespace)
        except (BoardReset, Unplugged):
            raise
        except BaseException as exc:  # the board prints every error as a traceback
            err = _traceback_text(exc)
        return _cooked(self._out.getvalue()), _cooked(err)

    def _print(self, *args: object, sep: str = " ", end: str = "\n", file: object = None) -> None:
        self._out.write(sep.join(str(a) for a in args) + end)

    def _import(self, name: str, *args: object, **kwargs: object) -> object:
        if name in self._modules:
            return self._modules[name]
        if name in _SIM_MODULES:
            real = {"utime": "time", "ustruct": "struct", "uerrno": "errno"}.get(name, name)
            if real == "micropython":
                return types.SimpleNamespace(kbd_intr=lambda _c: None, const=lambda v: v)
            return importlib.import_module(real)
        raise ImportError(f"no module named '{name}'")

    def _reset(self) -> None:
        raise BoardReset


def _traceback_text(exc: BaseException) -> str:
    """A traceback as MicroPython prints it, pointing into the snippet (``<stdin>``)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<stdin>"]
    line = frames[-1].lineno if frames else 1
    # CPython picks OSError subclasses by errno (FileNotFoundError); MicroPython has one
    kind = "OSError" if isinstance(exc, OSError) else type(exc).__name__
    detail = f"{kind}: {exc}" if str(exc) else kind
    where = f'  File "<stdin>", line {line}, in <module>'
    return f"Traceback (most recent call last):\n{where}\n{detail}\n"


def _cooked(text: str) -> bytes:
    """The board's stdout: newlines become CR LF."""
    return text.replace("\n", "\r\n").encode()
