"""The rollout driver: every running rollout, once a second, through the engine.

For each running rollout, in one transaction: take the rollout's advisory lock (PostgreSQL's
``pg_try_advisory_xact_lock``: with several fleet workers exactly one drives a rollout at a
time, and another takes over the moment that one's transaction or process ends; SQLite is the
one-process embedded default and needs none), load its state, resolve its target set, feed
the engine every commanded gateway's OTA status, let it decide, record an ``ota/command`` per
install (:func:`fleet.releases.commands.command_release`), store the state back. Only after
the commit are the commands published (best effort: a gateway whose command was lost asks for
it again with its next status, :func:`fleet.releases.commands.status_route`). A fleet restart
resumes every rollout exactly where its last transaction left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config.bulk import Selection, selected
from fleet.core.outbound import Outbound
from fleet.models import Gateway, Site, utcnow
from fleet.releases.commands import command_release, latest_command
from fleet.releases.tables import GatewayOta, Release
from fleet.rollouts import engine
from fleet.rollouts.service import Publish, label, save, sites_of
from fleet.rollouts.tables import RolloutRecord
from gateway import wire

log = logging.getLogger(__name__)

TICK_S = 1.0
#: the advisory lock space of rollouts (a rollout's lock is this and its id)
LOCK_CLASS = zlib.crc32(b"doorstep.rollouts") & 0x7FFFFFFF


class RolloutDriver:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbound: Callable[[], Outbound | None],
        *,
        tick_s: float = TICK_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.sessions = sessions
        self.outbound = outbound
        self.tick_s = tick_s
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Decide now (a rollout was created, resumed, or a report came in)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("rollouts: a step failed; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)

    async def step(self) -> int:
        """One pass over the running rollouts; how many install commands went out."""
        async with self.sessions() as session:
            ids = list(
                await session.scalars(
                    select(RolloutRecord.id).where(RolloutRecord.status == "running")
                )
            )
        sent = 0
        for rollout_id in ids:
            publishes = await self._drive(rollout_id)
            sent += len(publishes)
            await self.publish(publishes)
        return sent

    async def publish(self, publishes: list[Publish]) -> None:
        """Send recorded commands (best effort: see the module's docstring)."""
        sender = self.outbound()
        if sender is None:
            return
        for p in publishes:
            await sender.send(p.site, p.gateway, wire.Kind.OTA_COMMAND, p.payload, retain=True)

    async def _drive(self, rollout_id: int) -> list[Publish]:
        async with self.sessions.begin() as session:
            if not await _locked(session, rollout_id):
                return []  # another worker drives it
            record = await session.get(RolloutRecord, rollout_id)
            if record is None or record.status != "running":
                return []
            release = await session.get(Release, record.release_id)
            assert release is not None  # RESTRICT: a release with rollouts is never deleted
            decisions = engine.Engine(engine.from_json(record.state))
            gateways = await selected(session, Selection(**record.selection))
            rows = {label(s, g): (s, g) for s, g in gateways}
            await self._feed_reports(session, decisions, rows, release)
            now = utcnow()
            targets = await sites_of(session, gateways, release, now)
            was = decisions.rollout.status
            commands = decisions.tick(self._now(now.timestamp()), targets)
            publishes = []
            for command in commands:
                site, name = rows[command.gateway]
                gateway = await _gateway(session, site, name)
                sent = await command_release(
                    session, f"rollout:{record.name}", gateway, release, record.base_url
                )
                publishes.append(Publish(site, name, sent.payload))
            if was is engine.Status.RUNNING and decisions.rollout.status is not was:
                log.warning(
                    "rollout %s: %s%s",
                    record.name,
                    decisions.rollout.status.value,
                    f" ({decisions.rollout.reason})" if decisions.rollout.reason else "",
                )
            save(record, decisions.rollout)
        return publishes

    async def _feed_reports(
        self,
        session: AsyncSession,
        decisions: engine.Engine,
        rows: dict[str, tuple[str, str]],
        release: Release,
    ) -> None:
        for member in decisions.rollout.members.values():
            if member.progress is not engine.Progress.COMMANDED or member.gateway not in rows:
                continue
            gateway = await _gateway(session, *rows[member.gateway])
            command = await latest_command(session, gateway.id)
            if command is None or command.release_id != release.id:
                continue
            ota = await session.get(GatewayOta, gateway.id)
            running = ota.running_version if ota is not None else ""
            decisions.report(member.gateway, command.state, running, command.reason)

    def _now(self, wall: float) -> float:
        return self._clock() if self._clock is not None else wall


async def _gateway(session: AsyncSession, site: str, name: str) -> Gateway:
    gateway = await session.scalar(
        select(Gateway).join(Gateway.site).where(Site.name == site, Gateway.name == name)
    )
    assert gateway is not None, f"{site}/{name} was selected in this transaction"
    return gateway


async def _locked(session: AsyncSession, rollout_id: int) -> bool:
    """This transaction holds the rollout's advisory lock (always on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    got = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:a, :b)"), {"a": LOCK_CLASS, "b": rollout_id}
    )
    return bool(got)
