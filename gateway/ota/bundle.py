"""Release bundles: what a release carries, how it is signed, and how a gateway opens one.

A bundle is an uncompressed tar (wheels are compressed already) whose first member is
``manifest.json`` and second ``manifest.sig`` (``KEYID:BASE64``, see :mod:`gateway.trust`),
followed by the files the manifest lists, each a regular file under ``wheels/`` (the
gateway's wheel and every dependency's wheel for the target platform, so installing needs no
package index) or ``firmware/`` (the SIO-1 firmware sources that ``gateway flash`` compiles
and copies). The signature covers the manifest's exact bytes; the manifest names every
file's size and SHA-256, so one signature check and one hash per file prove the whole bundle.

:func:`open_bundle` is the gateway's only way in: it checks the signature, the platform, the
Python and the version before reading a file, then streams each member into a staging
directory hashing as it goes, refusing (:class:`BundleRefused`, with a reason code and a
sentence) anything the manifest does not describe exactly: a link, a path outside the
bundle, a missing, extra, longer or changed file. Nothing outside the staging directory is
written, and a refused bundle leaves no staging directory behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import BundleRefused, SignatureError
from gateway.flash.firmware import compile_firmware, firmware_sources, load_firmware
from gateway.trust import Signature, SigningKey, TrustedKeys
from gateway.validation import format_validation_error

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
AREAS = ("wheels", "firmware")
MAX_MANIFEST = 1024 * 1024
_CHUNK = 256 * 1024
VERSION_PATTERN = r"^\d+(\.\d+){0,3}$"
Version = Annotated[str, Field(pattern=VERSION_PATTERN, max_length=32)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def parse_version(text: str) -> tuple[int, ...]:
    """``1.2.10`` → (1, 2, 10): releases are dotted numbers, compared number by number."""
    if not re.match(VERSION_PATTERN, text):
        raise ValueError(f"version {text!r}: expected dotted numbers such as 1.4.2")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def this_platform() -> str:
    """The wheel platform tag of this machine, e.g. ``linux_aarch64`` on a 64-bit Pi."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: Sha256


class Manifest(BaseModel):
    """What a release is and what it carries; signed as the exact bytes of its JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    version: Version
    min_version: Version  # the oldest running version this release may replace
    platform: str  # wheel platform tag, e.g. linux_aarch64
    python: str = Field(pattern=r"^3\.\d+$")
    firmware: str | None = Field(default=None, pattern=r"^\d+\.\d+$")  # SIO-1, if carried
    #: the oldest SIO-1 firmware this release's gateway works with: when the board cannot be
    #: brought to it, the update stops before the switch (docs/updates.md)
    firmware_min: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    created: float
    files: list[FileEntry]

    def encode(self) -> bytes:
        data = self.model_dump()
        if data["firmware_min"] is None:  # absent, so gateways from before can read it
            del data["firmware_min"]
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def wheels(self) -> list[FileEntry]:
        return [f for f in self.files if f.path.startswith("wheels/")]


def check_member_path(name: str) -> str:
    """A path inside the bundle (``wheels/x.whl``); BundleRefused('path-escape') otherwise."""
    pure = PurePosixPath(name)
    if (
        not name
        or pure.is_absolute()
        or "\\" in name
        or any(part in ("..", ".", "") for part in name.split("/"))
        or pure.parts[0] not in AREAS
        or len(pure.parts) < 2
    ):
        raise BundleRefused(
            "path-escape",
            f"bundle entry {name!r} is outside the bundle's wheels/ and firmware/ folders",
        )
    return name


def parse_manifest(data: bytes) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise BundleRefused(
            "bad-manifest", f"the manifest is not valid: {format_validation_error(exc)}"
        ) from None
    seen: set[str] = set()
    for entry in manifest.files:
        check_member_path(entry.path)
        if entry.path in seen:
            raise BundleRefused("bad-manifest", f"the manifest lists {entry.path} twice")
        seen.add(entry.path)
    return manifest


@dataclass(frozen=True)
class BundleHead:
    """A bundle's manifest as read, before anything is trusted."""

    manifest: Manifest
    document: bytes  # the manifest's exact bytes, which the signature covers
    signature: str | None
    pending: tarfile.TarInfo | None = None  # the member read after the head, if any


def read_head(source: Path | IO[bytes]) -> BundleHead:
    """The manifest and signature at the start of a bundle (nothing verified yet)."""
    with _open_tar(source) as tar:
        return _head(tar)


def _open_tar(source: Path | IO[bytes]) -> tarfile.TarFile:
    try:
        if isinstance(source, Path):
            return tarfile.open(source, mode="r|")
        return tarfile.open(fileobj=source, mode="r|")
    except (tarfile.TarError, OSError) as exc:
        raise BundleRefused("not-a-bundle", f"not a release bundle (tar): {exc}") from None


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isreg() or member.size > limit:
        raise BundleRefused("not-a-bundle", f"{member.name}: not a small regular file")
    f = tar.extractfile(member)
    assert f is not None
    return f.read()


def _head(tar: tarfile.TarFile) -> BundleHead:
    try:
        first = tar.next()
        if first is None or first.name != MANIFEST:
            raise BundleRefused("not-a-bundle", f"the bundle does not start with {MANIFEST}")
        document = _read_member(tar, first, MAX_MANIFEST)
        manifest = parse_manifest(document)
        second = tar.next()
        signature = None
        if second is not None and second.name == SIGNATURE:
            signature = _read_member(tar, second, 4096).decode("ascii", "replace").strip()
            second = None
    except tarfile.TarError as exc:
        raise BundleRefused("not-a-bundle", f"the bundle is damaged: {exc}") from None
    return BundleHead(manifest, document, signature, second)


@dataclass(frozen=True)
class Expectation:
    """What the gateway that opens a bundle requires of it."""

    platform: str
    python: str
    running: str  # the running version ("" if unknown: no downgrade check possible)
    allow_downgrade: bool = False  # an operator's explicit, audited command


@dataclass(frozen=True)
class OpenedBundle:
    manifest: Manifest
    key_id: str
    directory: Path  # the staging directory holding wheels/ and firmware/


def check_head(head: BundleHead, trusted: TrustedKeys, expect: Expectation) -> str:
    """Signature, platform, Python and version of a bundle; the signing key's id."""
    if not trusted:
        raise BundleRefused(
            "unknown-key", f"this gateway trusts no signing key ({trusted.source or 'no keys'})"
        )
    try:
        key = trusted.verify(head.document, head.signature)
    except SignatureError as exc:
        raise BundleRefused(exc.reason, f"release refused: {exc}") from None
    m = head.manifest
    if m.platform not in (expect.platform, "any"):
        raise BundleRefused(
            "wrong-platform",
            f"release {m.version} is built for {m.platform}, this gateway is {expect.platform}",
        )
    if m.python != expect.python:
        raise BundleRefused(
            "wrong-python",
            f"release {m.version} is built for Python {m.python}, this gateway runs "
            f"{expect.python}",
        )
    if expect.running:
        try:
            running = parse_version(expect.running)
        except ValueError:
            running = None
        if running is not None:
            if parse_version(m.version) < running and not expect.allow_downgrade:
                raise BundleRefused(
                    "downgrade",
                    f"release {m.version} is older than the running {expect.running} "
                    "(a downgrade needs an operator's forced command)",
                )
            if running < parse_version(m.min_version) and not expect.allow_downgrade:
                raise BundleRefused(
                    "too-old",
                    f"release {m.version} replaces {m.min_version} or later; this gateway "
                    f"runs {expect.running}",
                )
    return key


def open_bundle(
    path: Path, trusted: TrustedKeys, expect: Expectation, staging: Path
) -> OpenedBundle:
    """Verify a bundle and unpack its files into ``staging`` (created; replaced if there).

    Every check that needs no file runs first; then each member is streamed into staging
    while hashed, and the bundle is refused at the first member that is not exactly what
    the manifest says. On refusal the staging directory is removed."""
    if staging.exists():
        shutil.rmtree(staging)
    try:
        with _open_tar(path) as tar:
            head = _head(tar)
            key = check_head(head, trusted, expect)
            staging.mkdir(parents=True, mode=0o700)
            _unpack(tar, head.pending, head.manifest, staging)
    except BundleRefused:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleRefused("not-a-bundle", f"the bundle is damaged or cut short: {exc}") from None
    return OpenedBundle(head.manifest, key, staging)


def _members(tar: tarfile.TarFile, first: tarfile.TarInfo | None) -> Iterable[tarfile.TarInfo]:
    if first is not None:
        yield first
    while (member := tar.next()) is not None:
        yield member


def check_files(path: Path) -> BundleHead:
    """Every file of a bundle against its manifest, writing nothing (the fleet's upload
    check); the signature is not judged here, only read."""
    try:
        with _open_tar(path) as tar:
            head = _head(tar)
            _unpack(tar, head.pending, head.manifest, None)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused("not-a-bundle", f"the bundle is damaged or cut short: {exc}") from None
    return head


def _unpack(
    tar: tarfile.TarFile, first: tarfile.TarInfo | None, manifest: Manifest, staging: Path | None
) -> None:
    expected = {f.path: f for f in manifest.files}
    done: set[str] = set()
    for member in _members(tar, first):
        name = member.name
        if member.issym() or member.islnk():
            raise BundleRefused(
                "link", f"bundle entry {name!r} is a link to {member.linkname!r}; links refused"
            )
        if not member.isreg():
            raise BundleRefused("not-a-file", f"bundle entry {name!r} is not a regular file")
        check_member_path(name)
        entry = expected.get(name)
        if entry is None or name in done:
            raise BundleRefused("tampered", f"bundle entry {name!r} is not in the manifest")
        if member.size != entry.size:
            raise BundleRefused(
                "tampered",
                f"{name}: {member.size} bytes, the signed manifest says {entry.size}",
            )
        source = tar.extractfile(member)
        assert source is not None
        digest = hashlib.sha256()
        if staging is None:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
        else:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with target.open("xb") as out:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise BundleRefused(
                "tampered", f"{name}: its SHA-256 is not the one in the signed manifest"
            )
        done.add(name)
    missing = sorted(set(expected) - done)
    if missing:
        raise BundleRefused("tampered", f"the bundle lacks {', '.join(missing)}")


# -- building and signing (the release machine and the fleet's CLI) -------------------------


def file_entry(path: str, data_path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with data_path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return FileEntry(
        path=check_member_path(path), size=data_path.stat().st_size, sha256=digest.hexdigest()
    )


def make_manifest(
    files: dict[str, Path],
    *,
    version: str,
    min_version: str,
    platform: str,
    python: str,
    firmware: str | None,
    firmware_min: str | None = None,
) -> Manifest:
    """The manifest for ``files`` (bundle path → file on disk), hashed here."""
    entries = [file_entry(name, files[name]) for name in sorted(files)]
    try:
        return Manifest(
            version=version,
            min_version=min_version,
            platform=platform,
            python=python,
            firmware=firmware,
            firmware_min=firmware_min,
            created=time.time(),
            files=entries,
        )
    except ValidationError as exc:
        raise BundleRefused("bad-manifest", format_validation_error(exc)) from None


def build_bundle(
    out: Path,
    *,
    wheelhouse: Path,
    firmware: Path | None,
    version: str,
    min_version: str,
    platform: str,
    python: str,
    key: SigningKey | None,
    firmware_min: str | None = None,
) -> Manifest:
    """A bundle from a wheelhouse (every ``*.whl`` in it) and the SIO-1 firmware sources
    (checked to compile, their version read from them); signed if a key is given.
    ``firmware_min``: the oldest SIO-1 firmware the release's gateway works with."""
    files: dict[str, Path] = {f"wheels/{w.name}": w for w in sorted(wheelhouse.glob("*.whl"))}
    if not files:
        raise BundleRefused("no-wheels", f"{wheelhouse}: no wheels (*.whl) to bundle")
    for name in files:
        tag = name.removesuffix(".whl").rsplit("-", 1)[-1]
        if tag != "any" and platform != "any" and not _tag_fits(tag, platform):
            raise BundleRefused(
                "wrong-platform", f"{name} is built for {tag}, the release targets {platform}"
            )
    firmware_version = None
    if firmware is not None:
        loaded = load_firmware(firmware)
        compile_firmware(firmware)  # a release whose firmware does not compile is not made
        firmware_version = loaded.version_text
        files |= {f"firmware/{p.name}": p for p in firmware_sources(firmware)}
    manifest = make_manifest(
        files,
        version=version,
        min_version=min_version,
        platform=platform,
        python=python,
        firmware=firmware_version,
        firmware_min=firmware_min,
    )
    signature = key.sign(manifest.encode()) if key is not None else None
    write_bundle(out, manifest, files, signature)
    return manifest


def _tag_fits(tag: str, platform: str) -> bool:
    """A wheel's platform tag (``manylinux_2_17_aarch64.manylinux2014_aarch64``) runs on
    ``platform`` (``linux_aarch64``) when it is that or a manylinux/musllinux of its CPU."""
    arch = platform.removeprefix("linux_")
    return any(
        t == platform or (platform.startswith("linux_") and t.endswith("_" + arch))
        for t in tag.split(".")
    )


def write_bundle(
    out: Path, manifest: Manifest, files: dict[str, Path], signature: Signature | None
) -> None:
    """Write the tar: manifest, signature (if any), then the files in manifest order."""
    document = manifest.encode()
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, document)
        if signature is not None:
            _add_bytes(tar, SIGNATURE, (signature.encode() + "\n").encode())
        for entry in manifest.files:
            info = tar.gettarinfo(str(files[entry.path]), arcname=entry.path)
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
            with files[entry.path].open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(out)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def sign_bundle(path: Path, key: SigningKey) -> Signature:
    """Sign a bundle's manifest in place (replacing any signature it had)."""
    with _open_tar(path) as tar:
        head = _head(tar)
    signature = key.sign(head.document)
    tmp = path.with_name(path.name + ".part")
    with (
        tarfile.open(path, mode="r:") as src,
        tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src:
            if member.name == SIGNATURE:
                continue
            if member.name == MANIFEST:
                dst.addfile(member, src.extractfile(member))
                _add_bytes(dst, SIGNATURE, (signature.encode() + "\n").encode())
                continue
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    tmp.replace(path)
    return signature
