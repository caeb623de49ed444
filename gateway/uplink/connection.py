"""The uplink's connection to the broker, one client at a time.

Connect with a last will (State offline, retained, QoS 1), publish State online (retained),
subscribe to what the fleet may send this gateway and re-publish its standing reports
(:mod:`gateway.uplink.inbox`), then drain the outbox (:mod:`gateway.uplink.drain`) and
publish Health every ``health_interval_s`` until the connection breaks; then reconnect with
jittered exponential back-off (:func:`gateway.mqtt.stay_connected`). Each connection uses a
fresh client, so no message left in paho's queue by a broken connection is re-sent behind
the outbox's back. A lost broker is logged once and its return once; refused credentials at
every attempt, naming the settings to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping

from gateway import wire
from gateway.backoff import EQUAL_JITTER, Backoff
from gateway.errors import BrokerError, OutboxError
from gateway.mqtt import Client, Will, stay_connected
from gateway.uplink.config import UplinkConfig
from gateway.uplink.drain import Drain
from gateway.uplink.inbox import Inbox
from gateway.uplink.payloads import StateMessage

log = logging.getLogger(__name__)


class Connection:
    """Owns the uplink's MQTT client while there is one (:attr:`client`)."""

    def __init__(
        self,
        config: UplinkConfig,
        *,
        client_id: str,
        topics: Mapping[wire.Kind, str],
        state: StateMessage,
        drain: Drain,
        inbox: Inbox,
        health: Callable[[], Awaitable[wire.Health]],
        password: str | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self._topics = topics
        self._state = state
        self._drain = drain
        self._inbox = inbox
        self._health = health
        self._password = password
        self._tls = tls
        self.client: Client | None = None

    async def run(self) -> None:
        """Stay connected until cancelled."""
        cfg = self.config
        await stay_connected(
            self._new_client,
            self._session,
            _Log(cfg.broker, self.client_id, cfg.username),
            Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, jitter=EQUAL_JITTER),
            steady_s=cfg.reconnect_max_s,
            retry_on=(OutboxError,),
        )

    async def say_offline(self) -> None:
        """On a clean shutdown the broker does not publish the will: wait for the drain to
        empty the outbox, then say offline ourselves (the caller bounds the wait)."""
        client = self.client
        if client is None:
            return
        await self._drain.emptied()
        with contextlib.suppress(BrokerError):
            await client.publish(
                self._topics[wire.Kind.STATE], self._state.payload("offline"), qos=1, retain=True
            )

    def _new_client(self) -> Client:
        cfg = self.config
        client = Client(
            cfg.host,
            cfg.port,
            identifier=self.client_id,
            username=cfg.username,
            password=self._password,
            will=Will(
                self._topics[wire.Kind.STATE], self._state.payload("offline"), qos=1, retain=True
            ),
            clean_session=True,
            keepalive=cfg.keepalive,
            timeout=cfg.publish_timeout_s,
            tls_context=self._tls,
            max_inflight_messages=cfg.window,
        )
        client.pending_calls_threshold = cfg.window + 10
        return client

    async def _session(self, client: Client) -> None:
        self.client = client
        try:
            await client.publish(
                self._topics[wire.Kind.STATE], self._state.payload("online"), qos=1, retain=True
            )
            await self._inbox.connected_to(client)
            async with asyncio.TaskGroup() as group:
                group.create_task(_watch(client, self._inbox), name="uplink:inbox")
                group.create_task(self._drain.run(client), name="uplink:drain")
                group.create_task(self._publish_health(client), name="uplink:health")
        finally:
            self.client = None
            self._inbox.disconnected()

    async def _publish_health(self, client: Client) -> None:
        while True:
            health = await self._health()
            await client.publish(self._topics[wire.Kind.HEALTH], wire.encode(health), qos=1)
            await asyncio.sleep(self.config.health_interval_s)


async def _watch(client: Client, inbox: Inbox) -> None:
    """Hand what the fleet sends to the inbox; raise BrokerError as soon as the connection
    drops (the iterator only ends that way), which cancels publishes waiting for a PUBACK."""
    async for message in client.messages:
        await inbox.dispatch(message)


class _Log:
    """The uplink's words for :func:`gateway.mqtt.stay_connected`."""

    def __init__(self, where: str, client_id: str, username: str | None) -> None:
        self.where = where
        self.client_id = client_id
        self.username = username

    def connected(self, outage_s: float | None) -> None:
        after = "" if outage_s is None else f" after {outage_s:.1f} s"
        log.info("uplink: connected to %s as %s%s", self.where, self.client_id, after)

    def unavailable(self, error: Exception, *, was_connected: bool) -> None:
        if _refused(error):
            self._refused(error)
        elif was_connected:
            log.warning(
                "uplink: lost %s (%s); the outbox keeps everything, reconnecting",
                self.where,
                error,
            )
        else:
            log.warning("uplink: cannot reach %s (%s); retrying with back-off", self.where, error)

    def still_unavailable(self, error: Exception) -> None:
        if _refused(error):
            self._refused(error)
        else:
            log.debug("uplink: %s still unreachable (%s)", self.where, error)

    def _refused(self, error: Exception) -> None:
        log.error(
            "uplink: %s refused the credentials of %s (%s): check uplink.username "
            "and uplink.password / password_file; the outbox keeps everything",
            self.where,
            self.username or "an anonymous client",
            error,
        )


def _refused(error: Exception) -> bool:
    return isinstance(error, BrokerError) and error.refused_credentials
