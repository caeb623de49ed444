"""Rollouts as the API and the CLI see them: create (with a preview of who is in which phase),
pause, resume, abort, and a view of each phase and gateway. Every action is audited; the
driver (:mod:`fleet.rollouts.driver`) does the rest on its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.actor import Actor
from fleet.config.bulk import Selection, selected
from fleet.errors import ReleaseNotFound, RolloutError, RolloutNotFound
from fleet.models import Gateway, Site, utcnow
from fleet.releases.commands import command_release, gateway_of
from fleet.releases.tables import GatewayOta, OtaCommand, Release
from fleet.rollouts import engine
from fleet.rollouts.tables import RolloutRecord
from fleet.rollouts.windows import Window

RolloutName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]


class PhaseSpec(BaseModel):
    """One phase: ``count`` gateways or ``percent`` of the target set (neither: everyone
    left), hand-picked ``gateways`` ("site/gateway") first."""

    name: str = Field(min_length=1, max_length=32)
    count: int | None = Field(default=None, ge=1)
    percent: float | None = Field(default=None, gt=0, le=100)
    gateways: list[str] = Field(default_factory=list, max_length=1000)
    success: float = Field(default=1.0, gt=0, le=1)
    max_failures: int | None = Field(default=0, ge=0)
    max_failure_share: float | None = Field(default=None, ge=0, le=1)
    soak_s: float = Field(default=0.0, ge=0, le=30 * 86400)
    timeout_s: float = Field(default=3600.0, gt=0, le=7 * 86400)

    @model_validator(mode="after")
    def _one_size(self) -> PhaseSpec:
        if self.count is not None and self.percent is not None:
            raise ValueError(f"phase {self.name}: give count or percent, not both")
        return self

    def phase(self) -> engine.Phase:
        return engine.Phase(
            name=self.name,
            count=self.count,
            percent=self.percent,
            gateways=tuple(self.gateways),
            success=self.success,
            max_failures=self.max_failures,
            max_failure_share=self.max_failure_share,
            soak_s=self.soak_s,
            timeout_s=self.timeout_s,
        )


class NewRollout(Selection):
    name: RolloutName
    release: int = Field(ge=1, description="the release's id (see /api/releases)")
    phases: list[PhaseSpec] = Field(min_length=1, max_length=20)
    per_minute: float | None = Field(default=None, gt=0, le=10000)


class MemberView(BaseModel):
    gateway: str
    phase: str
    progress: str
    waiting: str = ""
    reason: str = ""
    ota_state: str | None = None  # the gateway's own word while commanded
    ota_progress: float | None = None


class PhaseView(BaseModel):
    name: str
    counts: dict[str, int]
    gateways: list[MemberView]


class RolloutView(BaseModel):
    id: int
    name: str
    release: str
    status: str
    reason: str
    phase: str
    created_by: str
    created_at: datetime
    counts: dict[str, int]
    phases: list[PhaseView]
    #: gateways of the target set that already ran the release when they came in
    skipped: list[str] = Field(default_factory=list)
    #: gateways of the target set now that no phase holds yet (a later phase takes them)
    unassigned: int = 0


class PreviewView(BaseModel):
    release: str
    skipped: list[str]  # already on the release
    phases: dict[str, list[str]]


def label(site: str, gateway: str) -> str:
    return f"{site}/{gateway}"


@dataclass(frozen=True)
class Publish:
    """An ``ota/command`` recorded in the database, to publish after the commit."""

    site: str
    gateway: str
    payload: bytes


async def _release(session: AsyncSession, release_id: int) -> Release:
    release = await session.get(Release, release_id)
    if release is None:
        raise ReleaseNotFound(f"no release {release_id}: see `fleet release list`")
    return release


async def sites_of(
    session: AsyncSession, gateways: Iterable[tuple[str, str]], release: Release, now: datetime
) -> dict[str, engine.Site]:
    """What a rollout needs to know of each gateway now: online, interlocks, window, and the
    version it reports running."""
    wanted = set(gateways)
    rows = await session.execute(
        select(Site.name, Gateway, Site.maintenance_window, Site.timezone, GatewayOta)
        .join(Gateway.site)
        .outerjoin(GatewayOta, GatewayOta.gateway_id == Gateway.id)
    )
    out = {}
    for site, gateway, window, zone, ota in rows:
        if (site, gateway.name) not in wanted:
            continue
        loop = (gateway.health or {}).get("loop") or {}
        active = loop.get("interlocks_active") or 0
        running = ota.running_version if ota is not None else gateway.version
        out[label(site, gateway.name)] = engine.Site(
            online=gateway.online,
            interlocks_active=isinstance(active, int | float) and active > 0,
            in_window=_in_window(window, zone, now),
            running=running or None,
        )
    return out


def _in_window(window: str, zone: str, now: datetime) -> bool:
    try:
        return Window.parse(window, zone).contains(now)
    except RolloutError:
        return False  # a window nobody can read is never open; the site page says why


async def targets(
    session: AsyncSession, selection: Selection, release: Release
) -> dict[str, engine.Site]:
    return await sites_of(session, await selected(session, selection), release, utcnow())


def plan_of(new: NewRollout, release: Release) -> engine.Plan:
    return engine.Plan(release.version, tuple(p.phase() for p in new.phases), new.per_minute)


def _selection(new: NewRollout) -> Selection:
    return Selection(**new.model_dump(include={"site", "tag", "gateways"}))


async def _resolve(
    session: AsyncSession, new: NewRollout
) -> tuple[Release, dict[str, engine.Site]]:
    """The release and the target set now; refuses an unknown release or no gateway."""
    release = await _release(session, new.release)
    sites = await targets(session, _selection(new), release)
    if not sites:
        raise RolloutError("the selection holds no gateway: select by site, tag or name")
    return release, sites


def _preview(new: NewRollout, release: Release, sites: dict[str, engine.Site]) -> PreviewView:
    phases = engine.preview(plan_of(new, release), sites)
    skipped = sorted(n for n, s in sites.items() if s.running == release.version)
    return PreviewView(
        release=release.version,
        skipped=skipped,
        phases={spec.name: names for spec, names in zip(new.phases, phases, strict=True)},
    )


async def preview(session: AsyncSession, new: NewRollout) -> PreviewView:
    return _preview(new, *await _resolve(session, new))


async def create(
    session: AsyncSession, actor: Actor, new: NewRollout, base_url: str
) -> RolloutRecord:
    """A new running rollout; gateways will download from ``base_url``."""
    release, sites = await _resolve(session, new)
    if await session.scalar(select(RolloutRecord.id).where(RolloutRecord.name == new.name)):
        raise RolloutError(f"a rollout named {new.name!r} exists already")
    shown = _preview(new, release, sites)
    state = engine.Rollout(plan_of(new, release))
    engine.Engine(state).begin(utcnow().timestamp(), sites)
    record = RolloutRecord(
        name=new.name,
        release_id=release.id,
        selection=_selection(new).model_dump(),
        state=engine.to_json(state),
        base_url=base_url,
        status=state.status.value,
        reason="",
        created_by=actor.label,
    )
    session.add(record)
    await session.flush()
    audit.record(
        session,
        actor.label,
        "rollout.create",
        f"rollout:{record.id}",
        {"name": new.name, "release": release.version, "phases": shown.phases},
    )
    return record


async def record_of(session: AsyncSession, ref: str) -> RolloutRecord:
    """A rollout by id or name."""
    query = select(RolloutRecord)
    query = (
        query.where(RolloutRecord.id == int(ref))
        if ref.isdigit()
        else query.where(RolloutRecord.name == ref)
    )
    record = await session.scalar(query)
    if record is None:
        raise RolloutNotFound(f"no rollout {ref!r}: see `fleet rollout list`")
    return record


Action = Literal["pause", "resume", "abort", "abort-revert"]


async def act(
    session: AsyncSession, actor: Actor, ref: str, action: Action, reason: str = ""
) -> tuple[RolloutRecord, list[engine.Command]]:
    """An operator's action; the commands (reverts) are for the caller to send after the
    commit."""
    record = await record_of(session, ref)
    decisions = engine.Engine(engine.from_json(record.state))
    status = decisions.rollout.status
    if status in (engine.Status.ABORTED, engine.Status.COMPLETED):
        raise RolloutError(f"rollout {record.name} is {status.value}: nothing to {action}")
    commands: list[engine.Command] = []
    if action == "pause":
        decisions.pause(f"paused by {actor.label}" + (f": {reason}" if reason else ""))
    elif action == "resume":
        if status is not engine.Status.PAUSED:
            raise RolloutError(f"rollout {record.name} is {status.value}, not paused")
        decisions.resume()
    else:
        commands = decisions.abort(revert=action == "abort-revert")
        decisions.rollout.reason = f"aborted by {actor.label}" + (f": {reason}" if reason else "")
    save(record, decisions.rollout)
    audit.record(
        session, actor.label, f"rollout.{action}", f"rollout:{record.id}", {"reason": reason}
    )
    return record, commands


def save(record: RolloutRecord, state: engine.Rollout) -> None:
    record.state = engine.to_json(state)
    record.status = state.status.value
    record.reason = state.reason
    record.updated_at = utcnow()


async def view(session: AsyncSession, record: RolloutRecord) -> RolloutView:
    state = engine.from_json(record.state)
    release = await _release(session, record.release_id)
    ota = await _ota_of_commanded(session, state, record.release_id)
    phases = []
    for index, spec in enumerate(state.plan.phases):
        members = sorted(
            (m for m in state.members.values() if m.phase == index), key=lambda m: m.gateway
        )
        views = [
            MemberView(
                gateway=m.gateway,
                phase=spec.name,
                progress=m.progress.value,
                waiting=m.waiting,
                reason=m.reason,
                ota_state=ota.get(m.gateway, (None, None))[0],
                ota_progress=ota.get(m.gateway, (None, None))[1],
            )
            for m in members
        ]
        counts = {p.value: sum(v.progress == p.value for v in views) for p in engine.Progress}
        phases.append(PhaseView(name=spec.name, counts=counts, gateways=views))
    current = state.plan.phases[min(state.phase, len(state.plan.phases) - 1)].name
    unassigned = 0
    if state.status in (engine.Status.RUNNING, engine.Status.PAUSED):
        targets = await selected(session, Selection(**record.selection))
        unassigned = len({label(site, name) for site, name in targets} - set(state.members))
    return RolloutView(
        id=record.id,
        name=record.name,
        release=release.version,
        status=state.status.value,
        reason=state.reason,
        phase=current,
        created_by=record.created_by,
        created_at=record.created_at,
        counts=engine.summary(state),
        phases=phases,
        skipped=sorted(m.gateway for m in state.members.values() if m.phase < 0),
        unassigned=unassigned,
    )


async def _ota_of_commanded(
    session: AsyncSession, state: engine.Rollout, release_id: int
) -> dict[str, tuple[str | None, float | None]]:
    """The OTA state of each commanded gateway's latest command for this release."""
    rows = await session.execute(
        select(Site.name, Gateway.name, OtaCommand.state, OtaCommand.progress, OtaCommand.id)
        .join(Gateway, OtaCommand.gateway_id == Gateway.id)
        .join(Gateway.site)
        .where(OtaCommand.release_id == release_id)
        .order_by(OtaCommand.id)
    )
    latest: dict[str, tuple[str | None, float | None]] = {}
    for site, gateway, ota_state, progress, _ in rows:
        latest[label(site, gateway)] = (ota_state, progress)
    return {g: v for g, v in latest.items() if g in state.members}


async def listing(session: AsyncSession) -> list[RolloutView]:
    records = await session.scalars(select(RolloutRecord).order_by(RolloutRecord.id.desc()))
    return [await view(session, r) for r in records]


async def reverts(
    session: AsyncSession,
    record: RolloutRecord,
    commands: list[engine.Command],
    base_url: str,
) -> tuple[list[Publish], list[str]]:
    """Record a forced install of the version each gateway ran before (its OTA status's
    ``previous``); what to publish, and the gateways that cannot be sent back (and why)."""
    release = await _release(session, record.release_id)
    publishes, problems = [], []
    for command in commands:
        site, name = command.gateway.split("/", 1)
        gateway = await gateway_of(session, site, name)
        ota = await session.get(GatewayOta, gateway.id)
        previous = (ota.status if ota is not None else {}).get("previous")
        back = None
        if previous:
            back = await session.scalar(
                select(Release).where(
                    Release.version == previous, Release.platform == release.platform
                )
            )
        if back is None:
            problems.append(
                f"{command.gateway}: no release {previous or '(unknown)'} to go back to"
            )
            continue
        sent = await command_release(
            session, f"rollout:{record.name}", gateway, back, base_url, force=True
        )
        publishes.append(Publish(site, name, sent.payload))
    return publishes, problems


class WindowView(BaseModel):
    site: str
    maintenance_window: str
    timezone: str
    now_open: bool


async def set_window(
    session: AsyncSession, actor: Actor, site: str, window: str, zone: str
) -> WindowView:
    """Set a site's maintenance window (checked first; WindowError says what is wrong)."""
    parsed = Window.parse(window, zone)
    row = await session.scalar(select(Site).where(Site.name == site))
    if row is None:
        raise RolloutNotFound(f"no site {site!r}: see `fleet site list`")
    row.maintenance_window, row.timezone = window.strip(), zone
    detail = {"window": window.strip(), "timezone": zone}
    audit.record(session, actor.label, "site.maintenance_window", f"site:{site}", detail)
    return WindowView(
        site=site,
        maintenance_window=row.maintenance_window,
        timezone=zone,
        now_open=parsed.contains(utcnow()),
    )
