"""The running demo's local control channel: how ``python -m hil_tests.rig.scenario`` reaches
the simulated site that ``make demo`` runs in a process of its own.

A Unix socket, ``scenario.sock`` in the demo's temporary directory (``doorstep-demo-*``, mode
0700), itself mode 0600: only the user who started the demo can drive it, and nothing listens
on the network. One JSON object per line each way: the client sends one request and reads
replies until the server closes the connection. Most requests get one reply; a stream (the
day in the life) sends ``{"event": …}`` lines until it ends or the client hangs up, which
stops it. The last line is ``{"ok": MESSAGE}`` or ``{"error": MESSAGE}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import tempfile
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

DEMO_DIR_PREFIX = "doorstep-demo-"
SOCKET_NAME = "scenario.sock"
#: where the client looks first: a socket path (tests, or a demo started by hand)
SOCKET_ENV = "DOORSTEP_DEMO_SOCKET"
MAX_REQUEST = 4096

Request = dict[str, Any]
Reply = dict[str, Any]
Handler = Callable[[Request], AsyncGenerator[Reply, None]]


class ChannelError(Exception):
    """The control channel could not carry a request (no demo, a broken reply)."""


class NoDemoRunning(ChannelError):
    pass


# -- the server, in the process that owns the simulated site -------------------------------


class ControlChannel:
    """Serves ``handler`` on a Unix socket; an async context manager that removes the socket
    when it exits. ``handler`` turns one request into its replies (an async iterator); when
    the client hangs up it is cancelled and closed."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST
        )
        os.chmod(self.path, 0o600)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):  # a day in the life still streaming
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            request = _parse(await reader.readline())
            async with asyncio.TaskGroup() as tg:
                replies = tg.create_task(self._send_replies(request, writer))
                hangup = tg.create_task(reader.read())  # b"" when the client goes away
                replies.add_done_callback(lambda _: hangup.cancel())
                hangup.add_done_callback(lambda _: replies.cancel())
        except (ValueError, ConnectionError) as exc:
            with contextlib.suppress(ConnectionError):
                await _send(writer, {"error": f"bad request: {exc}"})
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _send_replies(self, request: Request, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            async with contextlib.aclosing(self.handler(request)) as replies:
                async for reply in replies:
                    await _send(writer, reply)


def _parse(line: bytes) -> Request:
    request = json.loads(line)  # ValueError when not JSON
    if not isinstance(request, dict):
        raise ValueError("the request is not a JSON object")
    return request


async def _send(writer: asyncio.StreamWriter, reply: Reply) -> None:
    writer.write(json.dumps(reply).encode() + b"\n")
    await writer.drain()


# -- the client ------------------------------------------------------------------------------


def locate(explicit: Path | None = None) -> Path:
    """The socket of the running demo: ``explicit``, else $DOORSTEP_DEMO_SOCKET, else the
    newest answering ``doorstep-demo-*/scenario.sock`` of this user in the temp directory."""
    given = explicit or (Path(os.environ[SOCKET_ENV]) if os.environ.get(SOCKET_ENV) else None)
    if given is not None:
        if not _answers(given):
            raise NoDemoRunning(f"no demo is running at {given} (nothing answers there)")
        return given
    for candidate in _demo_sockets():
        if _answers(candidate):
            return candidate
    raise NoDemoRunning(
        "no demo is running: start one with `make demo` in another terminal (looked for "
        f"{Path(tempfile.gettempdir()) / (DEMO_DIR_PREFIX + '*') / SOCKET_NAME})"
    )


def _demo_sockets() -> list[Path]:
    """This user's demo sockets, newest first."""
    found = []
    for path in Path(tempfile.gettempdir()).glob(f"{DEMO_DIR_PREFIX}*/{SOCKET_NAME}"):
        with contextlib.suppress(OSError):
            if path.parent.stat().st_uid == os.getuid():
                found.append((path.stat().st_mtime, path))
    return [path for _, path in sorted(found, reverse=True)]


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def request(path: Path, message: Request) -> Iterator[Reply]:
    """Send one request and yield its replies as they come, until the server closes."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError as exc:
            raise NoDemoRunning(f"no demo is running at {path} ({exc.strerror})") from None
        s.sendall(json.dumps(message).encode() + b"\n")
        with s.makefile("rb") as replies:
            for line in replies:
                yield _reply(line)


def _reply(line: bytes) -> Reply:
    try:
        reply = json.loads(line)
    except ValueError:
        raise ChannelError(f"the demo sent a reply that is not JSON: {line[:80]!r}") from None
    if not isinstance(reply, dict):
        raise ChannelError(f"the demo sent a reply that is not a JSON object: {line[:80]!r}")
    return reply
