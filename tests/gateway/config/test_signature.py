"""Signed configuration on the gateway: with a trusted key, an unsigned, unknown-key, tampered
or replayed document is rejected with the reason and nothing changes; a signed one applies.
With no trusted key, unsigned documents are taken and the log says so once.

The bus side is replaced (tests/gateway/config/test_agent.py's bench); the store, the
validator, the trusted keys directory and the agent are the real ones."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.agent import ConfigAgent
from gateway.control.alarms import AlarmLog
from gateway.errors import SignatureError
from gateway.health_gate import HEALTHY, Verdict
from gateway.runtime import Gateway
from gateway.site import parse_site
from gateway.trust import TRUSTED_KEYS_DIR, SigningKey, TrustedKeys
from gateway.wire.config import DesiredConfig, document_hash, signed_statement
from tests.gateway.config.test_agent import Bench, document


def offer(text: str, version: int, signature: str = "") -> DesiredConfig:
    return DesiredConfig(
        version=version,
        sha256=document_hash(text),
        document=text,
        signature=signature,
        at=time.time(),
    )


def signed(key: SigningKey, text: str, version: int, gateway: str = "gw-1") -> str:
    return key.sign(signed_statement("s1", gateway, version, text)).encode()


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.site_file = tmp / "site.toml"
        self.state = tmp / "state"
        if not self.site_file.exists():  # a restart starts on the file it committed
            self.site_file.write_text(document(0))
        self.original = self.site_file.read_text()
        gw = cast(
            Gateway,
            SimpleNamespace(
                site=parse_site(self.original, "site.toml"),
                uplink=None,
                before_uplink=[],
                alarms=AlarmLog(None),
            ),
        )
        self.agent = ConfigAgent(
            gw,
            self.site_file,
            self.original,
            self.state,
            in_place=Bench(gw),
            watch=_healthy,
        )

    def trust(self, key: SigningKey) -> None:
        keys = self.state / TRUSTED_KEYS_DIR
        keys.mkdir(parents=True, exist_ok=True)
        (keys / f"{key.key_id}.pub").write_bytes(key.public_pem())

    async def give(self, desired: DesiredConfig) -> tuple[str, list[str]]:
        self.agent.offer(desired)
        await self.agent.idle.wait()
        return self.agent.report.status, self.agent.report.messages


async def _healthy(*_: object) -> Verdict:
    return HEALTHY


async def test_a_gateway_that_trusts_a_key_refuses_what_that_key_did_not_sign_for_it(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    fleet_key, stranger = SigningKey.generate(), SigningKey.generate()
    rig.trust(fleet_key)
    await rig.agent.__aenter__()
    try:
        one = document(1)
        status, messages = await rig.give(offer(one, 1))
        assert status == "rejected"
        assert messages == [
            "signature: unsigned: this gateway accepts only configurations signed by a key "
            "it trusts"
        ]

        status, messages = await rig.give(offer(document(2), 2, signed(stranger, document(2), 2)))
        assert status == "rejected"
        assert messages[0].startswith(
            f"signature: signed by an unknown key: signed by key {stranger.key_id}, which this "
            "gateway does not trust"
        )
        assert fleet_key.key_id in messages[0]  # the ones it does trust are named

        # signed, then changed (the hash sent matches the changed text): bad signature
        three = document(3)
        tampered = three.replace('host = "127.0.0.1"', 'host = "10.6.6.6"')
        status, messages = await rig.give(offer(tampered, 3, signed(fleet_key, three, 3)))
        assert status == "rejected"
        assert messages[0].startswith("signature: bad signature: the signature by key")

        # a good signature replayed as another version, or one made for another gateway
        four = document(4)
        status, _ = await rig.give(offer(four, 5, signed(fleet_key, four, 4)))
        assert status == "rejected"
        status, messages = await rig.give(
            offer(four, 6, signed(fleet_key, four, 6, gateway="gw-2"))
        )
        assert (status, messages[0][:25]) == ("rejected", "signature: bad signature:")
        # nothing changed all along: the original document runs, in the file too
        assert rig.agent.report.version is None
        assert rig.site_file.read_text() == rig.original

        seven = document(7)
        status, _ = await rig.give(offer(seven, 7, signed(fleet_key, seven, 7)))
        assert status == "applied"
        assert rig.agent.report.version == 7
        assert rig.site_file.read_text() == seven

        # a key added to the directory counts at once; a broken key file refuses everything
        rig.trust(stranger)
        eight = document(8)
        assert (await rig.give(offer(eight, 8, signed(stranger, eight, 8))))[0] == "applied"
        (rig.state / TRUSTED_KEYS_DIR / "typo.pub").write_text("not a key")
        status, messages = await rig.give(offer(document(9), 9, signed(stranger, document(9), 9)))
        assert status == "rejected"
        assert "signature: cannot check it: trusted key" in messages[0]
        assert "typo.pub" in messages[0]
        assert rig.site_file.read_text() == eight
    finally:
        await rig.agent.__aexit__(None, None, None)


async def test_a_gateway_that_trusts_no_key_takes_unsigned_documents_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    await rig.agent.__aenter__()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.config.agent"):
            assert (await rig.give(offer(document(1), 1)))[0] == "applied"
            assert (await rig.give(offer(document(2), 2)))[0] == "applied"
        said = [r.getMessage() for r in caplog.records if "trusts no signing key" in r.getMessage()]
        assert len(said) == 1
        assert "accepts unsigned configurations" in said[0]
        assert rig.site_file.read_text() == document(2)
    finally:
        await rig.agent.__aexit__(None, None, None)


async def test_a_forged_high_version_does_not_block_the_fleet_and_an_old_one_is_not_replayed(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    key, stranger = SigningKey.generate(), SigningKey.generate()
    rig.trust(key)
    await rig.agent.__aenter__()
    try:
        two = document(2)
        assert (await rig.give(offer(two, 2, signed(key, two, 2))))[0] == "applied"
        forged = document(99)
        status, _ = await rig.give(offer(forged, 99, signed(stranger, forged, 99)))
        assert (status, rig.agent.report.about) == ("rejected", 99)
    finally:
        await rig.agent.__aexit__(None, None, None)
    rig = Rig(tmp_path)  # restarted: what it handled is read back from the state directory
    assert rig.agent.report.version == 2
    await rig.agent.__aenter__()
    try:
        three = document(3)
        assert (await rig.give(offer(three, 3, signed(key, three, 3))))[0] == "applied"
        assert rig.agent.report.version == 3
        # version 2, validly signed for version 2, comes again: older than one handled
        assert (await rig.give(offer(two, 2, signed(key, two, 2))))[0] == "applied"
        assert rig.agent.report.version == 3
        assert rig.site_file.read_text() == three
    finally:
        await rig.agent.__aexit__(None, None, None)


names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,5}", fullmatch=True)
statements = st.tuples(names, names, st.integers(1, 2**40), st.text(max_size=40))
ONE_KEY = SigningKey.generate()


@settings(max_examples=200, deadline=None)
@given(statements, statements)
def test_a_signature_is_good_for_one_gateway_version_and_document_only(
    a: tuple[str, str, int, str], b: tuple[str, str, int, str]
) -> None:
    signature = ONE_KEY.sign(signed_statement(*a))
    trusted = TrustedKeys.of(ONE_KEY.public)
    assert trusted.verify(signed_statement(*a), signature) == ONE_KEY.key_id
    if a != b:
        assert signed_statement(*a) != signed_statement(*b)
        with pytest.raises(SignatureError):
            trusted.verify(signed_statement(*b), signature)


async def test_a_forged_offer_arriving_with_a_real_one_does_not_push_it_out(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    key, stranger = SigningKey.generate(), SigningKey.generate()
    rig.trust(key)
    gate, watching = asyncio.Event(), asyncio.Event()

    async def watch(new: object, *_: object) -> Verdict:
        if not watching.is_set():
            watching.set()
            await gate.wait()  # version 1 is in its health window while the others arrive
        return HEALTHY

    rig.agent._watch = watch
    await rig.agent.__aenter__()
    try:
        one, three = document(1), document(3)
        rig.agent.offer(offer(one, 1, signed(key, one, 1)))
        await watching.wait()
        rig.agent.offer(offer(three, 3, signed(key, three, 3)))
        forged = document(99)
        rig.agent.offer(offer(forged, 99, signed(stranger, forged, 99)))
        also = three.replace('host = "127.0.0.1"', 'host = "10.6.6.6"')  # same number
        rig.agent.offer(offer(also, 3, signed(key, three, 3)))
        gate.set()
        await rig.agent.idle.wait()
        refused = [r.about for r in rig.agent.reports if r.status == "rejected"]
        assert 99 in refused
        assert (rig.agent.report.status, rig.agent.report.version) == ("applied", 3)
        assert rig.site_file.read_text() == three
    finally:
        await rig.agent.__aexit__(None, None, None)
