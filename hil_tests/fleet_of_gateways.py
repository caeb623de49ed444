"""Many real gateways under one real fleet, for the rollout HIL test.

:class:`GatewayFleet` starts, in this order: a throw-away PostgreSQL, mosquitto, ``fleet
serve`` as a process of its own (its database on that PostgreSQL, ingest on that broker), ONE
simulated-site process holding a SunSpec meter on a loopback TCP port for every gateway, and
``count`` gateways, each the real ``gateway run`` started by the launcher under its own
:class:`~hil_tests.ota_release.Supervisor` (state directory, OTA agent, A/B slots of its
own), reading its meter over TCP and talking to the fleet through the broker. Gateways start
a few at a time (``starting_at_once``): fifty Python stacks starting together on two cores
would each take a minute. Everything runs until the block ends, so the scenarios of a module
share it.

The test process keeps an event loop in a thread of its own (:meth:`GatewayFleet.run`) for
the supervisors, the read-only database queries (what the fleet shows: its own query
functions on its database) and a subscriber that records every ``ota/command`` the broker
delivers (what the gateways receive). Operators' actions go through the ``fleet`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.core.db import open_database, sessions
from fleet.models import Gateway, Site
from fleet.queries.versions import RunningVersion, running_versions
from fleet.registry import register_gateway
from fleet.releases.store import BundleStore, add_release
from fleet.releases.tables import OtaCommand, Release
from fleet.rollouts import service
from fleet.rollouts.service import RolloutView
from gateway.mqtt import Client
from gateway.trust import SigningKey
from gateway.wire import compact
from hil_tests.broker import Mosquitto, free_port
from hil_tests.ota_release import Supervisor
from hil_tests.postgres import PostgresServer
from hil_tests.rig.processes import terminate
from hil_tests.site_process import SiteProcess

HOST = "127.0.0.1"
SITE = "estate"
FLEET = [sys.executable, "-m", "fleet.cli"]
T = TypeVar("T")

#: what every gateway polls and sends: slow enough that fifty share two cores
GATEWAY_SETTINGS = """
[poll]
safety = 1.0
telemetry = 5.0
slow = 60

[control]
period_ms = 200
unhealthy_after_ms = 2000
"""
#: a site interlock on the meter: active while the meter cannot be read (an unknown input
#: trips it), so the rig's ``dead`` scenario makes it active and ``dead --clear`` ends it
WATCH = """
[[interlocks]]
name = "meter-watch"
when = { point = "meter.w", gt = 1000000.0 }
off_delay_s = 0.5
actions = [{ alarm = "minor", message = "site meter reading out of range" }]
"""


def gateway_name(index: int) -> str:
    return f"gw-{index:02d}"


def label(index: int) -> str:
    return f"{SITE}/{gateway_name(index)}"


@dataclass
class Member:
    """One gateway of the fleet: its files and its supervisor."""

    index: int
    state: Path
    config: Path
    log: Path
    supervisor: Supervisor
    _running: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(self.supervisor.running())
        self._running = stack

    async def stop(self) -> None:
        stack, self._running = self._running, None
        if stack is not None:
            await stack.aclose()

    @property
    def name(self) -> str:
        return gateway_name(self.index)

    @property
    def label(self) -> str:
        return label(self.index)

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Delivered:
    """An ``ota/command`` as the broker delivered it to a subscriber of the gateway's topic."""

    gateway: str  # site/gateway
    release: str
    command: int
    retained: bool
    at: float


@dataclass
class CommandWatch:
    """Every ``ota/command`` the broker delivers, retained ones (sent before) included."""

    seen: list[Delivered] = field(default_factory=list)

    def to(self, release: str) -> set[str]:
        """The gateways that received a command for ``release``."""
        return {d.gateway for d in self.seen if d.release == release}


class GatewayFleet:
    """``with GatewayFleet(tmp, 50, key) as fleet:`` — see the module's docstring."""

    def __init__(
        self,
        directory: Path,
        count: int,
        key: SigningKey,
        *,
        watched: Iterable[int] = (),
        starting_at_once: int = 4,
        ota_window_s: float = 3.0,
    ) -> None:
        self.directory = directory
        self.count = count
        self.key = key
        self.watched = set(watched)
        self.starting_at_once = starting_at_once
        self.ota_window_s = ota_window_s
        self.members: list[Member] = []
        self.commands = CommandWatch()
        self.fleet_port = free_port()
        self.url = f"http://{HOST}:{self.fleet_port}"
        self.releases = directory / "releases"
        self.fleet_log = directory / "fleet.log"
        self.started_in_s = 0.0
        self._stack = contextlib.ExitStack()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway-fleet")
        self._fleet: subprocess.Popen[bytes] | None = None
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.database_url = ""
        self.broker: Mosquitto | None = None
        self.rig: SiteProcess | None = None

    # -- the background loop -------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the fleet's event loop (supervisors, database, subscriber)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- start and stop --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        started = time.monotonic()
        self._thread.start()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.started_in_s = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.releases.mkdir(mode=0o700, exist_ok=True)
        pg = self._stack.enter_context(PostgresServer())
        self.database_url = pg.fresh_database()
        self.broker = self._stack.enter_context(Mosquitto(self.directory / "mq"))
        self.rig = self._stack.enter_context(
            SiteProcess(self.directory / "rig", self._rig_config())
        )
        ports = _meter_ports(self.rig.resolved)
        self.run(self._open())
        self.start_fleet()
        self.run(self._register())
        self._tasks.append(self.run(self._spawn(self._watch_commands())))
        for index in range(self.count):
            self.members.append(self._member(index, ports[index]))
        self.run(self._start_gateways(), timeout=600)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.run(self._stop_all(), timeout=120)
        self.stop_fleet()
        self._stack.close()
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.create_task(coro)

    async def _open(self) -> None:
        self._engine = await open_database(self.database_url)
        self._sessions = sessions(self._engine)

    async def _stop_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        stops = [m.stop() for m in self.members]
        await asyncio.gather(*stops, return_exceptions=True)
        if self._engine is not None:
            await self._engine.dispose()

    # -- the fleet process ---------------------------------------------------------------------

    def start_fleet(self) -> None:
        """``fleet serve`` on the database and the broker (again after :meth:`stop_fleet`)."""
        assert self.broker is not None
        with self.fleet_log.open("ab") as log:
            self._fleet = subprocess.Popen(
                [*FLEET, "serve", "--db", self.database_url,
                 "--mqtt", f"mqtt://{HOST}:{self.broker.port}", "--mqtt-client-id", "fleet-hil",
                 "--releases-dir", str(self.releases), "--host", HOST,
                 "--port", str(self.fleet_port), "--public-url", self.url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait(self._fleet_answers, 180, "the fleet's HTTP port", self.fleet_log)

    def stop_fleet(self) -> None:
        """SIGTERM, as ``systemctl stop`` sends."""
        if self._fleet is not None:
            terminate(self._fleet, 15.0)
            self._fleet = None

    def _fleet_answers(self) -> bool:
        if self._fleet is not None and self._fleet.poll() is not None:
            raise AssertionError(f"fleet serve exited:\n{_tail(self.fleet_log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((HOST, self.fleet_port)) == 0

    def cli(self, *args: str) -> str:
        """A ``fleet`` command on the fleet's database; its output (it must succeed)."""
        done = subprocess.run(
            [*FLEET, *args, "--db", self.database_url],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"fleet {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout

    def upload(self, bundle: Path) -> None:
        """Add a release bundle to the fleet (as ``fleet release upload`` does)."""

        async def go() -> None:
            async with self.session() as session:
                received = BundleStore(self.releases).receive_file(bundle)
                await add_release(session, received, "hil")
                await session.commit()

        self.run(go())

    # -- the rig ------------------------------------------------------------------------------

    def _rig_config(self) -> str:
        text = '[gateway]\nsite = "rig"\nid = "rig"\n'
        for i in range(self.count):
            text += f'\n[[buses]]\nname = "m{i:02d}"\nkind = "tcp"\nhost = "{HOST}"\nport = 1\n'
        for i in range(self.count):
            text += (
                f'\n[[devices]]\nname = "meter-{i:02d}"\nprofile = "SUNSPEC-METER"\n'
                f'bus = "m{i:02d}"\nunit_id = 1\n'
            )
        return text

    def meter_dead(self, index: int, dead: bool) -> str:
        """The gateway's meter stops answering (or answers again)."""
        assert self.rig is not None
        return self.rig.scenario("dead", clear=not dead, device=f"meter-{index:02d}")

    # -- the gateways ------------------------------------------------------------------------

    def _member(self, index: int, port: int) -> Member:
        assert self.broker is not None
        home = self.directory / gateway_name(index)
        state = home / "state"
        (state / "trusted-keys").mkdir(parents=True)
        (state / "trusted-keys" / "ops.pub").write_bytes(self.key.public_pem())
        config = home / "site.toml"
        config.write_text(
            f'[gateway]\nsite = "{SITE}"\nid = "{gateway_name(index)}"\n'
            + GATEWAY_SETTINGS
            + f'\n[[buses]]\nname = "meter"\nkind = "tcp"\nhost = "{HOST}"\nport = {port}\n'
            + '\n[[devices]]\nname = "meter"\nprofile = "SUNSPEC-METER"\nbus = "meter"\n'
            + "unit_id = 1\n"
            + (WATCH if index in self.watched else "")
            + f'\n[uplink]\nbroker = "mqtt://{HOST}:{self.broker.port}"\n'
            + "batch_interval_s = 5\nhealth_interval_s = 2\n"
        )
        log = home / "gateway.log"
        supervisor = Supervisor(state, config, log)
        supervisor.args[supervisor.args.index("--ota-window") + 1] = f"{self.ota_window_s:g}"
        return Member(index, state, config, log, supervisor)

    async def _register(self) -> None:
        async with self.session() as session:
            for index in range(self.count):
                await register_gateway(session, SITE, gateway_name(index))
            await session.commit()

    async def _start_gateways(self) -> None:
        """Start every gateway, ``starting_at_once`` at a time: the next starts when one of
        those starting has reported its OTA status to the fleet (it runs and is connected)."""
        pending = list(self.members)
        starting: list[Member] = []
        deadline = time.monotonic() + 60 + 10 * self.count
        while pending or starting:
            while pending and len(starting) < self.starting_at_once:
                member = pending.pop(0)
                await member.start()
                starting.append(member)
            await asyncio.sleep(0.5)
            reported = {v.gateway for v in await self._versions() if v.ota_state}
            starting = [m for m in starting if m.name not in reported]
            if time.monotonic() > deadline:
                late = ", ".join(f"{m.name}:\n{m.tail()}" for m in starting)
                raise AssertionError(f"gateways did not report within their start: {late}")

    def member(self, index: int) -> Member:
        return self.members[index]

    # -- what the fleet shows ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self) -> Any:
        assert self._sessions is not None
        async with self._sessions() as session:
            yield session

    def session(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        return self._session()

    async def _versions(self) -> list[RunningVersion]:
        async with self.session() as session:
            return (await running_versions(session)).gateways

    def versions(self) -> dict[str, RunningVersion]:
        """Which version each gateway really runs, as the fleet shows it."""
        return {f"{v.site}/{v.gateway}": v for v in self.run(self._versions())}

    def interlocks_active(self, gateway: str) -> int:
        """How many interlocks the gateway's last health report says are active."""
        site, name = gateway.split("/")

        async def go() -> int:
            async with self.session() as session:
                health = await session.scalar(
                    select(Gateway.health).join(Site).where(Site.name == site, Gateway.name == name)
                )
            active = ((health or {}).get("loop") or {}).get("interlocks_active") or 0
            return int(active)

        return self.run(go())

    def rollout(self, name: str) -> RolloutView:
        async def go() -> RolloutView:
            async with self.session() as session:
                return await service.view(session, await service.record_of(session, name))

        return self.run(go())

    def commanded(self, version: str) -> dict[str, list[tuple[int, float]]]:
        """The fleet's recorded ``ota/command`` rows for ``version``: per gateway, each
        command's id and when it was made (epoch seconds)."""

        async def go() -> dict[str, list[tuple[int, float]]]:
            async with self.session() as session:
                rows = await session.execute(
                    select(Site.name, Gateway.name, OtaCommand.id, OtaCommand.created_at)
                    .join(Gateway, OtaCommand.gateway_id == Gateway.id)
                    .join(Site, Gateway.site_id == Site.id)
                    .join(Release, OtaCommand.release_id == Release.id)
                    .where(Release.version == version)
                    .order_by(OtaCommand.id)
                )
                out: dict[str, list[tuple[int, float]]] = {}
                for site, gateway, cid, at in rows:
                    out.setdefault(f"{site}/{gateway}", []).append((cid, at.timestamp()))
                return out

        return self.run(go())

    def until(
        self, check: Callable[[], bool], within: float, what: str, explain: Callable[[], str]
    ) -> None:
        """Wait for ``check``; fail saying ``what`` and ``explain()`` after ``within`` s."""
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within:g} s: {what}\n{explain()}")
            time.sleep(0.5)

    # -- what the gateways receive ---------------------------------------------------------------

    async def _watch_commands(self) -> None:
        assert self.broker is not None
        while True:
            with contextlib.suppress(Exception):
                async with Client(HOST, self.broker.port, identifier="hil-command-watch") as c:
                    await c.subscribe("doorstep/v1/+/+/ota/command", qos=1)
                    async for m in c.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b"{}"
                        body = compact.readable(payload) if compact.is_compact(payload) else None
                        if body is None:
                            body = json.loads(payload)
                        _, _, site, gateway, _ = str(m.topic).split("/", 4)
                        self.commands.seen.append(
                            Delivered(
                                f"{site}/{gateway}", str(body.get("release")),
                                int(body.get("id", 0)), bool(m.retain), time.time(),
                            )
                        )  # fmt: skip
            await asyncio.sleep(0.5)


def _meter_ports(resolved: Path) -> list[int]:
    """The loopback port of each meter's bus, by gateway index, from the rig's config."""
    config = tomllib.loads(resolved.read_text())
    ports = {bus["name"]: int(bus["port"]) for bus in config["buses"]}
    return [ports[f"m{i:02d}"] for i in range(len(ports))]


def _wait(ready: Callable[[], bool], within: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + within
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}\n{_tail(log)}")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def memory_mib(pids: Iterable[int]) -> float:
    """The resident memory of these processes and their children, MiB."""
    import psutil

    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            for p in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
    return total / 2**20
