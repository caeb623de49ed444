"""A real Mosquitto for tests: its own config in a temporary directory, on a free loopback port.

``with Mosquitto(tmp_path) as broker:`` starts it and waits until it accepts connections;
``broker.stop()`` and ``broker.start()`` take it down and bring it back on the SAME port (an
outage), keeping retained messages and persistent sessions (``persistence true``, saved on
SIGTERM). Optional TLS (``tls=TlsFiles(...)``) and password authentication
(``users={"name": "password"}``, hashed with ``mosquitto_passwd``).

:func:`mosquitto_binary` finds Debian's ``mosquitto`` or skips the test saying how to get it;
under CI (``CI=true``) a missing service fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from hil_tests.rig.processes import terminate

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
MISSING = "needs Debian's mosquitto: sudo apt-get install mosquitto (make test installs it as root)"


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def mosquitto_binary() -> str:
    """The path of ``mosquitto``; skip the test without it (fail under CI)."""
    path = _find("mosquitto")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"mosquitto is missing under CI: {MISSING}")
        pytest.skip(MISSING)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    """One broker process at a time, restartable on the same port."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        max_queued: int = 0,
    ) -> None:
        self.binary = mosquitto_binary()
        #: messages kept per offline client beyond which the broker drops them (0: no limit;
        #: stock mosquitto keeps 1000)
        self.max_queued = max_queued
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.users = users
        self.log = directory / "mosquitto.log"
        self.config = directory / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self._config_text(), encoding="utf-8")

    def _config_text(self) -> str:
        lines = [
            f"listener {self.port} {HOST}",
            "set_tcp_nodelay true",
            "persistence true",
            f"persistence_location {self.directory}/",
            "autosave_interval 0",
            # default no limit: a test's subscriber must miss nothing
            f"max_queued_messages {self.max_queued}",
            "max_inflight_messages 100",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would switch to 'mosquitto' and lose the files
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        if self.users:
            lines += [f"password_file {self._password_file()}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n"

    def _password_file(self) -> Path:
        tool = _find("mosquitto_passwd")
        if tool is None:
            pytest.skip("needs mosquitto_passwd (Debian's mosquitto package)")
        path = self.directory / "passwords"
        path.write_text("", encoding="utf-8")
        for user, password in (self.users or {}).items():
            subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
        return path

    # -- process -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start (again, on the same port) and wait until it accepts connections."""
        assert self._proc is None, "already running"
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._accepts():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                self._proc = None
                raise RuntimeError(f"mosquitto exited at start: {err}{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto not accepting on port {self.port}{self._log_tail()}")
            time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM (it saves its persistence file), SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        terminate(proc, STOP_TIMEOUT_S)
        if proc.stderr is not None:
            proc.stderr.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return "\n" + "\n".join(self.log.read_text().splitlines()[-10:])
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def make_tls_files(directory: Path, hostname: str = "localhost") -> TlsFiles:
    """A self-signed CA and a server certificate for ``hostname`` and 127.0.0.1, made with
    the ``openssl`` command (the test skips without it)."""
    openssl = _find("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test CA")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=DNS:{hostname},IP:127.0.0.1\n", encoding="utf-8")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=doorstep test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hostname}",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return TlsFiles(ca, cert, key)
