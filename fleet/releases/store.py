"""Release bundles on the fleet's disk, and what is recorded of each in the database.

An upload is streamed into a temporary file beside the store while its SHA-256 is computed,
checked as a gateway would check it (every file against the signed manifest; unsigned
bundles refused — sign with ``fleet release sign``), then renamed to ``<sha256>.tar``.
Nothing half-written is ever served: a refused or interrupted upload leaves no file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.core.settings import Settings, data_dir
from fleet.errors import ReleaseError, ReleaseExists, ReleaseNotFound
from fleet.releases.tables import Release
from gateway.errors import BundleRefused, SignatureError
from gateway.ota.bundle import BundleHead, check_files
from gateway.trust import Signature

#: the largest bundle the fleet accepts (a Pi's wheelhouse is tens of MiB)
MAX_BUNDLE = 1024 * 1024 * 1024


def releases_dir(settings: Settings) -> Path:
    directory = settings.releases_dir or data_dir() / "releases"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


@dataclass(frozen=True)
class Received:
    """An uploaded bundle, checked and on disk."""

    path: Path
    sha256: str
    size: int
    head: BundleHead
    key_id: str


class BundleStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.tar"

    async def receive(self, chunks: AsyncIterator[bytes]) -> Received:
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=self.directory)
        temp = Path(name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > MAX_BUNDLE:
                        raise ReleaseError(f"bundle larger than {MAX_BUNDLE} bytes: refused")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            # hashing every file of a large bundle is seconds of CPU: not on the event loop
            return await asyncio.to_thread(self._accept, temp, digest.hexdigest(), size)
        finally:
            await asyncio.to_thread(temp.unlink, missing_ok=True)

    def receive_file(self, source: Path) -> Received:
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=self.directory)
        temp = Path(name)
        try:
            digest = hashlib.sha256()
            with source.open("rb") as src, os.fdopen(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            return self._accept(temp, digest.hexdigest(), temp.stat().st_size)
        except OSError as exc:
            raise ReleaseError(f"{source}: cannot read ({exc.strerror})") from None
        finally:
            temp.unlink(missing_ok=True)

    def _accept(self, temp: Path, sha256: str, size: int) -> Received:
        try:
            head = check_files(temp)
        except BundleRefused as exc:
            raise ReleaseError(f"bundle refused ({exc.reason}): {exc}") from None
        if head.signature is None:
            raise ReleaseError(
                "bundle refused (unsigned): sign it first (fleet release sign --key KEY BUNDLE)"
            )
        try:
            key_id = Signature.parse(head.signature).key_id
        except SignatureError as exc:
            raise ReleaseError(f"bundle refused (bad-signature): {exc}") from None
        final = self.path(sha256)
        temp.replace(final)
        return Received(final, sha256, size, head, key_id)


async def add_release(session: AsyncSession, received: Received, actor: str) -> Release:
    """Record an uploaded bundle; ReleaseExists if this version and platform is there."""
    m = received.head.manifest
    existing = await session.scalar(
        select(Release).where(Release.version == m.version, Release.platform == m.platform)
    )
    if existing is not None:
        if existing.sha256 != received.sha256:
            raise ReleaseExists(
                f"release {m.version} for {m.platform} exists with other contents "
                f"(bundle {existing.sha256[:12]}); a release is never replaced: bump the version"
            )
        return existing
    release = Release(
        version=m.version,
        platform=m.platform,
        python=m.python,
        min_version=m.min_version,
        firmware=m.firmware,
        key_id=received.key_id,
        size=received.size,
        sha256=received.sha256,
        manifest=m.model_dump(),
        uploaded_by=actor,
    )
    session.add(release)
    await session.flush()
    audit.record(
        session, actor, "release.upload", f"release:{m.version}",
        {"platform": m.platform, "sha256": received.sha256, "key": received.key_id},
    )  # fmt: skip
    return release


async def find_release(session: AsyncSession, version: str, platform: str | None) -> Release:
    query = select(Release).where(Release.version == version)
    if platform is not None:
        query = query.where(Release.platform == platform)
    found = list((await session.scalars(query)).all())
    if not found:
        where = f" for {platform}" if platform else ""
        raise ReleaseNotFound(f"no release {version}{where}")
    if len(found) > 1:
        platforms = ", ".join(sorted(r.platform for r in found))
        raise ReleaseError(f"release {version} exists for {platforms}: name the platform")
    return found[0]


async def list_releases(session: AsyncSession) -> Iterable[Release]:
    return (await session.scalars(select(Release).order_by(Release.id.desc()))).all()
