"""The running gateway's local command socket: ``gateway reset-latch`` and, later, the fleet.

A Unix socket in the state directory, mode 0660: who may reset a latch is decided by who may
open that file (the gateway's user and its group), and the reset is recorded with the peer's
user name from the kernel (SO_PEERCRED), not from anything the client claims. One JSON object
per line each way.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import struct
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.control.engine import InterlockEngine
from gateway.errors import GatewayError

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096
#: The longest path a Unix socket can be bound to or reached at on Linux (sun_path is 108
#: bytes, one of them the terminating zero).
MAX_SOCKET_PATH = 107


def check_path(path: Path) -> None:
    """A clear error, naming the path and the setting that made it, when ``path`` is longer
    than a Unix socket allows (bind and connect would fail, or worse, hang a start-up)."""
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH:
        raise GatewayError(
            f"the control socket {path} is {length} bytes long, more than the "
            f"{MAX_SOCKET_PATH} a Unix socket allows: give a shorter --state-dir "
            "(or DOORSTEP_STATE_DIR)"
        )


class ControlServer:
    def __init__(self, path: Path, engine: InterlockEngine) -> None:
        self.path = path
        self.engine = engine
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        check_path(self.path)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = self._handle(line[:MAX_REQUEST], _peer_user(writer))
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    def _handle(self, line: bytes, user: str) -> dict[str, object]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "the request is not JSON"}
        if not isinstance(request, dict) or request.get("cmd") != "reset-latch":
            return {"error": "unknown request (expected {'cmd': 'reset-latch', 'name': …})"}
        name = request.get("name")
        if not isinstance(name, str):
            return {"error": "reset-latch needs the interlock's name"}
        try:
            self.engine.reset(name, by=user)
        except GatewayError as exc:
            return {"error": str(exc)}
        return {"ok": f"interlock {name!r} reset by {user}"}


def _peer_user(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "unknown"


async def send(path: Path, request: dict[str, object]) -> dict[str, object]:
    """One request to a running gateway; a clear error when none is listening."""
    check_path(path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except FileNotFoundError:
        raise GatewayError(f"no gateway is running with state directory {path.parent}") from None
    except PermissionError:
        raise GatewayError(
            f"permission denied on {path}: run as the gateway's user or a member of its group"
        ) from None
    except ConnectionRefusedError:
        raise GatewayError(f"the gateway at {path} is not answering (stale socket?)") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        reply = json.loads(await reader.readline())
    finally:
        writer.close()
    if not isinstance(reply, dict):
        raise GatewayError("the gateway sent a reply that is not a JSON object")
    return reply
