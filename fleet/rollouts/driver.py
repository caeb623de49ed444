"""The rollout driver: every running rollout, once a second, through the engine.

For each running rollout, in one transaction: take the rollout's advisory lock (PostgreSQL's
``pg_try_advisory_xact_lock``: with several fleet workers exactly one drives a rollout at a
time, and another takes over the moment that one's transaction or process ends; SQLite is the
one-process embedded default and needs none), load its state, resolve its target set, feed
the engine every commanded gateway's OTA status, let it decide, record an ``ota/command`` per
install (:func:`fleet.releases.commands.command_release`), store the state back — unless an
operator's action (pause, abort, from any process) changed the rollout since the step read it:
then the step records nothing and the next one decides on the new state. Only after
the commit are the commands published (best effort: a gateway whose command was lost asks for
it again with its next status, :func:`fleet.releases.commands.status_route`). A fleet restart
resumes every rollout exactly where its last transaction left it.

The driver does not wait for its tick when a gateway's update ends: ingest's ``ota/status``
route, wrapped by :func:`waking`, wakes it on a committed, rolled-back, failed or cancelled
status, and it steps ``settle_s`` later (time for that status's transaction to commit, and for
a burst of reports to be taken in one step), so the next phase starts well within the
two seconds a phase change may take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.config.bulk import Selection, selected
from fleet.core.outbound import Outbound
from fleet.ingest.ingest import GatewayRef, Route
from fleet.models import Gateway, Site, utcnow
from fleet.releases.commands import command_release
from fleet.releases.tables import GatewayOta, OtaCommand, Release
from fleet.rollouts import engine
from fleet.rollouts.service import Publish, label, save, sites_of
from fleet.rollouts.tables import RolloutRecord
from gateway import wire
from gateway.wire.ota import FINAL, OtaStatus

log = logging.getLogger(__name__)

TICK_S = 1.0
#: after a wake, this long before the step (the waking status's transaction commits meanwhile)
SETTLE_S = 0.25
#: the advisory lock space of rollouts (a rollout's lock is this and its id)
LOCK_CLASS = zlib.crc32(b"doorstep.rollouts") & 0x7FFFFFFF


class RolloutDriver:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbound: Callable[[], Outbound | None],
        *,
        tick_s: float = TICK_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.sessions = sessions
        self.outbound = outbound
        self.tick_s = tick_s
        self.settle_s = settle_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Decide now (a rollout was created, resumed, or a gateway's update ended)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()  # a wake during the step brings the next one forward
            try:
                await self.step()
            except Exception:
                log.exception("rollouts: a step failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
                await asyncio.sleep(self.settle_s)

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
            ids = await _gateway_ids(session, gateways)
            await _feed_reports(session, decisions, ids, release)
            now = utcnow()
            targets = await sites_of(session, gateways, release, now)
            was = decisions.rollout.status
            commands = decisions.tick(now.timestamp(), targets)
            if not await _claim(session, record):
                return []  # an operator's action came in since it was read: decide again
            publishes = []
            rows = await _gateway_rows(session, [ids[c.gateway][1] for c in commands])
            for command in commands:
                site, gateway_id = ids[command.gateway]
                gateway = rows[gateway_id]
                sent = await command_release(
                    session, f"rollout:{record.name}", gateway, release, record.base_url
                )
                publishes.append(Publish(site, gateway.name, sent.payload))
            if was is engine.Status.RUNNING and decisions.rollout.status is not was:
                log.warning(
                    "rollout %s: %s%s",
                    record.name,
                    decisions.rollout.status.value,
                    f" ({decisions.rollout.reason})" if decisions.rollout.reason else "",
                )
            save(record, decisions.rollout)
        return publishes


def waking(route: Route, driver: Callable[[], RolloutDriver | None]) -> Route:
    """Ingest's ``ota/status`` route that also wakes the rollout driver (``driver()``: the
    fleet's, None before it starts) when a gateway's update has ended, so the phase it may
    complete advances now rather than at the next tick."""

    async def route_(session: AsyncSession, gateway: GatewayRef, message: wire.Payload) -> None:
        await route(session, gateway, message)
        final = isinstance(message, OtaStatus) and message.state in FINAL
        if final and (running := driver()) is not None:
            running.wake()

    return route_


async def _gateway_ids(
    session: AsyncSession, selected_: list[tuple[str, str]]
) -> dict[str, tuple[str, int]]:
    """The selected gateways (site, gateway id) by label, in one query of two columns."""
    wanted = {label(s, g) for s, g in selected_}
    rows = await session.execute(select(Site.name, Gateway.name, Gateway.id).join(Gateway.site))
    return {
        label(site, name): (site, gateway_id)
        for site, name, gateway_id in rows
        if label(site, name) in wanted
    }


async def _gateway_rows(session: AsyncSession, ids: list[int]) -> dict[int, Gateway]:
    """The gateways about to be commanded, by id (one query; none when nobody is)."""
    if not ids:
        return {}
    return {g.id: g for g in await session.scalars(select(Gateway).where(Gateway.id.in_(ids)))}


async def _feed_reports(
    session: AsyncSession,
    decisions: engine.Engine,
    ids: dict[str, tuple[str, int]],
    release: Release,
) -> None:
    """Every commanded gateway's latest command for this release, as its OTA status left
    it, into the engine (two queries, whatever the number of gateways)."""
    commanded = {
        ids[m.gateway][1]: m.gateway
        for m in decisions.rollout.members.values()
        if m.progress is engine.Progress.COMMANDED and m.gateway in ids
    }
    if not commanded:
        return
    latest: dict[int, tuple[int, str, str]] = {}
    for gid, cid, rid, state, reason in await session.execute(
        select(
            OtaCommand.gateway_id, OtaCommand.id, OtaCommand.release_id, OtaCommand.state,
            OtaCommand.reason,
        ).where(OtaCommand.gateway_id.in_(commanded))
    ):  # fmt: skip
        if gid not in latest or cid > latest[gid][0]:
            latest[gid] = (cid, state if rid == release.id else "", reason)
    rows_ = await session.execute(
        select(GatewayOta.gateway_id, GatewayOta.running_version).where(
            GatewayOta.gateway_id.in_(commanded)
        )
    )
    running: dict[int, str] = {}
    for gid, version in rows_:
        running[gid] = version
    for gid, name in commanded.items():
        if gid in latest and latest[gid][1]:
            _, state, reason = latest[gid]
            decisions.report(name, state, running.get(gid, ""), reason)


async def _claim(session: AsyncSession, record: RolloutRecord) -> bool:
    """Take the rollout's row for this transaction if nobody changed it since it was read
    (an operator's pause or abort, from another process, between this step's read and its
    write would otherwise be overwritten by the step's older state). The first write of the
    transaction: from here on, PostgreSQL's row lock and SQLite's write lock keep every other
    writer out until the commit."""
    seen = record.updated_at
    claimed = await session.execute(
        update(RolloutRecord)
        .where(RolloutRecord.id == record.id, RolloutRecord.updated_at == seen)
        .values(updated_at=seen)
        .execution_options(synchronize_session=False)
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


async def _locked(session: AsyncSession, rollout_id: int) -> bool:
    """This transaction holds the rollout's advisory lock (always on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    got = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:a, :b)"), {"a": LOCK_CLASS, "b": rollout_id}
    )
    return bool(got)
