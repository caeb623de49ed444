"""Several fleet workers on real engines: PostgreSQL, mosquitto, and ``fleet serve --workers 2``
(a supervisor and two worker processes sharing one HTTP port and, through a shared
subscription, the gateways' stream). Gateways (the real uplink, in this process) stream
telemetry; one worker is killed with SIGKILL in the middle of the stream and its supervisor
starts it again in its slot: every batch is stored exactly once, no gap is left open, nothing
a gateway's broker acknowledged is lost. Over HTTP the workers answer as one: a login made on
one is valid on the other, and failed logins are counted together. A desired configuration
reaches its gateway, also when the gateway has to ask for it again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.accounts.users import create_user
from fleet.cli.serve import DEFAULT_SHARE_GROUP
from fleet.config.tables import GatewayConfig
from fleet.config.versions import push
from fleet.core.broker import BrokerUrl
from fleet.core.db import open_database, sessions
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.models import Gap, ReceivedBatch, Role, Sample
from fleet.registry import register_gateway
from gateway import mqtt, wire
from gateway.image import Quality
from gateway.image import Sample as Reading
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from gateway.wire.config import ConfigRequest, DesiredConfig
from hil_tests.broker import HOST, Mosquitto, free_port
from hil_tests.postgres import PostgresServer
from hil_tests.rig.processes import terminate

pytestmark = [pytest.mark.hil, pytest.mark.fleet]

SITE = "wk"
GATEWAYS = [f"gw-{n}" for n in range(1, 5)]
PREFIX = "fleet-wk"
PASSWORD = "correct horse battery"
WORKER_LINE = re.compile(r"fleet: worker (\d+) \(pid (\d+)\): MQTT client id")
START_S = 60.0
EXAMPLE = Path(__file__).parents[1] / "gateway" / "examples" / "community.toml"


@dataclass
class Fleet:
    """``fleet serve --workers 2`` and what it printed."""

    proc: subprocess.Popen[bytes]
    out: Path
    url: str

    def workers(self) -> dict[int, list[int]]:
        """Slot → the pids of its worker processes so far, in the order they started."""
        seen: dict[int, list[int]] = {}
        for slot, pid in WORKER_LINE.findall(self.out.read_text(errors="replace")):
            seen.setdefault(int(slot), []).append(int(pid))
        return seen

    def until_started(self, count: dict[int, int], within: float = START_S) -> dict[int, int]:
        """Wait until slot K has started ``count[K]`` workers; slot → its newest pid."""
        deadline = time.monotonic() + within
        while True:
            seen = self.workers()
            if all(len(seen.get(slot, [])) >= n for slot, n in count.items()):
                return {slot: pids[-1] for slot, pids in seen.items()}
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"workers did not start: {self.out.read_text()[-3000:]}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.2)


async def sessions_of_the_workers(
    make: async_sessionmaker[AsyncSession], broker: BrokerUrl
) -> None:
    """Each worker's persistent session, subscribed to the shared group before any worker
    runs: the broker keeps each worker's share from the first message on."""
    for slot in (1, 2):
        ready = asyncio.Event()
        task = asyncio.create_task(
            run_ingest(
                Ingest(make),
                broker,
                client_id=f"{PREFIX}-w{slot}",
                share_group=DEFAULT_SHARE_GROUP,
                ready=ready,
            )
        )
        await asyncio.wait_for(ready.wait(), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def site_document(gateway: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    return text.replace('site = "lianhua-garden"', f'site = "{SITE}"').replace(
        'id = "gw-01"', f'id = "{gateway}"'
    )


async def first_message(
    broker: Mosquitto, topic: str, ask: tuple[str, bytes] | None = None
) -> DesiredConfig:
    """The first desired configuration on ``topic`` (retained or new), as a gateway that has
    just connected sees it; with ``ask``, published once subscribed (the gateway's request)."""
    async with mqtt.Client(HOST, broker.port, identifier="test-gateway") as client:
        await client.subscribe(topic, qos=1)
        if ask is not None:
            await client.publish(*ask, qos=1)
        async with asyncio.timeout(30):
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes) and payload:
                    return wire.decode(DesiredConfig, payload)
    raise AssertionError(f"nothing on {topic}")


def start_fleet(database: str, broker: Mosquitto, directory: Path) -> Fleet:
    port = free_port()
    out = directory / "fleet.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "fleet.cli", "serve", "--workers", "2",
                "--db", database, "--mqtt", f"mqtt://{HOST}:{broker.port}",
                "--mqtt-client-id", PREFIX, "--host", HOST, "--port", str(port),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Fleet(proc, out, f"http://{HOST}:{port}")


async def test_a_worker_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    mosquitto: Mosquitto, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = postgres_server.fresh_database()
    engine = await open_database(database)
    make = sessions(engine)
    async with make.begin() as session:
        for name in GATEWAYS:
            await register_gateway(session, SITE, name)
        await create_user(session, "ada", Role.OPERATOR, PASSWORD)
    await sessions_of_the_workers(make, BrokerUrl(HOST, mosquitto.port))
    fleet = start_fleet(database, mosquitto, tmp_path)
    config = UplinkConfig(
        broker=f"mqtt://{HOST}:{mosquitto.port}",
        batch_interval_s=0.05,
        reconnect_min_s=0.1,
        reconnect_max_s=1.0,
        publish_timeout_s=5.0,
    )
    try:
        first = fleet.until_started({1: 1, 2: 1})
        async with AsyncExitStack() as stack:
            uplinks = [
                await stack.enter_async_context(
                    Uplink(config, site=SITE, gateway=name, state_dir=tmp_path / name)
                )
                for name in GATEWAYS
            ]
            for i in range(300):
                for uplink in uplinks:
                    uplink.on_sample(
                        "meter", "w", Reading(float(i), time.monotonic(), Quality.GOOD)
                    )
                if i == 100:
                    os.kill(first[1], signal.SIGKILL)  # worker 1, in the middle of the stream
                await asyncio.sleep(0.02)
            again = await asyncio.to_thread(fleet.until_started, {1: 2, 2: 1})
            assert (again[1] != first[1], again[2]) == (True, first[2]), fleet.workers()
            for uplink in uplinks:
                await uplink.flush()

            async def sent() -> bool:
                return all(uplink.depth == 0 for uplink in uplinks)

            await until(sent, 60, "every gateway's outbox to empty (the broker acknowledged all)")

        async def stored() -> bool:
            async with make() as s:
                runs = list(
                    await s.execute(
                        select(func.count(), func.max(ReceivedBatch.seq)).group_by(
                            ReceivedBatch.gateway_id, ReceivedBatch.kind
                        )
                    )
                )
                open_gaps = await s.scalar(
                    select(func.count()).select_from(Gap).where(Gap.closed_at.is_(None))
                )
            return len(runs) >= len(GATEWAYS) and all(n == top for n, top in runs) and not open_gaps

        await until(stored, 60, "every batch stored, no gap open")
        async with make() as s:
            per_gateway = {
                (gateway_id, kind): seqs
                for gateway_id, kind, seqs in await s.execute(
                    select(
                        ReceivedBatch.gateway_id,
                        ReceivedBatch.kind,
                        func.array_agg(ReceivedBatch.seq),
                    ).group_by(ReceivedBatch.gateway_id, ReceivedBatch.kind)
                )
            }
            readings = await s.scalar(
                select(func.sum(ReceivedBatch.size)).where(ReceivedBatch.kind == "telemetry")
            )
            samples = await s.scalar(select(func.count()).select_from(Sample))
        assert len({gateway for gateway, _ in per_gateway}) == len(GATEWAYS)
        for key, seqs in per_gateway.items():
            assert sorted(seqs) == list(range(1, len(seqs) + 1)), key
        telemetry = [seqs for (_, kind), seqs in per_gateway.items() if kind == "telemetry"]
        assert min(len(seqs) for seqs in telemetry) >= 20, "the stream spanned the kill"
        assert samples == readings, "every reading of every stored batch once, none twice"

        # Over HTTP, one fleet: a login is valid on either worker (new connection each time),
        # and failed logins are counted together whichever worker answers.
        async with httpx.AsyncClient(base_url=fleet.url, timeout=10) as web:
            login = await web.post("/api/login", json={"name": "ada", "password": PASSWORD})
            assert login.status_code == 200
            cookie = dict(login.cookies)
        answers = []
        for _ in range(10):
            async with httpx.AsyncClient(base_url=fleet.url, cookies=cookie, timeout=10) as one:
                answers.append((await one.get("/api/me")).status_code)
        assert answers == [200] * 10
        guesses = []
        for _ in range(6):
            async with httpx.AsyncClient(base_url=fleet.url, timeout=10) as one:
                wrong = {"name": "ada", "password": "x" * 20}
                guesses.append((await one.post("/api/login", json=wrong)).status_code)
        assert guesses == [401] * 5 + [429]

        # A desired configuration reaches its gateway through whichever worker: published when
        # pushed, and (its retained copy gone, as on a cluster whose node kept it died) sent
        # again when the gateway asks after a reconnect.
        async with make.begin() as session:
            await push(session, SITE, "gw-1", site_document("gw-1"), author="test")
        desired = wire.topic(SITE, "gw-1", wire.Kind.CONFIG_DESIRED)
        assert (await first_message(mosquitto, desired)).version == 1

        async def marked_sent() -> bool:
            async with make() as s:
                return await s.scalar(select(GatewayConfig.sent)) == 1

        await until(marked_sent, 30, "the version marked sent")
        await asyncio.sleep(2.0)  # every worker's delivery round has seen it sent
        async with mqtt.Client(HOST, mosquitto.port, identifier="test-clear") as client:
            await client.publish(desired, b"", qos=1, retain=True)  # the retained copy goes
        request = ConfigRequest(version=None, at=time.time())
        topic = wire.topic(SITE, "gw-1", wire.Kind.CONFIG_REQUEST)
        answer = await first_message(mosquitto, desired, ask=(topic, wire.encode(request)))
        assert (answer.version, answer.document) == (1, site_document("gw-1"))
    finally:
        terminate(fleet.proc, 20)
        await engine.dispose()
    assert fleet.proc.returncode == 0, fleet.out.read_text()[-3000:]
