"""Ed25519 trust: several keys trusted (rotation), and each refusal says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import KeyFileError, SignatureError
from gateway.trust import Signature, SigningKey, TrustedKeys

OLD = SigningKey.generate()
NEW = SigningKey.generate()
STRANGER = SigningKey.generate()


def keys_dir(tmp_path: Path, *keys: SigningKey) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    for i, key in enumerate(keys):
        (directory / f"k{i}.pub").write_bytes(key.public_pem())
    return directory


def test_a_gateway_trusts_every_key_in_its_directory_so_keys_rotate(tmp_path: Path) -> None:
    trusted = TrustedKeys.load(keys_dir(tmp_path, OLD, NEW))
    doc = b'{"version": "1.2.0"}'
    assert trusted.verify(doc, OLD.sign(doc)) == OLD.key_id
    assert trusted.verify(doc, NEW.sign(doc).encode()) == NEW.key_id


def test_unknown_key_unsigned_and_tampered_are_each_named(tmp_path: Path) -> None:
    trusted = TrustedKeys.load(keys_dir(tmp_path, OLD))
    doc = b"document"
    with pytest.raises(SignatureError, match=f"key {STRANGER.key_id}.*does not trust") as e:
        trusted.verify(doc, STRANGER.sign(doc))
    assert e.value.reason == "unknown-key"
    assert OLD.key_id in str(e.value)
    with pytest.raises(SignatureError, match="not signed") as e:
        trusted.verify(doc, None)
    assert e.value.reason == "unsigned"
    with pytest.raises(SignatureError, match="does not match") as e:
        trusted.verify(b"documenT", OLD.sign(doc))
    assert e.value.reason == "bad-signature"
    with pytest.raises(SignatureError, match="KEYID:BASE64") as e:
        trusted.verify(doc, "garbage")
    assert e.value.reason == "bad-signature"


@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_changed_byte_is_refused(doc: bytes, data: st.DataObject) -> None:
    trusted = TrustedKeys.of(OLD.public)
    sig = Signature.parse(OLD.sign(doc).encode())
    assert trusted.verify(doc, sig) == OLD.key_id
    i = data.draw(st.integers(0, len(doc) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = doc[:i] + bytes([doc[i] ^ flip]) + doc[i + 1 :]
    with pytest.raises(SignatureError):
        trusted.verify(tampered, sig)


def test_key_files_round_trip_and_a_bad_file_is_named(tmp_path: Path) -> None:
    key = SigningKey.generate()
    public = key.write(tmp_path / "ops.key")
    assert os.stat(tmp_path / "ops.key").st_mode & 0o777 == 0o600
    assert SigningKey.load(tmp_path / "ops.key").key_id == key.key_id
    with pytest.raises(KeyFileError, match="already exists"):
        key.write(tmp_path / "ops.key")
    directory = tmp_path / "trusted"
    directory.mkdir()
    (directory / "ops.pub").write_bytes(public.read_bytes())
    assert list(TrustedKeys.load(directory).keys) == [key.key_id]
    (directory / "typo.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match=r"typo\.pub: not a PEM public key"):
        TrustedKeys.load(directory)
    assert not TrustedKeys.load(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        SigningKey.load(directory / "typo.pub")
