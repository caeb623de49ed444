"""Signed configuration versions: the fleet signs at push time with its key file, or an
operator signs offline and pushes the signature beside the document.

What is signed is :func:`gateway.wire.config.signed_statement`: the gateway's site and id, the
version number, the document's SHA-256 and the document. A gateway that trusts a key
(:mod:`gateway.trust`) checks it against its own identity and the version it is given, so a
signed document cannot be replayed as another version or to another gateway.

* **The fleet's key** (``fleet serve --config-signing-key PATH``, ``fleet config push --key``):
  a file on the fleet's server, read when a version is made; the database stores the
  signature, never the key.
* **Offline**: ``fleet config sign SITE/GW FILE --version N --key KEY`` on the machine that
  holds the key writes a :class:`DetachedSignature` (JSON: gateway, version, hash, signature
  and the public key); ``fleet config push SITE/GW FILE --signature FILE.sig`` stores it with
  the version. The fleet checks that it is for this gateway, this document and the version
  the push becomes, and that it matches its public key, so a mistake is refused at the push
  rather than by the gateway. Which keys count is the gateway's business alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, Field, ValidationError

from fleet.errors import ConfigRefused, ConfigVersionError
from gateway.errors import KeyFileError, SignatureError
from gateway.trust import Signature, SigningKey, key_id
from gateway.wire.config import document_hash, signed_statement

MAX_SIGNATURE_FILE = 16 * 1024


class DetachedSignature(BaseModel):
    """What ``fleet config sign`` writes and ``push --signature`` takes (the API's
    ``signature`` field)."""

    gateway: str = Field(max_length=200, description="SITE/GATEWAY it was signed for")
    version: int = Field(ge=1, description="the version number it was signed for")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the document's SHA-256")
    signature: str = Field(max_length=200, description="KEYID:BASE64")
    public_key: str = Field(max_length=1000, description="the signing key's public key, PEM")


def sign(key: SigningKey, site: str, gateway: str, version: int, text: str) -> DetachedSignature:
    statement = signed_statement(site, gateway, version, text)
    return DetachedSignature(
        gateway=f"{site}/{gateway}",
        version=version,
        sha256=document_hash(text),
        signature=key.sign(statement).encode(),
        public_key=key.public_pem().decode("ascii"),
    )


def read_detached(path: Path) -> DetachedSignature:
    """A signature file; ConfigRefused naming the file and what is wrong."""
    where = f"{path}"
    try:
        data = path.read_bytes()[: MAX_SIGNATURE_FILE + 1]
    except OSError as exc:
        raise ConfigRefused(where, [f"cannot read it ({exc.strerror})"]) from None
    if len(data) > MAX_SIGNATURE_FILE:
        raise ConfigRefused(where, ["not a signature file (larger than 16 KiB)"])
    try:
        return DetachedSignature.model_validate(json.loads(data))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise ConfigRefused(
            where, [f"not a signature file from `fleet config sign` ({first})"]
        ) from None


def check_detached(
    detached: DetachedSignature, site: str, gateway: str, version: int, text: str
) -> str:
    """The ``KEYID:BASE64`` of ``detached`` once it is for this gateway, version and
    document and matches its own public key; ConfigRefused saying which part is wrong."""
    where = "signature"
    problems = []
    if detached.gateway != f"{site}/{gateway}":
        problems.append(f"signature.gateway: signed for {detached.gateway}, not {site}/{gateway}")
    if detached.version != version:
        problems.append(
            f"signature.version: signed for version {detached.version}, this push becomes "
            f"version {version}: sign it again with --version {version}"
        )
    if detached.sha256 != document_hash(text):
        problems.append("signature.sha256: signed over another document (changed since signing)")
    if problems:
        raise ConfigRefused(where, problems)
    try:
        public = serialization.load_pem_public_key(detached.public_key.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ConfigRefused(where, ["signature.public_key: not a PEM public key"]) from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigRefused(where, ["signature.public_key: not an Ed25519 public key"])
    try:
        sig = Signature.parse(detached.signature)
    except SignatureError as exc:
        raise ConfigRefused(where, [f"signature.signature: {exc}"]) from None
    if sig.key_id != key_id(public):
        raise ConfigRefused(
            where, [f"signature.signature: made by key {sig.key_id}, not by its public_key"]
        )
    try:
        public.verify(sig.value, signed_statement(site, gateway, version, text))
    except InvalidSignature:
        raise ConfigRefused(
            where, ["signature.signature: does not match this document, gateway and version"]
        ) from None
    return sig.encode()


def fleet_key(path: Path | None) -> SigningKey | None:
    """The fleet's configuration signing key (None: versions are stored unsigned)."""
    if path is None:
        return None
    try:
        return SigningKey.load(path)
    except KeyFileError as exc:
        raise ConfigVersionError(f"the configuration signing key: {exc}") from None
