"""``fleet config``: versions of gateways' site documents, on the fleet's database.

    fleet config push SITE/GATEWAY site.toml -m COMMENT [--confirm-safety-change]
                      [--key KEYFILE | --signature FILE.sig]
    fleet config sign SITE/GATEWAY site.toml --version N --key KEYFILE [-o FILE.sig]
    fleet config show SITE/GATEWAY [--version N]     the document (desired: by default)
    fleet config status SITE/GATEWAY                 desired vs reported, drift
    fleet config diff SITE/GATEWAY A B
    fleet config history SITE/GATEWAY
    fleet config revert SITE/GATEWAY N -m COMMENT [--confirm-safety-change] [--key KEYFILE]
    fleet config tag SITE/GATEWAY [TAG ...]
    fleet config bulk FRAGMENT.toml [--site S] [--tag T] [--gateway SITE/GW ...] -m COMMENT
                      [--apply] [--confirm-safety-change] [--key KEYFILE]

The site's own profiles a pushed file finds by file (``profile_dirs``, ``MODEL.toml`` next to
it) are carried in the pushed document as ``[[profiles]]`` tables (:mod:`fleet.config.profiles`).
A push is validated as ``gateway check`` validates (the same messages, exit 2) and stored as
the gateway's next desired version; the running fleet server sends it within a second.
``bulk`` previews by default (each gateway's diff, problems and safety changes) and stores new
versions only with ``--apply``. Every change is audited as ``cli:UNIXUSER``.

``--key`` signs the new versions with that Ed25519 key file as they are made; ``sign`` needs
no database and runs where the key is (offline), for a given version number: push its output
with ``--signature`` (:mod:`fleet.config.signing`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts.actor import cli_actor
from fleet.cli import database
from fleet.config import bulk, signing, versions
from fleet.config.profiles import carry_profiles
from fleet.config.tags import set_tags
from fleet.config.versions import split_label
from fleet.errors import BadInput
from gateway.errors import KeyFileError
from gateway.trust import SigningKey


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], db: argparse.ArgumentParser
) -> None:
    config = commands.add_parser("config", help="gateways' configuration versions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )

    def gateway(p: argparse.ArgumentParser) -> None:
        p.add_argument("gateway", metavar="SITE/GATEWAY")

    def key(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--key", type=Path, metavar="KEYFILE", help="sign the new version(s) with this key"
        )

    def safety(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--confirm-safety-change",
            action="store_true",
            help="confirm a change that weakens or removes a standard interlock",
        )

    push = config.add_parser("push", parents=[db], help="push a site document as a new version")
    gateway(push)
    push.add_argument("file", metavar="SITE.toml", type=Path)
    push.add_argument("-m", "--message", default="", help="what changes and why")
    safety(push)
    key(push)
    push.add_argument(
        "--signature", type=Path, metavar="FILE.sig", help="a signature made by `fleet config sign`"
    )
    push.set_defaults(change=push_cmd)

    sign = config.add_parser("sign", help="sign a document for a version, offline (no database)")
    gateway(sign)
    sign.add_argument("file", metavar="SITE.toml", type=Path)
    sign.add_argument("--version", type=int, required=True, metavar="N", help="its version number")
    sign.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    sign.add_argument("-o", "--output", type=Path, metavar="FILE.sig", help="default SITE.toml.sig")
    sign.set_defaults(change=sign_cmd)

    show = config.add_parser("show", parents=[db], help="a version's document (the desired one)")
    gateway(show)
    show.add_argument("--version", type=int, default=None)
    show.set_defaults(change=show_cmd)

    status = config.add_parser("status", parents=[db], help="desired vs reported")
    gateway(status)
    status.set_defaults(change=status_cmd)

    diff = config.add_parser("diff", parents=[db], help="the diff between two versions")
    gateway(diff)
    diff.add_argument("a", type=int, metavar="A")
    diff.add_argument("b", type=int, metavar="B")
    diff.set_defaults(change=diff_cmd)

    history = config.add_parser("history", parents=[db], help="every version, newest first")
    gateway(history)
    history.set_defaults(change=history_cmd)

    revert = config.add_parser("revert", parents=[db], help="make an old version desired again")
    gateway(revert)
    revert.add_argument("version", type=int, metavar="N")
    revert.add_argument("-m", "--message", default="")
    safety(revert)
    key(revert)
    revert.set_defaults(change=revert_cmd)

    tag = config.add_parser("tag", parents=[db], help="set a gateway's tags (for bulk changes)")
    gateway(tag)
    tag.add_argument("tags", nargs="*", metavar="TAG")
    tag.set_defaults(change=tag_cmd)

    many = config.add_parser("bulk", parents=[db], help="merge a fragment into many gateways")
    many.add_argument("fragment", metavar="FRAGMENT.toml", type=Path)
    many.add_argument("--site", default=None)
    many.add_argument("--tag", default=None)
    many.add_argument("--gateway", action="append", default=[], metavar="SITE/GATEWAY")
    many.add_argument("-m", "--message", default="")
    many.add_argument("--apply", action="store_true", help="store the new versions")
    safety(many)
    key(many)
    many.set_defaults(change=bulk_cmd)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read it ({exc})") from None


def _signer(path: Path | None) -> SigningKey | None:
    if path is None:
        return None
    try:
        return SigningKey.load(path)
    except KeyFileError as exc:
        raise BadInput(f"--key: {exc}") from None


def push_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)
    text, carried = carry_profiles(_read(args.file), args.file)
    actor = cli_actor()
    if args.key is not None and args.signature is not None:
        raise BadInput("--key and --signature: give one (sign now, or a signature made before)")
    signer = _signer(args.key)
    detached = None if args.signature is None else signing.read_detached(args.signature)

    async def change(session: AsyncSession) -> versions.VersionView:
        return await versions.push(
            session,
            site,
            gw,
            text,
            author=actor.label,
            comment=args.message,
            confirm_safety=args.confirm_safety_change,
            source=str(args.file),
            signer=signer,
            signature=detached,
        )

    view = database.change(args.db, change)
    marked = " (safety change, confirmed)" if view.safety_change else ""
    signed = f", signed by key {view.signed_by}" if view.signed_by else ", unsigned"
    profiles = f"; the site's own profiles carried with it: {', '.join(carried)}" if carried else ""
    return f"{view.gateway}: version {view.number} is desired{marked}{signed}{profiles}"


def sign_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)
    if args.version < 1:
        raise BadInput(f"--version {args.version}: expected a version number 1, 2, …")
    text, _ = carry_profiles(_read(args.file), args.file)  # what push will store
    key = _signer(args.key)
    assert key is not None
    detached = signing.sign(key, site, gw, args.version, text)
    out = args.output or args.file.with_name(args.file.name + ".sig")
    try:
        out.write_text(detached.model_dump_json(indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{out}: cannot write it ({exc.strerror})") from None
    return (
        f"{out}: {args.file} signed by key {key.key_id} for {site}/{gw} version "
        f"{args.version} (push it with --signature {out})"
    )


def show_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)

    async def read(session: AsyncSession) -> versions.VersionDetail:
        return await versions.show(session, site, gw, args.version)

    return database.change(args.db, read).document.rstrip("\n")


def status_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)

    async def read(session: AsyncSession) -> versions.ConfigState:
        return await versions.state(session, site, gw)

    s = database.change(args.db, read)
    running = "a local document" if s.reported_version is None else f"version {s.reported_version}"
    lines = [
        f"{s.gateway}: desired version {s.desired}",
        f"  reported: {running if s.status else 'nothing yet'}"
        + (f", {s.status} (about version {s.about})" if s.status else ""),
    ]
    if s.reason:
        lines.append(f"  reason: {s.reason}")
    lines += [f"  {m}" for m in s.messages]
    lines.append(f"  drift: {s.drift_reason}" if s.drift else "  in step")
    return "\n".join(lines)


def diff_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)

    async def read(session: AsyncSession) -> str:
        return await versions.diff(session, site, gw, args.a, args.b)

    return database.change(args.db, read).rstrip("\n") or "(no difference)"


def history_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)

    async def read(session: AsyncSession) -> list[versions.VersionView]:
        return await versions.history(session, site, gw)

    lines = []
    for v in database.change(args.db, read):
        mark = "*" if v.desired else " "
        safety = " [safety change]" if v.safety_change else ""
        safety += f" [signed {v.signed_by}]" if v.signed_by else ""
        lines.append(
            f"{mark} {v.number:>4}  {v.created_at:%Y-%m-%d %H:%M}  {v.author}  {v.origin}"
            f"{safety}  {v.comment}"
        )
    return "\n".join(lines) or f"{args.gateway}: no versions yet"


def revert_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)
    actor = cli_actor()
    signer = _signer(args.key)

    async def change(session: AsyncSession) -> versions.VersionView:
        return await versions.revert(
            session,
            site,
            gw,
            args.version,
            author=actor.label,
            comment=args.message,
            confirm_safety=args.confirm_safety_change,
            signer=signer,
        )

    view = database.change(args.db, change)
    return f"{view.gateway}: version {view.number} (the text of {args.version}) is desired"


def tag_cmd(args: argparse.Namespace) -> str:
    site, gw = split_label(args.gateway)
    actor = cli_actor()

    async def change(session: AsyncSession) -> list[str]:
        return await set_tags(session, site, gw, args.tags, actor.label)

    return f"{args.gateway}: tags {', '.join(database.change(args.db, change)) or '(none)'}"


def bulk_cmd(args: argparse.Namespace) -> str:
    fragment = _read(args.fragment)
    selection = bulk.Selection(site=args.site, tag=args.tag, gateways=args.gateway)
    actor = cli_actor()
    signer = _signer(args.key)

    async def change(session: AsyncSession) -> list[bulk.BulkLine]:
        if not args.apply:
            return await bulk.preview(session, selection, fragment)
        return await bulk.apply(
            session,
            selection,
            fragment,
            author=actor.label,
            comment=args.message,
            confirm_safety=args.confirm_safety_change,
            signer=signer,
        )

    lines = database.change(args.db, change)
    out = []
    for line in lines:
        if line.problems:
            out += [f"✗ {p}" for p in line.problems]
        elif args.apply:
            out.append(f"✓ {line.gateway}: version {line.version}")
        else:
            out.append(f"✓ {line.gateway}: passes" + (" (safety change)" if line.safety else ""))
            out += [f"    weakens: {s}" for s in line.safety]
            out += [f"    {d}" for d in line.diff.splitlines()]
    done = sum(1 for line in lines if not line.problems)
    verb = "new versions" if args.apply else "would pass (preview; --apply to store)"
    out.append(f"{done} {verb}, {len(lines) - done} refused")
    return "\n".join(out)
