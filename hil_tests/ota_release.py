"""Release bundles of this repository with a bumped version, and a supervisor that restarts
the launcher like systemd, for the OTA HIL test and benchmark.

The gateway's wheel is zipped here from the working tree (no build backend, no network):
every file of the ``gateway`` package, its console script, and a version of our choosing;
``patches`` replace a module's text (a release that crashes at start). The wheel declares no
dependencies: the test's slots share this environment's (``--ota-system-site-packages``);
on a Pi a bundle carries every dependency's wheel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.flash.firmware import load_firmware
from gateway.ota.bundle import build_bundle, this_platform, this_python
from gateway.trust import SigningKey

ROOT = Path(__file__).resolve().parents[1]


def repo_wheel(house: Path, version: str, patches: dict[str, str] | None = None) -> Path:
    files: dict[str, bytes] = {}
    for path in sorted((ROOT / "gateway").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".toml"):
            files[str(path.relative_to(ROOT))] = path.read_bytes()
    for name, text in (patches or {}).items():
        files[name] = text.encode()
    info = f"doorstep-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: doorstep\nVersion: {version}\n".encode()
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: hil\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\ngateway = gateway.cli.main:main\n"
    record = [f"{name},sha256={_b64(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = house / f"doorstep-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def release(
    directory: Path,
    version: str,
    key: SigningKey,
    patches: dict[str, str] | None = None,
    *,
    firmware: Path = ROOT / "firmware",
    firmware_min: str | None = None,
) -> Path:
    """A signed bundle of this repository at ``version`` (with the SIO-1 firmware: this
    repository's, or ``firmware``)."""
    house = directory / f"house-{version}"
    house.mkdir(parents=True)
    repo_wheel(house, version, patches)
    out = directory / f"doorstep-{version}.tar"
    build_bundle(
        out, wheelhouse=house, firmware=firmware, version=version, min_version="0.1.0",
        platform=this_platform(), python=this_python(), key=key, firmware_min=firmware_min,
    )  # fmt: skip
    return out


def bumped_firmware(directory: Path) -> Path:
    """This repository's SIO-1 firmware with the next minor version, in ``directory``."""
    shutil.copytree(ROOT / "firmware", directory, ignore=shutil.ignore_patterns("__pycache__"))
    major, minor = load_firmware(directory).version
    version = directory / "version.py"
    text = re.sub(r"(?m)^VERSION = .*$", f"VERSION = ({major}, {minor + 1})", version.read_text())
    version.write_text(text)
    return directory


class Supervisor:
    """Starts the launcher again whenever it exits, like ``Restart=on-failure``. ``extra``:
    more arguments for ``gateway run``; ``env``: more environment variables."""

    def __init__(
        self,
        state: Path,
        config: Path,
        log: Path,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = [
            sys.executable, "-m", "gateway.ota.launcher", "--state-dir", str(state), "--",
            "-v", "run", "--config", str(config), "--state-dir", str(state), "--display", "log",
            "--ota-window", "3", "--ota-system-site-packages", *extra,
        ]  # fmt: skip
        self.env = env or {}
        self.log = log
        self.starts = 0
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def _run(self) -> None:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **self.env}
        with self.log.open("ab") as out:
            while True:
                self.starts += 1
                self._process = await asyncio.create_subprocess_exec(
                    *self.args, stdout=out, stderr=out, env=env, start_new_session=True
                )
                await self._process.wait()
                await asyncio.sleep(0.3)  # RestartSec

    def kill(self) -> None:
        """``kill -9`` of the gateway that runs now and of its children (pip), as systemd
        kills the service's whole control group."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGKILL)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if self._process is not None and self._process.returncode is None:
                self._process.terminate()
                await self._process.wait()


class CuttingProxy:
    """A TCP proxy in front of the fleet whose first connection is closed after ``cut``
    bytes of the answer: a download that dies on a poor link. It records each request's
    ``Range`` header and the bytes it passed back."""

    def __init__(self, port: int, cut: int) -> None:
        self.port = port
        self.cut = cut
        self.ranges: list[str | None] = []
        self.passed: list[int] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = await reader.readuntil(b"\r\n\r\n")
        ranges = [
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"range:")
        ]
        self.ranges.append(ranges[0] if ranges else None)
        limit = self.cut if len(self.ranges) == 1 else None
        up_writer.write(head)
        await up_writer.drain()
        passed = 0
        try:
            while chunk := await up_reader.read(65536):
                if limit is not None and passed + len(chunk) >= limit:
                    writer.write(chunk[: limit - passed])
                    passed = limit
                    break
                writer.write(chunk)
                passed += len(chunk)
                await writer.drain()
        finally:
            self.passed.append(passed)
            await writer.drain()
            writer.close()
            up_writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        async with self._server:
            yield self
