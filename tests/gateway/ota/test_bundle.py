"""Nothing unverified is installed: every refusal names its reason and leaves nothing behind."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BundleRefused
from gateway.ota.bundle import (
    MANIFEST,
    SIGNATURE,
    Expectation,
    check_member_path,
    open_bundle,
    read_head,
    sign_bundle,
    this_platform,
    this_python,
)
from gateway.trust import SigningKey, TrustedKeys
from tests.gateway.ota.bundles import KEY, bundle

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"
TRUSTED = TrustedKeys.of(KEY.public)


def expect(running: str = "0.1.0", *, force: bool = False) -> Expectation:
    return Expectation(this_platform(), this_python(), running, allow_downgrade=force)


def refused(
    path: Path, tmp_path: Path, running: str = "0.1.0", trusted: TrustedKeys = TRUSTED
) -> BundleRefused:
    staging = tmp_path / "staging"
    with pytest.raises(BundleRefused) as exc:
        open_bundle(path, trusted, expect(running), staging)
    assert not staging.exists(), "a refused bundle leaves nothing unpacked"
    return exc.value


def test_a_signed_bundle_opens_with_every_file_hashed(tmp_path: Path) -> None:
    path, manifest = bundle(tmp_path, firmware=FIRMWARE)
    opened = open_bundle(path, TRUSTED, expect(), tmp_path / "staging")
    assert opened.key_id == KEY.key_id
    assert manifest.firmware is not None
    assert (opened.directory / "firmware" / "main.py").read_bytes() == (
        FIRMWARE / "main.py"
    ).read_bytes()
    assert sorted(p.name for p in (opened.directory / "wheels").iterdir()) == [
        "dep-1.0-py3-none-any.whl",
        "doorstep-0.2.0-py3-none-any.whl",
    ]


def test_unsigned_then_signed_elsewhere(tmp_path: Path) -> None:
    path, _ = bundle(tmp_path, key=None)
    assert refused(path, tmp_path).reason == "unsigned"
    sign_bundle(path, KEY)  # on the release manager's machine
    assert read_head(path).signature is not None
    assert open_bundle(path, TRUSTED, expect(), tmp_path / "s").key_id == KEY.key_id


def test_unknown_key_wrong_platform_downgrade_and_too_old(tmp_path: Path) -> None:
    path, _ = bundle(tmp_path, key=SigningKey.generate())
    assert refused(path, tmp_path).reason == "unknown-key"
    other = tmp_path / "other"
    other.mkdir()
    path, _ = bundle(other, platform="win_amd64")
    err = refused(path, tmp_path)
    assert err.reason == "wrong-platform"
    assert "win_amd64" in str(err)
    path, _ = bundle(tmp_path, version="0.1.5")
    err = refused(path, tmp_path, running="0.2.0")
    assert (err.reason, "older than the running 0.2.0" in str(err)) == ("downgrade", True)
    assert open_bundle(path, TRUSTED, expect("0.2.0", force=True), tmp_path / "s")
    third = tmp_path / "third"
    third.mkdir()
    path, _ = bundle(third, version="0.9.0", min_version="0.5.0")
    assert refused(path, tmp_path, running="0.2.0").reason == "too-old"


def _rewrite(path: Path, change: str) -> Path:
    """A copy of a signed bundle with one member changed the way an attacker would."""
    out = path.with_name(f"{change}.tar")
    with tarfile.open(path) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            if change == "tamper" and member.name.endswith("dep-1.0-py3-none-any.whl"):
                data = data[:-1] + b"X"
            if change == "escape" and member.name.startswith("wheels/dep"):
                member.name = "wheels/../../../etc/cron.d/x"
            if change == "drop-sig" and member.name == SIGNATURE:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
        if change == "symlink":
            link = tarfile.TarInfo("wheels/evil.whl")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            dst.addfile(link)
        if change == "extra":
            extra = tarfile.TarInfo("wheels/extra.whl")
            extra.size = 3
            dst.addfile(extra, io.BytesIO(b"abc"))
    return out


@pytest.mark.parametrize(
    ("change", "reason", "says"),
    [
        ("tamper", "tampered", "SHA-256 is not the one in the signed manifest"),
        ("escape", "path-escape", "outside the bundle"),
        ("symlink", "link", "link to '/etc/passwd'"),
        ("extra", "tampered", "not in the manifest"),
        ("drop-sig", "unsigned", "not signed"),
    ],
)
def test_hostile_bundles_are_refused_with_their_reason(
    tmp_path: Path, change: str, reason: str, says: str
) -> None:
    path, _ = bundle(tmp_path)
    err = refused(_rewrite(path, change), tmp_path)
    assert err.reason == reason
    assert says in str(err)
    assert not list(tmp_path.glob("etc")), "nothing written outside staging"


def test_a_manifest_changed_after_signing_is_refused(tmp_path: Path) -> None:
    path, _ = bundle(tmp_path)
    out = tmp_path / "forged.tar"
    with tarfile.open(path) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == MANIFEST:
                data = data.replace(b'"0.2.0"', b'"9.9.9"')
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    assert refused(out, tmp_path).reason == "bad-signature"


@given(
    st.lists(
        st.sampled_from(["wheels", "firmware", "..", ".", "", "a", "/", "etc"]),
        min_size=1,
        max_size=5,
    )
)
def test_member_paths_never_leave_the_bundle(parts: list[str]) -> None:
    name = "/".join(parts)
    stays = ".." not in parts and "." not in parts and "" not in parts and "/" not in parts
    if not (stays and parts[0] in ("wheels", "firmware") and len(parts) > 1):
        with pytest.raises(BundleRefused, match="outside the bundle"):
            check_member_path(name)
        return
    checked = check_member_path(name)
    resolved = (Path("/stage") / checked).resolve()
    assert resolved.is_relative_to(Path("/stage"))
    assert resolved.parts[2] in ("wheels", "firmware")
