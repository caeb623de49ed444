"""``fleet release``: signing keys, bundles, and releases in the fleet's store.

    fleet release keygen KEYFILE                 a new Ed25519 key: KEYFILE (0600) and KEYFILE.pub
    fleet release build --wheelhouse DIR --version V [--min-version V] [--firmware DIR]
                        [--platform TAG] [--python X.Y] [--key KEYFILE] -o BUNDLE
    fleet release sign --key KEYFILE BUNDLE      sign (or re-sign) a bundle's manifest in place
    fleet release upload BUNDLE [--db URL] [--releases-dir DIR]
    fleet release list [--db URL]

keygen, build and sign need no database and can run on another machine than the fleet (the
private key never has to come near it); upload and list work on the fleet's database. Over
HTTP, ``POST /api/releases`` with the bundle as the body does what upload does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts.actor import cli_actor
from fleet.cli import database
from fleet.core.settings import Settings
from fleet.errors import BadInput, ReleaseError
from fleet.releases.store import BundleStore, add_release, list_releases, releases_dir
from gateway.errors import BundleRefused, FirmwareError, KeyFileError
from gateway.ota.bundle import build_bundle, sign_bundle, this_platform, this_python
from gateway.trust import SigningKey


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], db: argparse.ArgumentParser
) -> None:
    release = commands.add_parser("release", help="signing keys and release bundles")
    actions = release.add_subparsers(dest="action", required=True, metavar="ACTION")

    keygen = actions.add_parser("keygen", help="make a new Ed25519 signing key")
    keygen.add_argument("keyfile", type=Path, metavar="KEYFILE")
    keygen.set_defaults(change=keygen_key)

    build = actions.add_parser("build", help="make a bundle from a wheelhouse")
    build.add_argument("--wheelhouse", type=Path, required=True, metavar="DIR")
    build.add_argument("--version", required=True, help="this release's version, e.g. 0.2.0")
    build.add_argument("--min-version", default="0.0.0", help="the oldest version it may replace")
    build.add_argument("--firmware", type=Path, metavar="DIR", help="SIO-1 firmware sources")
    build.add_argument("--platform", default=this_platform(), help="wheel platform tag")
    build.add_argument("--python", default=this_python(), help="X.Y the gateway runs")
    build.add_argument("--key", type=Path, metavar="KEYFILE", help="sign it now")
    build.add_argument("-o", "--output", type=Path, required=True, metavar="BUNDLE")
    build.set_defaults(change=build_release)

    sign = actions.add_parser("sign", help="sign a bundle's manifest")
    sign.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    sign.add_argument("bundle", type=Path, metavar="BUNDLE")
    sign.set_defaults(change=sign_release)

    upload = actions.add_parser("upload", parents=[db], help="add a bundle to the fleet")
    upload.add_argument("bundle", type=Path, metavar="BUNDLE")
    upload.add_argument("--releases-dir", type=Path, metavar="DIR")
    upload.set_defaults(change=upload_release)

    listing = actions.add_parser("list", parents=[db], help="the releases in the fleet")
    listing.set_defaults(change=list_release)


def _key(path: Path) -> SigningKey:
    try:
        return SigningKey.load(path)
    except KeyFileError as exc:
        raise BadInput(f"--key: {exc}") from None


def keygen_key(args: argparse.Namespace) -> str:
    key = SigningKey.generate()
    try:
        public = key.write(args.keyfile)
    except (KeyFileError, OSError) as exc:
        raise BadInput(f"KEYFILE: {exc}") from None
    return (
        f"signing key {key.key_id}: private {args.keyfile} (keep it off the fleet), public "
        f"{public} (copy it into each gateway's trusted keys directory)"
    )


def build_release(args: argparse.Namespace) -> str:
    key = _key(args.key) if args.key else None
    try:
        manifest = build_bundle(
            args.output,
            wheelhouse=args.wheelhouse,
            firmware=args.firmware,
            version=args.version,
            min_version=args.min_version,
            platform=args.platform,
            python=args.python,
            key=key,
        )
    except (BundleRefused, FirmwareError) as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"{exc.filename}: {exc.strerror}") from None
    signed = f"signed by {key.key_id}" if key else "unsigned: sign it with fleet release sign"
    firmware = f", SIO-1 firmware {manifest.firmware}" if manifest.firmware else ""
    return (
        f"release {manifest.version} for {manifest.platform} / Python {manifest.python}"
        f"{firmware}: {len(manifest.files)} files, {manifest.total_size} bytes in "
        f"{args.output}, {signed}"
    )


def sign_release(args: argparse.Namespace) -> str:
    key = _key(args.key)
    try:
        sign_bundle(args.bundle, key)
    except BundleRefused as exc:
        raise BadInput(f"BUNDLE {args.bundle}: {exc}") from None
    return f"{args.bundle}: signed by key {key.key_id}"


def upload_release(args: argparse.Namespace) -> str:
    settings = Settings(database_url=database.url(args.db), releases_dir=args.releases_dir)
    store = BundleStore(releases_dir(settings))
    try:
        received = store.receive_file(args.bundle)
    except ReleaseError as exc:
        raise BadInput(f"BUNDLE {args.bundle}: {exc}") from None
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        release = await add_release(session, received, actor.label)
        return (
            f"release {release.version} for {release.platform} (id {release.id}, signed by "
            f"{release.key_id}) stored as {received.path}"
        )

    return database.change(args.db, change)


def list_release(args: argparse.Namespace) -> str:
    async def listing(session: AsyncSession) -> str:
        rows = [
            f"{r.id}\t{r.version}\t{r.platform}\tpy{r.python}\tfirmware {r.firmware or '-'}"
            f"\tkey {r.key_id}\t{r.size} bytes"
            for r in await list_releases(session)
        ]
        return "\n".join(rows) if rows else "no releases"

    return database.change(args.db, listing)
