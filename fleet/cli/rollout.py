"""``fleet rollout``: staged rollouts of a release, on the fleet's database.

    fleet rollout create NAME --release ID|VERSION (--site S | --tag T | --gateway SITE/GW ...)
                         --phase canary:count=2 --phase half:percent=50 --phase rest
                         --base-url URL [--per-minute N] [--preview]
    fleet rollout list
    fleet rollout show NAME
    fleet rollout pause|resume NAME [-m REASON]
    fleet rollout abort NAME [--revert] [-m REASON]
    fleet rollout window SITE HH:MM-HH:MM|"" [--timezone ZONE]

A phase is ``NAME[:KEY=VALUE,...]`` with the keys of the API's phase (count, percent,
success, max_failures, max_failure_share, soak_s, timeout_s; hand-picked gateways with
``gateways=SITE/GW+SITE/GW``). ``--preview`` shows who would be in which phase and stores
nothing. The running fleet server drives the rollout within a second; every action is
audited as ``cli:UNIXUSER``.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts.actor import cli_actor
from fleet.cli import database
from fleet.errors import BadInput, ReleaseNotFound
from fleet.releases.tables import Release
from fleet.rollouts import service
from fleet.rollouts.service import NewRollout, PhaseSpec, RolloutView
from gateway.validation import format_validation_error


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], db: argparse.ArgumentParser
) -> None:
    rollout = commands.add_parser("rollout", help="staged rollouts of a release").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = rollout.add_parser("create", parents=[db], help="start a rollout (or --preview it)")
    create.add_argument("name")
    create.add_argument("--release", required=True, metavar="ID|VERSION")
    create.add_argument("--site", default=None)
    create.add_argument("--tag", default=None)
    create.add_argument("--gateway", action="append", default=[], metavar="SITE/GATEWAY")
    create.add_argument(
        "--phase", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
        help="in order; the last phase takes every gateway left",
    )  # fmt: skip
    create.add_argument("--per-minute", type=float, default=None, help="install commands a minute")
    create.add_argument(
        "--base-url", required=True, metavar="URL",
        help="the fleet's URL as gateways reach it (bundles are downloaded from there)",
    )  # fmt: skip
    create.add_argument("--preview", action="store_true", help="show the phases, store nothing")
    create.set_defaults(change=create_cmd)

    listing = rollout.add_parser("list", parents=[db], help="every rollout, newest first")
    listing.set_defaults(change=list_cmd)

    show = rollout.add_parser("show", parents=[db], help="a rollout's phases and gateways")
    show.add_argument("name")
    show.set_defaults(change=show_cmd)

    for action, text in (("pause", "pause it"), ("resume", "go on after a pause")):
        acting = rollout.add_parser(action, parents=[db], help=text)
        acting.add_argument("name")
        acting.add_argument("-m", "--message", default="", help="why")
        acting.set_defaults(change=act_cmd, verb=action)
    abort = rollout.add_parser("abort", parents=[db], help="stop it for good")
    abort.add_argument("name")
    abort.add_argument("-m", "--message", default="", help="why")
    abort.add_argument(
        "--revert", action="store_true",
        help="ask the gateways that took the release to go back to their previous version",
    )  # fmt: skip
    abort.set_defaults(change=act_cmd, verb="abort")

    window = rollout.add_parser("window", parents=[db], help="a site's maintenance window")
    window.add_argument("site")
    window.add_argument("window", metavar='HH:MM-HH:MM|""')
    window.add_argument(
        "--timezone", default="UTC", metavar="ZONE", help="IANA, e.g. Asia/Shanghai"
    )
    window.set_defaults(change=window_cmd)


def phase(text: str) -> PhaseSpec:
    """``NAME[:KEY=VALUE,...]`` → a phase; BadInput naming the option."""
    name, _, rest = text.partition(":")
    fields: dict[str, object] = {"name": name}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise BadInput(f"--phase {text!r}: expected KEY=VALUE, got {part!r}")
        fields[key.strip()] = value.split("+") if key.strip() == "gateways" else value.strip()
    try:
        return PhaseSpec.model_validate(fields)
    except ValidationError as exc:
        raise BadInput(f"--phase {text!r}: {format_validation_error(exc)}") from None


async def _release_id(session: AsyncSession, given: str) -> int:
    if given.isdigit():
        return int(given)
    ids = list(await session.scalars(select(Release.id).where(Release.version == given)))
    if len(ids) != 1:
        found = "no release" if not ids else f"{len(ids)} releases (one per platform)"
        raise ReleaseNotFound(f"--release {given}: {found} of that version; give its id")
    return ids[0]


def create_cmd(args: argparse.Namespace) -> str:
    phases = [phase(p) for p in args.phase]
    actor = cli_actor()

    async def make(session: AsyncSession) -> str:
        try:
            new = NewRollout(
                name=args.name,
                release=await _release_id(session, args.release),
                site=args.site,
                tag=args.tag,
                gateways=args.gateway,
                phases=phases,
                per_minute=args.per_minute,
            )
        except ValidationError as exc:
            raise BadInput(format_validation_error(exc)) from None
        shown = await service.preview(session, new)
        lines = [f"{name}: {', '.join(g) or '(none)'}" for name, g in shown.phases.items()]
        if shown.skipped:
            lines.append(f"already on {shown.release}: {', '.join(shown.skipped)}")
        if args.preview:
            await session.rollback()
            return "\n".join(lines)
        await service.create(session, actor, new, args.base_url)
        return "\n".join([f"rollout {args.name} of {shown.release} started", *lines])

    return database.change(args.db, make)


def _summary(view: RolloutView) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in view.counts.items() if n)
    reason = f" — {view.reason}" if view.reason else ""
    return f"{view.name}  {view.release}  {view.status} in {view.phase}{reason}  ({counts})"


def list_cmd(args: argparse.Namespace) -> str:
    views = database.read(args.db, service.listing)
    return "\n".join(_summary(v) for v in views) or "no rollouts"


def show_cmd(args: argparse.Namespace) -> str:
    async def look(session: AsyncSession) -> RolloutView:
        return await service.view(session, await service.record_of(session, args.name))

    view = database.read(args.db, look)
    lines = [_summary(view)]
    for p in view.phases:
        lines.append(f"  {p.name}:")
        for m in p.gateways:
            ota = f" [{m.ota_state}]" if m.ota_state else ""
            why = m.waiting or m.reason
            lines.append(f"    {m.gateway:<32} {m.progress}{ota}{f' — {why}' if why else ''}")
    return "\n".join(lines)


def act_cmd(args: argparse.Namespace) -> str:
    actor = cli_actor()
    verbs: dict[str, service.Action] = {"pause": "pause", "resume": "resume", "abort": "abort"}
    verb: service.Action = (
        "abort-revert" if args.verb == "abort" and args.revert else verbs[args.verb]
    )

    async def make(session: AsyncSession) -> str:
        record, commands = await service.act(session, actor, args.name, verb, args.message)
        _, problems = await service.reverts(session, record, commands, record.base_url)
        done = f"rollout {record.name}: {record.status}"
        if commands:
            done += f"; {len(commands) - len(problems)} gateway(s) asked to go back"
        return "\n".join([done, *problems])

    return database.change(args.db, make)


def window_cmd(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def make(session: AsyncSession) -> service.WindowView:
        return await service.set_window(session, actor, args.site, args.window, args.timezone)

    view = database.change(args.db, make)
    shown = view.maintenance_window or "any time"
    state = "open now" if view.now_open else "closed now"
    return f"{view.site}: rollouts may update it {shown} ({view.timezone}), {state}"
