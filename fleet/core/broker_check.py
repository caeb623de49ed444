"""Whether the fleet's broker drops queued messages, as far as the fleet can see it.

A broker may acknowledge a gateway's batch and drop it later: mosquitto keeps at most
``max_queued_messages`` (1000 unless told otherwise) for a client that is away, such as the
fleet while it restarts, and without ``persistence`` loses everything queued when it restarts
itself. Gap repair fetches such batches from the gateways again while they still keep them
(docs/wire.md); what is dropped for longer is lost. So the fleet reads mosquitto's own count
of dropped messages, :data:`DROPPED` (a ``$SYS`` topic, brought up to date every
``sys_interval``, 10 s), for as long as it runs:

* above 0 when the fleet starts: a WARNING naming the settings that matter and the page that
  tells them (:data:`DOCS`); again whenever it grows, at most every :data:`WARN_EVERY_S`;
* the number, in ``/metrics`` (``doorstep_fleet_broker_dropped_messages``; NaN while the
  broker has told nothing: the embedded broker, a broker without ``$SYS``, or an ACL that
  hides it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fleet.core.broker import BrokerUrl
from fleet.core.metrics import FleetMetrics
from gateway import mqtt
from gateway.backoff import EQUAL_JITTER, Backoff

log = logging.getLogger(__name__)

#: mosquitto's count of messages it dropped since it started (queue and inflight limits)
DROPPED = "$SYS/broker/publish/messages/dropped"
DOCS = "docs/operations.md, 'Broker'"
#: a broker that keeps dropping is not said more often than this
WARN_EVERY_S = 600.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 5.0, 300.0
#: the watch says nothing of its own connection: ingest says when the broker is away
QUIET = logging.getLogger(f"{__name__}.paho")
QUIET.setLevel(logging.CRITICAL)


def warning(broker: BrokerUrl, dropped: int, since: int | None) -> str:
    """What a person reads: the broker, the count, the settings and the page."""
    grew = "" if since is None else f" ({dropped - since} more since the fleet last said so)"
    return (
        f"the MQTT broker {broker} has dropped {dropped} queued messages since it started"
        f"{grew} ({DROPPED}): a gateway's batches the broker acknowledged and then dropped come "
        f"back only through gap repair, while the gateway still keeps them. On mosquitto set "
        f"max_queued_messages 0 (no limit; or well above what gateways send while the fleet is "
        f"away) and persistence true: see {DOCS}"
    )


class DropWatch:
    """The broker's drop counter as it arrives: :meth:`seen` for each value."""

    def __init__(
        self,
        broker: BrokerUrl,
        metrics: FleetMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self.clock = clock
        #: the count last said in a warning, and when
        self.said: int | None = None
        self.said_at = -math.inf
        self.last: int | None = None

    def seen(self, payload: bytes) -> None:
        """One value of :data:`DROPPED` (a decimal count; anything else is ignored)."""
        try:
            dropped = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            log.debug("broker check: %s is not a count: %r", DROPPED, payload[:40])
            return
        self.metrics.broker_dropped.set(dropped)
        if self.last is not None and dropped < self.last:
            self.said = None  # the broker restarted: its count starts again
        self.last = dropped
        grown = dropped > (self.said or 0)
        if grown and self.clock() - self.said_at >= WARN_EVERY_S:
            log.warning(warning(self.broker, dropped, self.said))
            self.said, self.said_at = dropped, self.clock()

    async def run(self, client_id: str) -> None:
        """Subscribe to :data:`DROPPED` (a clean session of ``client_id``) and feed
        :meth:`seen` until cancelled, connecting again whenever the broker is back."""

        @asynccontextmanager
        async def subscribed() -> AsyncIterator[mqtt.Client]:
            client = mqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier=client_id,
                clean_session=True,
                keepalive=60,
                logger=QUIET,
                **self.broker.client_options(),
            )
            async with client:
                await client.subscribe(DROPPED, qos=0)
                yield client

        async def session(client: mqtt.Client) -> None:
            async for message in client.messages:
                payload = message.payload
                self.seen(payload if isinstance(payload, bytes) else str(payload).encode())

        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S, jitter=EQUAL_JITTER)
        await mqtt.stay_connected(subscribed, session, _Silent(), backoff)


class _Silent:
    """Ingest already says when the broker is away."""

    def connected(self, outage_s: float | None) -> None:
        pass

    def unavailable(self, error: Exception, *, was_connected: bool) -> None:
        log.debug("broker check: broker unavailable (%s)", error)

    def still_unavailable(self, error: Exception) -> None:
        pass
