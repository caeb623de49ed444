"""Getting each gateway its desired version, whatever happened to the broker or the fleet.

The database says what every gateway should run (``gateway_configs.desired``) and which
version was last published to it (``sent``). :class:`Delivery` runs in the fleet server: it
publishes every desired version not yet sent (retained, QoS 1, on ``config/desired``) and
marks it sent — at once when woken by a push, else every ``every_s``. When a gateway asks
(``config/request``, after each of its reconnects) the route marks its desired version to be
sent again, so a gateway that was offline for a week, a broker that lost its retained
messages, or a fleet restarted in between all end with the gateway told. When the broker is
away nothing is marked sent, and the next round tries again.

The gateway's ``config/reported`` is stored by the other route (what it runs, and how the
last desired version went: :func:`fleet.config.versions.record_report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config.tables import ConfigVersion, GatewayConfig
from fleet.config.versions import config_row, record_report, signature_of
from fleet.core.outbound import Outbound
from fleet.ingest.ingest import GatewayRef, Route
from fleet.models import Gateway, Site, utcnow
from gateway import wire
from gateway.wire.config import DesiredConfig, ReportedConfig

log = logging.getLogger(__name__)


def desired_message(version: ConfigVersion) -> bytes:
    return wire.encode(
        DesiredConfig(
            version=version.number,
            sha256=version.sha256,
            document=version.document,
            safety_change=version.safety_change,
            signature=signature_of(version),
            at=version.created_at.timestamp(),
        )
    )


class Delivery:
    """Publishes desired versions not yet sent; :meth:`run` in the server's task group."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbound: Outbound | None,
        *,
        every_s: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.outbound = outbound
        self.every_s = every_s
        self._wake = asyncio.Event()
        self.sent = 0

    def wake(self) -> None:
        """Send now (a push or a request was committed)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # the database away: the next round tries again
                log.exception("fleet: delivering desired configurations failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every_s):
                    await self._wake.wait()
            self._wake.clear()

    async def round(self) -> int:
        """Publish every desired version not yet sent; how many went out."""
        if self.outbound is None:
            return 0
        async with self.sessions() as session:
            rows = await session.execute(
                select(GatewayConfig, ConfigVersion, Site.name, Gateway.name)
                .join(Gateway, Gateway.id == GatewayConfig.gateway_id)
                .join(Site, Site.id == Gateway.site_id)
                .join(
                    ConfigVersion,
                    (ConfigVersion.gateway_id == GatewayConfig.gateway_id)
                    & (ConfigVersion.number == GatewayConfig.desired),
                )
                .where(GatewayConfig.desired.is_not(None))
                .where(
                    (GatewayConfig.sent.is_(None)) | (GatewayConfig.sent != GatewayConfig.desired)
                )
            )
            sent = 0
            for row, version, site, gateway in rows:
                payload = desired_message(version)
                if not await self.outbound.send(
                    site, gateway, wire.Kind.CONFIG_DESIRED, payload, retain=True
                ):
                    break  # the broker is away: all of them again in the next round
                row.sent, row.sent_at = version.number, utcnow()
                sent += 1
            await session.commit()
        self.sent += sent
        return sent


def routes(delivery: Callable[[], Delivery | None]) -> dict[wire.Kind, Route]:
    """Ingest's routes for what gateways say about their configuration; ``delivery()`` is
    the server's :class:`Delivery` (None without a broker)."""

    async def on_request(session: AsyncSession, ref: GatewayRef, message: wire.Payload) -> None:
        row = await config_row(session, ref.id)
        if row.desired is not None:
            row.sent = None  # send it again, whatever was sent before
            running = delivery()
            if running is not None:
                asyncio.get_running_loop().call_later(0.05, running.wake)  # after the commit

    async def on_reported(session: AsyncSession, ref: GatewayRef, message: wire.Payload) -> None:
        assert isinstance(message, ReportedConfig)
        await record_report(session, ref.id, message)

    return {wire.Kind.CONFIG_REQUEST: on_request, wire.Kind.CONFIG_REPORTED: on_reported}
