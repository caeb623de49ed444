"""Doorstep on a clustered broker: a three-node RabbitMQ cluster (MQTT plugin, durable sessions
on quorum queues) on loopback, the fleet's ingest on PostgreSQL through one node, a gateway's
uplink through another. The node that leads the fleet's queue is killed in the middle of the
stream: every batch the gateway sent is stored exactly once and no gap is left open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fleet.core.broker import BrokerUrl
from fleet.core.db import open_database, sessions
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.models import Gap, ReceivedBatch
from fleet.registry import register_gateway
from gateway.image import Quality, Sample
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from hil_tests.postgres import PostgresServer
from hil_tests.rabbitmq import RabbitCluster

pytestmark = [pytest.mark.hil, pytest.mark.fleet]

SITE, GW = "s1", "gw-1"
CLIENT_ID = "fleet-cluster-test"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    with RabbitCluster() as running:
        yield running


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.2)


async def subscribed_once(ingest: Ingest, broker: BrokerUrl) -> None:
    """Run ingest until subscribed, then stop: its durable session (and queue) stay."""
    ready = asyncio.Event()
    task = asyncio.create_task(run_ingest(ingest, broker, client_id=CLIENT_ID, ready=ready))
    await asyncio.wait_for(ready.wait(), 30)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_killing_the_node_that_leads_the_fleets_queue_loses_no_acknowledged_batch(
    cluster: RabbitCluster, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    first, second, third = cluster.nodes
    engine = await open_database(postgres_server.fresh_database())
    make = sessions(engine)
    async with make.begin() as session:
        await register_gateway(session, SITE, GW)
    ingest = Ingest(make)
    # The fleet's queue is declared through the third node, so it leads it (client-local
    # placement); the fleet then reads through the first node and the gateway publishes
    # through the second, and the node that dies is neither's connection.
    await subscribed_once(ingest, BrokerUrl("127.0.0.1", third.mqtt_port))
    leaders = cluster.queue_leaders()
    assert [q for q, node in leaders.items() if CLIENT_ID in q and node == third.name], leaders
    ready = asyncio.Event()
    feeding = asyncio.create_task(
        run_ingest(
            ingest, BrokerUrl("127.0.0.1", first.mqtt_port), client_id=CLIENT_ID, ready=ready
        )
    )
    config = UplinkConfig(
        broker=f"mqtt://127.0.0.1:{second.mqtt_port}",
        batch_interval_s=0.05,
        reconnect_min_s=0.1,
        reconnect_max_s=1.0,
        publish_timeout_s=5.0,
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with Uplink(config, site=SITE, gateway=GW, state_dir=tmp_path / "gw") as uplink:
            for i in range(300):
                uplink.on_sample("meter", "w", Sample(float(i), time.monotonic(), Quality.GOOD))
                if i == 120:
                    cluster.kill(third)
                await asyncio.sleep(0.02)
            await uplink.flush()

            async def sent() -> bool:
                return uplink.depth == 0

            await until(sent, 60, "the gateway's outbox to empty")

        async def stored() -> bool:
            async with make() as s:
                count = await s.scalar(select(func.count()).select_from(ReceivedBatch))
                top = await s.scalar(select(func.max(ReceivedBatch.seq)))
                return (
                    bool(top)
                    and count == top
                    and await s.scalar(
                        select(func.count()).select_from(Gap).where(Gap.closed_at.is_(None))
                    )
                    == 0
                )

        await until(stored, 60, "every batch stored once, no gap open")
        async with make() as s:
            seqs = list(await s.scalars(select(ReceivedBatch.seq).order_by(ReceivedBatch.seq)))
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= 5, "the stream was long enough to span the node's death"
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        await engine.dispose()
