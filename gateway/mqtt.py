"""MQTT for the gateway's uplink and the fleet's ingest: the one module that imports aiomqtt
or paho.

* :class:`Client`: aiomqtt's client with one race of aiomqtt 2.5.1 closed, every aiomqtt/paho
  error translated into :class:`gateway.errors.BrokerError` (:func:`broker_error`), and
  manual acknowledgements (paho's, which aiomqtt 2.5.1 has no option for). Use it wherever
  aiomqtt.Client would be used (the uplink, the ingest, tests' subscribers).
* :func:`stay_connected`: the one reconnect loop. aiomqtt 2 has no reconnect of its own:
  connect, run a session until the connection breaks, say so once when it is lost and once
  when it is back, wait a :class:`gateway.backoff.Backoff`, again.
* :data:`Message` and :data:`Will`: aiomqtt's, for type annotations and the last will.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.types import PayloadType, SubscribeTopic
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.backoff import Backoff
from gateway.errors import BrokerError

__all__ = [
    "REFUSED_CREDENTIALS",
    "Client",
    "ConnectionLog",
    "Message",
    "Will",
    "broker_error",
    "stay_connected",
]

Message = aiomqtt.Message
Will = aiomqtt.Will
C = TypeVar("C")

#: CONNACK codes of refused credentials: MQTT 3.1.1 (4, 5) and MQTT 5 (134, 135)
REFUSED_CREDENTIALS = (4, 5, 134, 135)


def broker_error(exc: aiomqtt.MqttError) -> BrokerError:
    """The :class:`BrokerError` for an aiomqtt/paho error, with the same message; it says
    whether the broker refused our username/password (or our certificate)."""
    refused = isinstance(exc, aiomqtt.MqttCodeError) and exc.rc in REFUSED_CREDENTIALS
    return BrokerError(str(exc), refused_credentials=refused)


# -- the client ------------------------------------------------------------------------------


class Client(aiomqtt.Client):
    """aiomqtt 2.5.1's client, its write registration made safe against a closed socket and
    its errors raised as :class:`BrokerError` (connecting, disconnecting, publishing,
    (un)subscribing, iterating :attr:`messages`).

    The race: paho asks for write readiness (``on_socket_register_write``) whenever it queues
    a packet; aiomqtt defers ``loop.add_writer(fd)`` with ``call_soon_threadsafe``. When the
    connection drops in the same loop iteration (the reader sees EOF, or a disconnect), paho
    closes the socket first and the deferred ``add_writer`` then fails with "Bad file
    descriptor" in the event loop's exception handler; worse, if the fd number was reused
    meanwhile (a Modbus TCP socket, the next broker connection), it installs the dead
    client's writer on someone else's file descriptor, which then spins. Here the
    registration happens only if the socket is still the client's current one when the loop
    gets to it.
    """

    async def __aenter__(self) -> Self:
        try:
            return await super().__aenter__()
        except aiomqtt.MqttError as exc:
            raise broker_error(exc) from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        except aiomqtt.MqttError as error:
            raise broker_error(error) from error

    async def publish(
        self,
        /,
        topic: str,
        payload: PayloadType = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (aiomqtt's own signature)
        **kwargs: Any,
    ) -> None:
        try:
            await super().publish(
                topic, payload, qos, retain, properties, *args, timeout=timeout, **kwargs
            )
        except aiomqtt.MqttError as exc:
            raise broker_error(exc) from exc

    async def subscribe(
        self,
        /,
        topic: SubscribeTopic,
        qos: int = 0,
        options: SubscribeOptions | None = None,
        properties: Properties | None = None,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (aiomqtt's own signature)
        **kwargs: Any,
    ) -> tuple[int, ...] | list[ReasonCode]:
        try:
            return await super().subscribe(
                topic, qos, options, properties, *args, timeout=timeout, **kwargs
            )
        except aiomqtt.MqttError as exc:
            raise broker_error(exc) from exc

    async def unsubscribe(
        self,
        /,
        topic: str | list[str],
        properties: Properties | None = None,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (aiomqtt's own signature)
        **kwargs: Any,
    ) -> None:
        try:
            await super().unsubscribe(topic, properties, *args, timeout=timeout, **kwargs)
        except aiomqtt.MqttError as exc:
            raise broker_error(exc) from exc

    @property
    def messages(self) -> aiomqtt.MessagesIterator:
        """The received messages; iterating raises :class:`BrokerError` when the connection
        drops."""
        return _Messages(self)

    def acknowledge_manually(self) -> None:
        """Acknowledge a received QoS 1 message only when :meth:`ack` is called, not on
        arrival. Call it before connecting: a persistent session's messages come right
        after the CONNACK."""
        self._client.manual_ack_set(True)

    def ack(self, message: Message) -> None:
        """Acknowledge (PUBACK) a message received with :meth:`acknowledge_manually` on."""
        self._client.ack(message.mid, message.qos)

    def _on_socket_register_write(
        self,
        client: paho.Client,
        userdata: Any,
        sock: Any,
    ) -> None:
        def writable() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # aiomqtt's own rule: any error means the connection is gone
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            current = client.socket()
            if current is not None and current is sock:
                self._loop.add_writer(current.fileno(), writable)

        # paho calls this from the loop's own thread on every publish (aiomqtt runs paho's
        # I/O there): plain call_soon then, which does not write to the loop's self-pipe.
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # another thread
            on_loop = False
        if on_loop:
            self._loop.call_soon(register)
        else:
            self._loop.call_soon_threadsafe(register)


class _Messages(aiomqtt.MessagesIterator):
    """aiomqtt's message iterator, raising :class:`BrokerError` on a lost connection."""

    async def __anext__(self) -> Message:
        try:
            return await super().__anext__()
        except aiomqtt.MqttError as exc:
            raise broker_error(exc) from exc


# -- the reconnect loop ----------------------------------------------------------------------


class ConnectionLog(Protocol):
    """What the owner of a reconnect loop says about its connection, in its own words.

    :func:`stay_connected` calls :meth:`unavailable` once per outage (the first failed
    attempt), :meth:`still_unavailable` for every further one, and :meth:`connected` when
    a connection is up."""

    def connected(self, outage_s: float | None) -> None:
        """Connected; ``outage_s``: how long there was no connection (from the loss, or from
        the start), or None for a first connection that nothing failed before."""

    def unavailable(self, error: Exception, *, was_connected: bool) -> None:
        """The first failed attempt of an outage: a connection that was up broke
        (``was_connected``), or none could be made."""

    def still_unavailable(self, error: Exception) -> None:
        """Another failed attempt in the same outage."""


async def stay_connected(
    connect: Callable[[], AbstractAsyncContextManager[C]],
    session: Callable[[C], Awaitable[None]],
    log: ConnectionLog,
    backoff: Backoff,
    *,
    steady_s: float = 0.0,
    retry_on: tuple[type[Exception], ...] = (),
) -> NoReturn:
    """Forever (until cancelled): enter ``connect()``, run ``session`` on what it gives until
    the connection breaks (:class:`BrokerError`, or one of ``retry_on``, which a session's
    task group may wrap), wait ``backoff.next()``, again. The back-off starts from its
    first step again after a connection that held for ``steady_s``. Any other error ends
    the loop."""
    breaks: tuple[type[Exception], ...] = (BrokerError, *retry_on)
    down_since: float | None = time.monotonic()
    reported = False  # the current outage was reported (log.unavailable)
    while True:
        connected_at = None
        try:
            async with connect() as connection:
                connected_at = time.monotonic()
                outage = None
                if reported and down_since is not None:
                    outage = connected_at - down_since
                log.connected(outage)
                down_since, reported = None, False
                await session(connection)
        except* breaks as group:
            error = _first(group)
            if reported:
                log.still_unavailable(error)
            else:
                log.unavailable(error, was_connected=connected_at is not None)
                reported = True
            if down_since is None:
                down_since = time.monotonic()
        if connected_at is not None and time.monotonic() - connected_at >= steady_s:
            backoff.reset()
        await asyncio.sleep(backoff.next())


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first error in a (possibly nested: task groups in task groups) exception group."""
    error: Exception | BaseExceptionGroup[Exception] = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
