"""What the fleet sends to this gateway, and the latest word the gateway reports back.

The gateway subscribes only to its own topics (``doorstep/v1/{site}/{gateway}/{kind}``) and
only to the kinds something registered a handler for: desired configuration, OTA commands,
gap-repair requests. Nothing else the broker carries reaches it.

* :meth:`Inbox.handle` registers the one handler of a kind. Handlers are called in arrival
  order on the event loop with the raw payload; they decode it themselves (with
  :func:`gateway.wire.decode`, so a malformed message is refused with a reason) and must
  return quickly — long work (an apply, a download) runs in the handler owner's own task. A
  handler that raises is logged with the topic and the inbox goes on with the next message.
* :meth:`Inbox.report` keeps the latest payload of a kind (configuration status, OTA status)
  and publishes it retained now if connected and again after every reconnect, so the fleet
  always ends up with what the gateway last said, whatever happened to the link in between.
* :meth:`Inbox.on_connect` registers a hook run after every (re)connect once the gateway is
  subscribed — for example to ask the fleet for the desired configuration, which does not
  depend on a retained message surviving a broker fail-over.
* :meth:`Inbox.send` publishes a one-off message (QoS 1, not retained) when connected.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from gateway import wire
from gateway.errors import BrokerError
from gateway.mqtt import Client, Message

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


class Inbox:
    """Fleet → gateway messages by kind, and the gateway's standing reports."""

    def __init__(self, topics: Mapping[wire.Kind, str]) -> None:
        self._topics = dict(topics)
        self._kinds = {topic: kind for kind, topic in self._topics.items()}
        self._handlers: dict[wire.Kind, Handler] = {}
        self._hooks: list[Hook] = []
        self._reports: dict[wire.Kind, bytes] = {}
        self._client: Client | None = None

    # -- registration (at composition, before the uplink starts) -------------------------------

    def handle(self, kind: wire.Kind, handler: Handler) -> None:
        """Call ``handler(payload)`` for every message of ``kind`` sent to this gateway."""
        if kind in self._handlers:
            raise ValueError(f"the inbox already has a handler for {kind.value!r}")
        self._handlers[kind] = handler

    def on_connect(self, hook: Hook) -> None:
        """Run ``hook()`` after every (re)connect, once subscribed."""
        self._hooks.append(hook)

    @property
    def kinds(self) -> frozenset[wire.Kind]:
        return frozenset(self._handlers)

    # -- what the gateway says -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None

    def latest(self, kind: wire.Kind) -> bytes | None:
        """The report of ``kind`` last given to :meth:`report`."""
        return self._reports.get(kind)

    async def report(self, kind: wire.Kind, payload: bytes) -> None:
        """Make ``payload`` the standing report of ``kind``: published retained now when
        connected, and again after every reconnect."""
        self._reports[kind] = payload
        await self._publish(kind, payload, retain=True)

    async def send(self, kind: wire.Kind, payload: bytes) -> bool:
        """Publish a one-off message (QoS 1); False when not connected or it failed."""
        return await self._publish(kind, payload, retain=False)

    async def _publish(self, kind: wire.Kind, payload: bytes, *, retain: bool) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(self._topics[kind], payload, qos=1, retain=retain)
        except BrokerError as exc:
            log.debug("uplink: %s not published (%s); again after the reconnect", kind, exc)
            return False
        return True

    # -- the connection's side (gateway.uplink.connection) -------------------------------------

    async def connected_to(self, client: Client) -> None:
        """A new session: subscribe to the handled kinds, re-publish the standing reports,
        run the connect hooks (a failing hook is logged, the session goes on)."""
        if self._handlers:
            await client.subscribe([(self._topics[kind], 1) for kind in sorted(self._handlers)])
        self._client = client
        for kind, payload in list(self._reports.items()):
            await self._publish(kind, payload, retain=True)
        for hook in self._hooks:
            try:
                await hook()
            except BrokerError:
                raise
            except Exception:
                log.exception("uplink: a connect hook failed (%s)", hook)

    def disconnected(self) -> None:
        self._client = None

    async def dispatch(self, message: Message) -> None:
        """One message from the broker to its handler."""
        topic = message.topic.value
        kind = self._kinds.get(topic)
        handler = None if kind is None else self._handlers.get(kind)
        if handler is None:
            log.warning("uplink: ignored a message on %r: nothing here handles it", topic)
            return
        payload = message.payload
        data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            await handler(data)
        except Exception:
            log.exception("uplink: the handler of %r failed on a %d-byte message", topic, len(data))
