"""One change to many gateways: a TOML fragment merged into each selected gateway's desired
document (the rules: :mod:`fleet.config.merge`), previewed, then stored as a new version per
gateway.

Gateways are selected by site, by tag and/or by a list of ``site/gateway`` names (a gateway
matching any of them is selected). The preview gives, per gateway, the diff from its desired
document to the merged one, the validator's problems (key first, as ``gateway check`` says
them) and what it weakens; applying stores a version for every gateway whose merged document
passes (and is confirmed, when it weakens a standard interlock) and lists every refusal with
the gateway and the key. Nothing is sent to a refused gateway.
"""

from __future__ import annotations

import difflib

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.config import document
from fleet.config.merge import FragmentError, merge
from fleet.config.tables import GatewayTag
from fleet.config.versions import (
    check,
    desired_version,
    find_gateway,
    label,
    push,
    split_label,
)
from fleet.errors import ConfigRefused
from fleet.models import Gateway, Site
from gateway.trust import SigningKey


class Selection(BaseModel):
    site: str | None = None
    tag: str | None = None
    gateways: list[str] = Field(default_factory=list)  # "site/gateway"

    def empty(self) -> bool:
        return self.site is None and self.tag is None and not self.gateways


class BulkLine(BaseModel):
    gateway: str
    base: int | None  # the desired version merged into
    diff: str
    problems: list[str]
    safety: list[str]
    version: int | None = None  # the new version, once applied
    merged: str = Field(default="", exclude=True)  # the merged document

    @property
    def ok(self) -> bool:
        return not self.problems


async def selected(session: AsyncSession, selection: Selection) -> list[tuple[str, str]]:
    """(site, gateway) of every selected gateway, in name order."""
    if selection.empty():
        raise ConfigRefused("selection", ["select gateways by site, by tag or by name"])
    rows = await session.execute(select(Site.name, Gateway.name, Gateway.id).join(Gateway.site))
    tagged: set[int] = set()
    if selection.tag is not None:
        tagged = set(
            await session.scalars(
                select(GatewayTag.gateway_id).where(GatewayTag.tag == selection.tag)
            )
        )
    named = {split_label(g) for g in selection.gateways}
    out = {
        (site, name)
        for site, name, gid in rows
        if site == selection.site or gid in tagged or (site, name) in named
    }
    return sorted(out)


async def preview(session: AsyncSession, selection: Selection, fragment: str) -> list[BulkLine]:
    data = document.load(fragment, "fragment")
    lines = []
    for site, name in await selected(session, selection):
        lines.append(await _line(session, site, name, data))
    return lines


async def _line(session: AsyncSession, site: str, name: str, fragment: document.Data) -> BulkLine:
    gw = await find_gateway(session, site, name)
    current = await desired_version(session, gw.id)
    who = label(site, name)
    if current is None:
        return BulkLine(
            gateway=who,
            base=None,
            diff="",
            problems=[f"{who}: no desired version yet to merge into (push one first)"],
            safety=[],
        )
    try:
        merged = merge(document.load(current.document, f"{who} version {current.number}"), fragment)
    except FragmentError as exc:
        return BulkLine(gateway=who, base=current.number, diff="", problems=[str(exc)], safety=[])
    text = document.dumps(merged)
    problems, weakens = check(text, who, site, name, current)
    diff = "".join(
        difflib.unified_diff(
            current.document.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"{who} version {current.number}",
            f"{who} merged",
        )
    )
    return BulkLine(
        gateway=who,
        base=current.number,
        diff=diff,
        problems=[f"{who}: {p}" for p in problems],
        safety=weakens,
        merged=text,
    )


async def apply(
    session: AsyncSession,
    selection: Selection,
    fragment: str,
    *,
    author: str,
    comment: str = "",
    confirm_safety: bool = False,
    signer: SigningKey | None = None,
) -> list[BulkLine]:
    """A new version for every gateway whose merged document passes (caller commits), each
    signed by ``signer`` when given."""
    lines = await preview(session, selection, fragment)
    for line in lines:
        if line.problems:
            continue
        if line.safety and not confirm_safety:
            line.problems = [
                f"{line.gateway}: weakens a standard interlock, not confirmed: {s}"
                for s in line.safety
            ]
            continue
        site, name = split_label(line.gateway)
        view = await push(
            session,
            site,
            name,
            line.merged,
            author=author,
            comment=comment,
            confirm_safety=confirm_safety,
            origin="bulk",
            signer=signer,
        )
        line.version = view.number
    return lines
