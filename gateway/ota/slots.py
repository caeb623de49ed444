"""The A/B slots: two virtual environments under ``state_dir/ota/slots/{a,b}``, and the
``current`` symlink naming the active one.

A release is installed into the inactive slot while the running one keeps working: the
slot is emptied, a virtual environment made, and the gateway's wheel installed from the
bundle's wheels only (``pip --no-index --find-links``: sites have no package index), at the
lowest CPU and I/O priority (``nice 19``, ``ionice`` idle class) so polling and the control
loop keep their timing. The SIO-1 firmware sources of the release are kept beside it.

:func:`switch` makes a slot the active one atomically: a new symlink is made under a
temporary name and renamed over ``current`` (one ``rename``), then the directory is synced.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from gateway.errors import OtaError
from gateway.ota.state import SlotName, ota_dir
from gateway.state_files import sync_dir

CURRENT = "current"


def slots_dir(state_dir: Path) -> Path:
    directory = ota_dir(state_dir) / "slots"
    directory.mkdir(exist_ok=True, mode=0o700)
    return directory


def slot_dir(state_dir: Path, slot: SlotName) -> Path:
    return slots_dir(state_dir) / slot


def gateway_command(state_dir: Path, slot: SlotName) -> Path:
    """The slot's ``gateway`` command (its venv's console script)."""
    return slot_dir(state_dir, slot) / "venv" / "bin" / "gateway"


def current(state_dir: Path) -> SlotName | None:
    link = slots_dir(state_dir) / CURRENT
    try:
        target = os.readlink(link)
    except OSError:
        return None
    name = Path(target).name
    return name if name in ("a", "b") else None  # type: ignore[return-value]


def switch(state_dir: Path, slot: SlotName) -> None:
    """Point ``current`` at ``slot`` in one rename."""
    directory = slots_dir(state_dir)
    tmp = directory / f".{CURRENT}.new"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(slot)
    os.replace(tmp, directory / CURRENT)
    sync_dir(directory)


def low_priority() -> list[str]:
    """The command prefix that runs a child at idle CPU and I/O priority (what is there)."""
    prefix = []
    if shutil.which("ionice"):
        prefix += ["ionice", "-c", "3"]
    if shutil.which("nice"):
        prefix += ["nice", "-n", "19"]
    return prefix


async def install(
    state_dir: Path,
    slot: SlotName,
    staging: Path,
    version: str,
    *,
    system_site_packages: bool = False,
    python: str = sys.executable,
) -> None:
    """Build ``slot`` from the verified bundle in ``staging``; OtaError saying what failed.

    ``system_site_packages`` (tests and development, where a bundle carries only the
    gateway's wheel): the slot also sees the system's packages and, after its own, those of
    the environment the running gateway was installed in (a ``.pth`` line), so its
    dependencies need not be in the bundle. On a Pi the bundle carries every wheel."""
    target = slot_dir(state_dir, slot)
    await asyncio.to_thread(shutil.rmtree, target, True)
    target.mkdir(mode=0o700)
    venv = [python, "-m", "venv", str(target / "venv")]
    if system_site_packages:
        venv.append("--system-site-packages")
    await _run(venv, "making the slot's virtual environment")
    if system_site_packages:
        python_dir = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = target / "venv" / "lib" / python_dir / "site-packages"
        (site / "doorstep-shared-site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [
        str(target / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet",
        "--no-index", "--disable-pip-version-check", "--no-cache-dir",
        "--find-links", str(staging / "wheels"), f"doorstep=={version}",
    ]  # fmt: skip
    await _run(pip, f"installing doorstep {version} from the bundle's wheels")
    firmware = staging / "firmware"
    if firmware.is_dir():
        await asyncio.to_thread(shutil.copytree, firmware, target / "firmware")
    (target / "VERSION").write_text(version + "\n")


async def _run(command: list[str], doing: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *low_priority(), *command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await process.communicate()
    except asyncio.CancelledError:  # the update was replaced or cancelled: no orphan pip
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        raise OtaError(f"{doing} failed (exit {process.returncode}): {' / '.join(tail)}")
