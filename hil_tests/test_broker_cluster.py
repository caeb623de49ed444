"""Doorstep on a clustered broker: a three-node RabbitMQ cluster (MQTT plugin, durable sessions
on quorum queues) on loopback, the fleet's ingest on PostgreSQL through one node, a gateway's
uplink through another. The node that leads the fleet's queue is killed in the middle of the
stream: every batch the gateway sent is stored exactly once and no gap is left open. A desired
configuration reaches a gateway connected through another node than the fleet, although the
cluster keeps a retained message on the node it was published through only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fleet.config.delivery import Delivery
from fleet.config.delivery import routes as config_routes
from fleet.config.tables import GatewayConfig
from fleet.config.versions import push
from fleet.core.broker import BrokerUrl
from fleet.core.db import open_database, sessions
from fleet.core.outbound import Outbound
from fleet.ingest.ingest import Ingest
from fleet.ingest.pipeline import run_ingest
from fleet.models import Gap, ReceivedBatch
from fleet.registry import register_gateway
from gateway import mqtt, wire
from gateway.image import Quality, Sample
from gateway.uplink.config import UplinkConfig
from gateway.uplink.link import Uplink
from gateway.wire.config import ConfigRequest, DesiredConfig
from hil_tests.postgres import PostgresServer
from hil_tests.rabbitmq import RabbitCluster

pytestmark = [pytest.mark.hil, pytest.mark.fleet]

SITE, GW = "s1", "gw-1"
CLIENT_ID = "fleet-cluster-test"
EXAMPLE = Path(__file__).parents[1] / "gateway" / "examples" / "community.toml"


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


def site_document(gateway: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    return text.replace('site = "lianhua-garden"', f'site = "{SITE}"').replace(
        'id = "gw-01"', f'id = "{gateway}"'
    )


async def desired_seen(
    port: int, topic: str, within: float, ask: tuple[str, bytes] | None = None
) -> DesiredConfig | None:
    """The first desired configuration a gateway connected to ``port`` sees on ``topic``
    (retained or new) within ``within`` seconds; with ``ask``, its request published once
    subscribed."""
    async with mqtt.Client("127.0.0.1", port, identifier=f"gw-probe-{port}") as client:
        await client.subscribe(topic, qos=1)
        if ask is not None:
            await client.publish(*ask, qos=1)
        try:
            async with asyncio.timeout(within):
                async for message in client.messages:
                    if isinstance(message.payload, bytes) and message.payload:
                        return wire.decode(DesiredConfig, message.payload)
        except TimeoutError:
            return None
    return None


async def test_a_desired_configuration_reaches_a_gateway_on_another_node_by_its_request(
    cluster: RabbitCluster, postgres_server: PostgresServer
) -> None:
    fleet_node, gateway_node = [node for node in cluster.nodes if node.running][:2]
    engine = await open_database(postgres_server.fresh_database())
    make = sessions(engine)
    async with make.begin() as session:
        await register_gateway(session, SITE, "gw-2")
    fleet_broker = BrokerUrl("127.0.0.1", fleet_node.mqtt_port)
    outbound = Outbound(fleet_broker, client_id="fleet-cluster-out")
    delivery = Delivery(make, outbound, every_s=0.2)
    ingest = Ingest(make, routes=config_routes(lambda: delivery))
    ready = asyncio.Event()
    tasks = [
        asyncio.create_task(outbound.run()),
        asyncio.create_task(delivery.run()),
        asyncio.create_task(
            run_ingest(ingest, fleet_broker, client_id=f"{CLIENT_ID}-2", ready=ready)
        ),
    ]
    desired = wire.topic(SITE, "gw-2", wire.Kind.CONFIG_DESIRED)
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with make.begin() as session:
            await push(session, SITE, "gw-2", site_document("gw-2"), author="test")
        delivery.wake()

        async def sent() -> bool:
            async with make() as s:
                return await s.scalar(select(GatewayConfig.sent)) == 1

        await until(sent, 30, "the desired version published (retained) through the fleet's node")
        # the fleet's node keeps the retained copy; a gateway on the other node does not see it
        assert await desired_seen(fleet_node.mqtt_port, desired, 10) is not None
        assert await desired_seen(gateway_node.mqtt_port, desired, 2) is None, (
            "RabbitMQ now shares retained messages across nodes: this test no longer shows "
            "that a gateway's request alone brings its configuration"
        )
        # its request after connecting reaches the fleet's durable queue and brings it
        request = wire.topic(SITE, "gw-2", wire.Kind.CONFIG_REQUEST)
        asked = ConfigRequest(version=None, at=time.time())
        answer = await desired_seen(
            gateway_node.mqtt_port, desired, 20, ask=(request, wire.encode(asked))
        )
        assert answer is not None, "the request brought the desired configuration"
        assert (answer.version, answer.document) == (1, site_document("gw-2"))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()
