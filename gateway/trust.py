"""Ed25519 signatures: the keys a gateway trusts and the key an operator signs with.

A release manifest and a desired configuration are signed documents: the exact bytes of
the document and a detached :class:`Signature` (which key, and the 64 signature bytes).
A gateway trusts every public key in its keys directory (one PEM file each, any name ending
in ``.pub`` or ``.pem``), so a new key can be added before the old one is retired. A key is
named by its id: the first 16 hex digits of the SHA-256 of its raw 32 bytes, the same on
the machine that signs and on every gateway. The private key lives in a file on the machine
that signs (0600); nothing here stores it anywhere else.

The maths is the ``cryptography`` library's (OpenSSL); this module only names keys, reads
and writes their files and says why a signature is refused.

On the wire and in a bundle a signature is one line of text, ``KEYID:BASE64``
(:meth:`Signature.encode` / :meth:`Signature.parse`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import KeyFileError, SignatureError

KEY_SUFFIXES = (".pub", ".pem")
#: the trusted keys' directory inside a gateway's state directory (releases and configurations)
TRUSTED_KEYS_DIR = "trusted-keys"
_SIGNATURE_BYTES = 64


def key_id(public: Ed25519PublicKey) -> str:
    """16 hex digits naming a public key (SHA-256 of its raw bytes)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signature:
    """A detached signature: the id of the key that made it and its 64 bytes."""

    key_id: str
    value: bytes

    def encode(self) -> str:
        return f"{self.key_id}:{base64.b64encode(self.value).decode('ascii')}"

    @classmethod
    def parse(cls, text: str) -> Signature:
        """``KEYID:BASE64`` → Signature; SignatureError('bad-signature') saying what is wrong."""
        kid, sep, b64 = text.strip().partition(":")
        if not sep or len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
            raise SignatureError(
                "bad-signature",
                f"signature {text[:40]!r}: expected KEYID:BASE64 with a 16-hex-digit key id",
            )
        try:
            value = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("bad-signature", f"signature for key {kid}: not base64") from None
        if len(value) != _SIGNATURE_BYTES:
            raise SignatureError(
                "bad-signature",
                f"signature for key {kid}: {len(value)} bytes, an Ed25519 signature has 64",
            )
        return cls(kid, value)


class SigningKey:
    """An operator's private key, read from its file on the machine that signs."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"signing key {path}: cannot read ({exc.strerror})") from None
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(
                f"signing key {path}: not an unencrypted PEM private key ({exc})"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(
                f"signing key {path}: a {type(private).__name__}, expected an Ed25519 key"
            )
        return cls(private)

    def sign(self, document: bytes) -> Signature:
        return Signature(self.key_id, self._private.sign(document))

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return public_pem(self.public)

    def write(self, private_path: Path) -> Path:
        """Write the private key (0600, refusing to overwrite) and its public key beside it
        (``<name>.pub``); returns the public key's path."""
        public_path = private_path.with_suffix(".pub")
        for path in (private_path, public_path):
            if path.exists():
                raise KeyFileError(f"{path}: already exists; not overwriting a key")
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.private_pem())
            f.flush()
            os.fsync(f.fileno())
        public_path.write_bytes(self.public_pem())
        return public_path


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    """One trusted public key file (PEM); KeyFileError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"trusted key {path}: cannot read ({exc.strerror})") from None
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"trusted key {path}: not a PEM public key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(
            f"trusted key {path}: a {type(public).__name__}, expected an Ed25519 public key"
        )
    return public


class TrustedKeys:
    """The public keys a gateway accepts signatures from, by key id."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], source: str = "") -> None:
        self.keys = dict(keys)
        self.source = source

    @classmethod
    def load(cls, directory: Path) -> TrustedKeys:
        """Every ``*.pub`` / ``*.pem`` file in ``directory``; a missing directory trusts no
        key. A file that is not an Ed25519 public key is an error (KeyFileError), not
        skipped: a typo must not silently leave the gateway trusting less than intended."""
        keys: dict[str, Ed25519PublicKey] = {}
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.suffix in KEY_SUFFIXES and path.is_file():
                    public = load_public_key(path)
                    keys[key_id(public)] = public
        return cls(keys, str(directory))

    @classmethod
    def of(cls, *public: Ed25519PublicKey) -> TrustedKeys:
        return cls({key_id(p): p for p in public})

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def verify(self, document: bytes, signature: Signature | str | None) -> str:
        """Check ``signature`` over ``document``; the id of the key that signed it.

        SignatureError with ``reason`` ``unsigned`` (no signature), ``unknown-key`` (a key
        this gateway does not trust: the message lists the ones it does) or
        ``bad-signature`` (malformed, or not this document's: tampered or signed over
        other bytes)."""
        if signature is None or (isinstance(signature, str) and not signature.strip()):
            raise SignatureError("unsigned", "the document is not signed")
        sig = Signature.parse(signature) if isinstance(signature, str) else signature
        public = self.keys.get(sig.key_id)
        if public is None:
            trusted = ", ".join(sorted(self.keys)) or "none"
            where = f" in {self.source}" if self.source else ""
            raise SignatureError(
                "unknown-key",
                f"signed by key {sig.key_id}, which this gateway does not trust "
                f"(trusted{where}: {trusted})",
            )
        try:
            public.verify(sig.value, document)
        except InvalidSignature:
            raise SignatureError(
                "bad-signature",
                f"the signature by key {sig.key_id} does not match the document "
                "(changed after signing, or signed over other bytes)",
            ) from None
        return sig.key_id
