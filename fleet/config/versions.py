"""Configuration versions of one gateway: push, history, show, diff, revert, desired vs
reported.

A push is validated with ``gateway check``'s validator (:mod:`fleet.config.checks`) and
refused, with the same key-naming messages, before anything is stored or sent. A change that
weakens a standard interlock (compared with the desired version it replaces) is refused
unless confirmed; confirmed, it is marked on the version and in the audit log, and the
gateway raises an info event when it applies it. Every push and revert is audited in the
same transaction. The new version becomes the desired one and is marked to be sent
(:mod:`fleet.config.delivery` sends it). A version is signed when it is made — with the
fleet's key, or by an operator offline (:mod:`fleet.config.signing`) — or stays unsigned.
"""

from __future__ import annotations

import difflib
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.config.checks import fixed_keys, validate, weakening
from fleet.config.signing import DetachedSignature, check_detached
from fleet.config.tables import ConfigVersion, GatewayConfig
from fleet.errors import ConfigNotFound, ConfigRefused, SafetyChangeUnconfirmed
from fleet.models import Gateway, Site, utcnow
from gateway.site import SiteConfig, parse_site
from gateway.trust import SigningKey
from gateway.wire.config import ReportedConfig, document_hash, signed_statement


class VersionView(BaseModel):
    gateway: str  # "site/gateway"
    number: int
    sha256: str
    author: str
    created_at: datetime
    comment: str
    origin: str
    safety_change: bool
    safety: list[str]  # what it weakens (confirmed), one line each
    desired: bool
    signed_by: str = ""  # the id of the key that signed it ("": unsigned)


class VersionDetail(VersionView):
    document: str


class ConfigState(BaseModel):
    """Desired vs reported for one gateway, and whether they drifted apart."""

    gateway: str
    desired: int | None
    desired_sha256: str
    reported_version: int | None  # None with a status: a local document
    reported_sha256: str
    status: str  # applied | pending | rejected | rolled back | "" (never reported)
    about: int | None
    messages: list[str]
    reason: str
    reported_at: datetime | None
    drift: bool
    drift_reason: str


def label(site: str, gateway: str) -> str:
    return f"{site}/{gateway}"


def split_label(text: str) -> tuple[str, str]:
    """``"site/gateway"`` → (site, gateway); ConfigNotFound naming the text otherwise."""
    site, sep, gateway = text.partition("/")
    if not sep or not site or not gateway or "/" in gateway:
        raise ConfigNotFound(f"gateway {text!r}: expected SITE/GATEWAY")
    return site, gateway


async def find_gateway(session: AsyncSession, site: str, gateway: str) -> Gateway:
    row = await session.scalar(
        select(Gateway).join(Site).where(Site.name == site, Gateway.name == gateway)
    )
    if row is None:
        raise ConfigNotFound(f"no gateway {label(site, gateway)!r}")
    return row


async def config_row(session: AsyncSession, gateway_id: int) -> GatewayConfig:
    row = await session.get(GatewayConfig, gateway_id)
    if row is None:
        row = GatewayConfig(gateway_id=gateway_id, reported_messages={})
        session.add(row)
        await session.flush()
    return row


async def desired_version(session: AsyncSession, gateway_id: int) -> ConfigVersion | None:
    row = await session.get(GatewayConfig, gateway_id)
    if row is None or row.desired is None:
        return None
    return await _version(session, gateway_id, row.desired)


async def _version(session: AsyncSession, gateway_id: int, number: int) -> ConfigVersion | None:
    found: ConfigVersion | None = await session.scalar(
        select(ConfigVersion).where(
            ConfigVersion.gateway_id == gateway_id, ConfigVersion.number == number
        )
    )
    return found


def check(
    text: str, source: str, site: str, gateway: str, current: ConfigVersion | None
) -> tuple[list[str], list[str]]:
    """(problems, what it weakens compared with ``current``) of a document."""
    parsed, problems = validate(text, source, site, gateway)
    if parsed is None:
        return problems, []
    old = _parsed(current)
    fixed = fixed_keys(old, parsed)
    if fixed:
        return fixed, []
    return [], weakening(old, parsed)


def _parsed(version: ConfigVersion | None) -> SiteConfig | None:
    if version is None:
        return None
    try:
        return parse_site(version.document, f"version {version.number}")
    except Exception:  # a version valid when pushed, not any more (profiles changed)
        return None


async def push(
    session: AsyncSession,
    site: str,
    gateway: str,
    text: str,
    *,
    author: str,
    comment: str = "",
    confirm_safety: bool = False,
    origin: str = "push",
    source: str | None = None,
    signer: SigningKey | None = None,
    signature: DetachedSignature | None = None,
) -> VersionView:
    """Store ``text`` as the gateway's next version and make it desired (caller commits).

    ``signature``: made offline for this gateway, document and version (checked: refused
    when it is not); else ``signer`` signs it; else it is stored unsigned."""
    gw = await find_gateway(session, site, gateway)
    current = await desired_version(session, gw.id)
    where = source or f"{label(site, gateway)} (new version)"
    problems, weakens = check(text, where, site, gateway, current)
    if problems:
        raise ConfigRefused(where, problems)
    if weakens and not confirm_safety:
        raise SafetyChangeUnconfirmed(where, weakens)
    number = (
        await session.scalar(
            select(func.max(ConfigVersion.number)).where(ConfigVersion.gateway_id == gw.id)
        )
        or 0
    ) + 1
    signed = ""
    if signature is not None:
        signed = check_detached(signature, site, gateway, number, text)
    elif signer is not None:
        signed = signer.sign(signed_statement(site, gateway, number, text)).encode()
    version = ConfigVersion(
        gateway_id=gw.id,
        number=number,
        document=text,
        sha256=document_hash(text),
        author=author,
        created_at=utcnow(),
        comment=comment[:500],
        origin=origin,
        validation={"problems": [], "safety": weakens, "signature": signed},
        safety_change=bool(weakens),
    )
    session.add(version)
    row = await config_row(session, gw.id)
    row.desired = number
    row.sent = None
    target = f"gateway:{label(site, gateway)}"
    detail = {"version": number, "sha256": version.sha256, "origin": origin, "comment": comment}
    if signed:
        detail["signed_by"] = signed.partition(":")[0]
    audit.record(session, author, f"config.{origin.split()[0]}", target, detail)
    if weakens:
        audit.record(
            session,
            author,
            "config.safety-confirmed",
            target,
            {"version": number, "safety": weakens},
        )
    await session.flush()
    return _view(version, label(site, gateway), desired=True)


async def revert(
    session: AsyncSession,
    site: str,
    gateway: str,
    number: int,
    *,
    author: str,
    comment: str = "",
    confirm_safety: bool = False,
    signer: SigningKey | None = None,
) -> VersionView:
    """A new version with the text of version ``number``, made desired (signed by
    ``signer`` when given: the old version's signature is for its own number)."""
    gw = await find_gateway(session, site, gateway)
    old = await _version(session, gw.id, number)
    if old is None:
        raise ConfigNotFound(f"{label(site, gateway)} has no version {number}")
    return await push(
        session,
        site,
        gateway,
        old.document,
        author=author,
        comment=comment or f"revert to version {number}",
        confirm_safety=confirm_safety,
        origin=f"revert of {number}",
        signer=signer,
    )


async def history(session: AsyncSession, site: str, gateway: str) -> list[VersionView]:
    gw = await find_gateway(session, site, gateway)
    row = await session.get(GatewayConfig, gw.id)
    desired = None if row is None else row.desired
    rows = await session.scalars(
        select(ConfigVersion)
        .where(ConfigVersion.gateway_id == gw.id)
        .order_by(ConfigVersion.number.desc())
    )
    return [_view(v, label(site, gateway), desired=v.number == desired) for v in rows]


async def show(
    session: AsyncSession, site: str, gateway: str, number: int | None = None
) -> VersionDetail:
    """Version ``number``, or the desired one."""
    gw = await find_gateway(session, site, gateway)
    row = await session.get(GatewayConfig, gw.id)
    desired = None if row is None else row.desired
    wanted = desired if number is None else number
    version = None if wanted is None else await _version(session, gw.id, wanted)
    if version is None:
        what = "no desired version yet" if number is None else f"no version {number}"
        raise ConfigNotFound(f"{label(site, gateway)} has {what}")
    view = _view(version, label(site, gateway), desired=version.number == desired)
    return VersionDetail(**view.model_dump(), document=version.document)


async def diff(session: AsyncSession, site: str, gateway: str, a: int, b: int) -> str:
    """A unified diff from version ``a`` to version ``b``."""
    old = await show(session, site, gateway, a)
    new = await show(session, site, gateway, b)
    return "".join(
        difflib.unified_diff(
            old.document.splitlines(keepends=True),
            new.document.splitlines(keepends=True),
            f"version {a}",
            f"version {b}",
        )
    )


async def state(session: AsyncSession, site: str, gateway: str) -> ConfigState:
    gw = await find_gateway(session, site, gateway)
    row = await session.get(GatewayConfig, gw.id)
    desired = await desired_version(session, gw.id)
    return config_state(label(site, gateway), row, desired)


def config_state(
    name: str, row: GatewayConfig | None, desired: ConfigVersion | None
) -> ConfigState:
    status = "" if row is None else row.reported_status
    running = None if row is None else row.reported_version
    sha = "" if row is None else row.reported_sha256
    if desired is None:  # nothing desired yet: nothing to drift from
        drift, why = False, ""
    elif not status:
        drift, why = True, "has not reported what it runs yet"
    elif running is None:
        drift, why = True, "runs a document edited on the gateway itself (a local version)"
    elif running != desired.number or sha != desired.sha256:
        drift, why = True, f"runs version {running}, desired is {desired.number}"
        if row is not None and row.reported_about == desired.number and status != "applied":
            why += f" ({status}" + (f": {row.reported_reason}" if row.reported_reason else "") + ")"
    else:
        drift, why = False, ""
    messages = [] if row is None else list(row.reported_messages.get("messages", []))
    return ConfigState(
        gateway=name,
        desired=None if desired is None else desired.number,
        desired_sha256="" if desired is None else desired.sha256,
        reported_version=running,
        reported_sha256=sha,
        status=status,
        about=None if row is None else row.reported_about,
        messages=messages,
        reason="" if row is None else row.reported_reason,
        reported_at=None if row is None else row.reported_at,
        drift=drift,
        drift_reason=why,
    )


async def record_report(session: AsyncSession, gateway_id: int, report: ReportedConfig) -> None:
    """What the gateway says it runs (ingest's route for ``config/reported``)."""
    row = await config_row(session, gateway_id)
    row.reported_version = report.version
    row.reported_sha256 = report.sha256
    row.reported_status = report.status
    row.reported_about = report.about
    row.reported_messages = {"messages": report.messages}
    row.reported_reason = report.reason
    row.reported_at = utcnow()


def _view(version: ConfigVersion, name: str, *, desired: bool) -> VersionView:
    return VersionView(
        gateway=name,
        number=version.number,
        sha256=version.sha256,
        author=version.author,
        created_at=version.created_at,
        comment=version.comment,
        origin=version.origin,
        safety_change=version.safety_change,
        safety=list(version.validation.get("safety", [])),
        desired=desired,
        signed_by=signature_of(version).partition(":")[0],
    )


def signature_of(version: ConfigVersion) -> str:
    """The version's ``KEYID:BASE64`` ("": unsigned)."""
    return str(version.validation.get("signature") or "")
