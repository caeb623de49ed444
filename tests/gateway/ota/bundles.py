"""Small bundles for the OTA tests: fake wheels (the bundle format does not open them)."""

from __future__ import annotations

from pathlib import Path

from gateway.ota.bundle import Manifest, build_bundle, this_platform, this_python
from gateway.trust import SigningKey

KEY = SigningKey.generate()


def wheelhouse(tmp_path: Path, version: str = "0.2.0") -> Path:
    house = tmp_path / f"wheelhouse-{version}"
    house.mkdir()
    (house / f"doorstep-{version}-py3-none-any.whl").write_bytes(
        b"wheel " * 1000 + version.encode()
    )
    (house / "dep-1.0-py3-none-any.whl").write_bytes(b"dependency" * 300)
    return house


def bundle(
    tmp_path: Path,
    version: str = "0.2.0",
    *,
    key: SigningKey | None = KEY,
    platform: str | None = None,
    firmware: Path | None = None,
    min_version: str = "0.0.1",
) -> tuple[Path, Manifest]:
    out = tmp_path / f"release-{version}.tar"
    manifest = build_bundle(
        out,
        wheelhouse=wheelhouse(tmp_path, version),
        firmware=firmware,
        version=version,
        min_version=min_version,
        platform=platform or this_platform(),
        python=this_python(),
        key=key,
    )
    return out, manifest


def real_wheel(house: Path, version: str) -> Path:
    """A minimal installable ``doorstep`` wheel (one marker module), for pip in a slot."""
    import base64
    import hashlib
    import zipfile

    files = {
        "doorstep_marker.py": f"VERSION = {version!r}\n".encode(),
        f"doorstep-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: doorstep\nVersion: {version}\n"
        ).encode(),
        f"doorstep-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files[f"doorstep-{version}.dist-info/RECORD"] = (
        "\n".join([*record, f"doorstep-{version}.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = house / f"doorstep-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path
