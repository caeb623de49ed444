"""Messages from the fleet to gateways: desired configuration, OTA commands, repair requests.

:class:`Outbound` keeps its own MQTT connection (a clean session, client id
``{ingest client id}-out``), apart from ingest's persistent session, so a slow ingest never
delays a command and a command never waits behind a backlog of telemetry. It reconnects with
the same bounded back-off as ingest (:func:`gateway.mqtt.stay_connected`).

Delivery is best effort by design: :meth:`Outbound.send` returns False when the broker is
away. What must reach a gateway (its desired configuration, the OTA command of a rollout)
lives in the database, and the gateway asks for it after every reconnect
(:mod:`gateway.uplink.inbox`), so nothing depends on this connection being up at the moment
an operator acts, nor on retained messages surviving a broker fail-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fleet.core.broker import BrokerUrl
from gateway import mqtt, wire
from gateway.backoff import EQUAL_JITTER, Backoff
from gateway.errors import BrokerError

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
TIMEOUT_S = 10.0


class Outbound:
    """Publish to one gateway's topics; ``async with`` or :meth:`run` in a task."""

    def __init__(self, broker: BrokerUrl, *, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self._client: mqtt.Client | None = None
        self.connected = asyncio.Event()

    async def send(
        self, site: str, gateway: str, kind: wire.Kind, payload: bytes, *, retain: bool = False
    ) -> bool:
        """Publish ``payload`` on the gateway's topic of ``kind`` (QoS 1); False when the
        broker is not reachable now or refused it."""
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(wire.topic(site, gateway, kind), payload, qos=1, retain=retain)
        except BrokerError as exc:
            log.warning("fleet: could not send %s to %s/%s (%s)", kind.value, site, gateway, exc)
            return False
        return True

    async def run(self) -> None:
        """Stay connected until cancelled."""
        await mqtt.stay_connected(
            self._new_client,
            self._session,
            _Log(self.broker),
            Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S, jitter=EQUAL_JITTER),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Outbound]:
        """Run in a background task for the duration of the block."""
        task = asyncio.create_task(self.run(), name="fleet-outbound")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _new_client(self) -> mqtt.Client:
        return mqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            clean_session=True,
            keepalive=30,
            timeout=TIMEOUT_S,
            **self.broker.client_options(),
        )

    async def _session(self, client: mqtt.Client) -> None:
        self._client = client
        self.connected.set()
        try:
            async for _ in client.messages:  # ends (BrokerError) when the connection drops
                pass
        finally:
            self._client = None
            self.connected.clear()


class _Log:
    def __init__(self, broker: BrokerUrl) -> None:
        self.broker = broker

    def connected(self, outage_s: float | None) -> None:
        if outage_s is not None:
            log.info("fleet: commands to gateways flow again via %s", self.broker)

    def unavailable(self, error: Exception, *, was_connected: bool) -> None:
        log.warning(
            "fleet: cannot send to gateways via %s (%s); they catch up when it is back",
            self.broker,
            error,
        )

    def still_unavailable(self, error: Exception) -> None:
        pass
