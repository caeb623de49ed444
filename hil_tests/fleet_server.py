"""A real fleet manager for browser tests: ``fleet.app.create_app`` served by uvicorn in a
thread of its own, on a free loopback port, with its SQLite database in a test's directory.

Ingest runs without a broker (``Settings(ingest=False)``): :meth:`FleetServer.publish` hands a
``gateway.wire`` payload to the app's own ``Ingest.handle`` on the server's event loop, as the
broker subscription would, so what the UI shows went through the real ingest and the real API.

    with FleetServer(tmp_path) as fleet:
        fleet.register("lianhua-garden", "gw-01", title="Lianhua Garden")
        fleet.add_user("maint", Role.MAINTAINER, "maintainer-password")
        fleet.publish("lianhua-garden", "gw-01", wire.State(status="online", ...))
        page.goto(fleet.url)
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn
from sqlalchemy import update

from fleet.accounts.users import create_user
from fleet.app import create_app
from fleet.core.settings import Settings
from fleet.models import Role, User
from fleet.registry import register_gateway
from gateway import wire

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 20.0
T = TypeVar("T")


class FleetServer:
    """One fleet manager process-in-a-thread; a context manager that starts and stops it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.database_url = f"sqlite+aiosqlite:///{directory / 'fleet.db'}"
        self.app = create_app(Settings(database_url=self.database_url, ingest=False))
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((HOST, 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://{HOST}:{self.port}"
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="on", ws="none", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="fleet-server", daemon=True)
        self._failure: BaseException | None = None
        self._seq: dict[tuple[str, str, wire.Kind], int] = {}

    def _serve(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._socket])

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by __enter__ or the next call
            self._failure = exc

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    f"the fleet server on {self.url} did not start within {START_TIMEOUT_S} s"
                ) from self._failure
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(START_TIMEOUT_S)
        self._socket.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's event loop (where its database engine lives)."""
        if self._loop is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the fleet server is not running") from self._failure
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    # ---- seeding through the real registry, auth and ingest ----

    def register(self, site: str, gateway: str, title: str = "") -> None:
        async def go() -> None:
            async with self.app.state.sessions() as session, session.begin():
                await register_gateway(session, site, gateway, title)

        self.run(go())

    def add_user(self, name: str, role: Role, password: str) -> None:
        async def go() -> None:
            async with self.app.state.sessions() as session, session.begin():
                await create_user(session, name, role, password)

        self.run(go())

    def set_role(self, name: str, role: Role) -> None:
        """Change a user's role, as an administrator would while the user is logged in."""

        async def go() -> None:
            async with self.app.state.sessions() as session, session.begin():
                await session.execute(update(User).where(User.name == name).values(role=role.value))

        self.run(go())

    def next_seq(self, site: str, gateway: str, kind: wire.Kind) -> int:
        """The next batch sequence number of one gateway's telemetry or events."""
        key = (site, gateway, kind)
        self._seq[key] = self._seq.get(key, 0) + 1
        return self._seq[key]

    def publish(self, site: str, gateway: str, payload: wire.Payload) -> None:
        """Feed one message to ingest as if it came from the broker; fail if it is refused."""
        kind = next(k for k, model in wire.MODELS.items() if isinstance(payload, model))
        topic = wire.topic(site, gateway, kind)
        outcome = self.run(self.app.state.ingest.handle(topic, wire.encode(payload)))
        if outcome.status != "stored":
            raise AssertionError(f"ingest did not store {topic}: {outcome}")

    def telemetry(self, site: str, gateway: str, readings: list[wire.Reading]) -> None:
        seq = self.next_seq(site, gateway, wire.Kind.TELEMETRY)
        self.publish(site, gateway, wire.TelemetryBatch(seq=seq, at=time.time(), readings=readings))

    def events(self, site: str, gateway: str, events: list[wire.Event]) -> None:
        seq = self.next_seq(site, gateway, wire.Kind.EVENTS)
        self.publish(site, gateway, wire.EventBatch(seq=seq, at=time.time(), events=events))
