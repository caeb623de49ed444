"""Signed configuration versions in the fleet: the server signs with its key file, an operator
signs offline and pushes the signature, and what the gateway receives verifies with the
public key for that gateway and version only. What only the gateway itself changes
([uplink], the control period) is refused in the fleet, naming the key and why."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from fleet.cli.main import main
from fleet.config.delivery import Delivery
from fleet.config.signing import sign
from fleet.models import Role
from gateway import wire
from gateway.errors import SignatureError
from gateway.trust import SigningKey, TrustedKeys
from gateway.wire.config import DesiredConfig, signed_statement
from tests.fleet.api_client import fleet_app, user
from tests.fleet.config import test_pages as pages
from tests.fleet.config.test_versions import Outbox, document, push, register


def trusted_by_gateway(desired: DesiredConfig, key: SigningKey, site: str, gw: str) -> str:
    """What a gateway (site/gw) that trusts ``key`` makes of ``desired``: the key id."""
    statement = signed_statement(site, gw, desired.version, desired.document)
    return TrustedKeys.of(key.public).verify(statement, desired.signature or None)


async def test_the_fleet_signs_with_its_key_file_and_only_for_that_gateway_and_version(
    tmp_path: Path, fleet_db_url: str
) -> None:
    key = SigningKey.generate()
    key_file = tmp_path / "config.key"
    key.write(key_file)
    async with fleet_app(fleet_db_url, config_signing_key=key_file) as app:
        await register(app, "s1", "gw-1")
        async with user(app, "olga", Role.OPERATOR) as op:
            answer = await push(op, "gw-1", document("s1", "gw-1"))
            assert answer.status_code == 201, answer.text
            assert answer.json()["signed_by"] == key.key_id
            revert = await op.post(
                "/api/gateways/s1/gw-1/config/revert", json={"version": 1, "comment": "again"}
            )
            assert revert.json()["signed_by"] == key.key_id  # signed anew for version 2
            history = (await op.get("/api/gateways/s1/gw-1/config/versions")).json()
            assert [v["signed_by"] for v in history] == [key.key_id, key.key_id]
        outbox = Outbox()
        assert await Delivery(app.state.sessions, outbox).round() == 1  # type: ignore[arg-type]
        desired = wire.decode(DesiredConfig, outbox.sent[-1][3])
        assert desired.version == 2
        assert trusted_by_gateway(desired, key, "s1", "gw-1") == key.key_id
        # replayed to another gateway, or as another version: the gateway refuses it
        with pytest.raises(SignatureError) as other:
            trusted_by_gateway(desired, key, "s1", "gw-2")
        assert other.value.reason == "bad-signature"
        replay = desired.model_copy(update={"version": 3})
        with pytest.raises(SignatureError):
            trusted_by_gateway(replay, key, "s1", "gw-1")


async def test_without_a_key_versions_are_unsigned_and_fixed_keys_are_refused(
    fleet_db_url: str,
) -> None:
    async with fleet_app(fleet_db_url) as app:
        await register(app, "s1", "gw-1")
        async with user(app, "olga", Role.OPERATOR) as op:
            base = document("s1", "gw-1")
            answer = await push(op, "gw-1", base)
            assert answer.json()["signed_by"] == ""
            uplink = base + '\n[uplink]\nbroker = "mqtt://10.0.0.9:1883"\n'
            answer = await push(op, "gw-1", uplink)
            assert answer.status_code == 422
            detail = answer.json()["detail"]
            assert "uplink: [uplink] is changed on the gateway itself" in detail
            assert "a wrong broker address" in detail
            period = base.replace("period_ms = 50", "period_ms = 20")
            assert period != base
            answer = await push(op, "gw-1", period)
            assert answer.status_code == 422
            assert (
                "control.period_ms: 20 (desired now: 50) is changed on the gateway"
                in (answer.json()["detail"])
            )


def test_signed_offline_then_pushed_with_the_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'fleet.db'}"]

    def fleet(*argv: str, database: bool = True) -> tuple[int, str]:
        sys.stdin = io.StringIO("")
        try:
            code = main([*argv, *(db if database else [])])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        finally:
            sys.stdin = sys.__stdin__
        out = capsys.readouterr()
        return code, out.out + out.err

    key_file = tmp_path / "offline.key"
    assert fleet("release", "keygen", str(key_file), database=False)[0] == 0
    key = SigningKey.load(key_file)
    assert fleet("site", "add", "s1")[0] == 0
    assert fleet("gateway", "add", "s1", "gw-1")[0] == 0
    site_file = tmp_path / "site.toml"
    site_file.write_text(document("s1", "gw-1"))

    # signed for the wrong version: refused at the push, saying which version to sign
    code, out = fleet(
        "config", "sign", "s1/gw-1", str(site_file), "--version", "2", "--key", str(key_file),
        database=False,
    )  # fmt: skip
    assert code == 0, out
    sig = tmp_path / "site.toml.sig"
    assert f"signed by key {key.key_id} for s1/gw-1 version 2" in out
    code, out = fleet("config", "push", "s1/gw-1", str(site_file), "--signature", str(sig))
    assert code == 2
    assert "signed for version 2, this push becomes version 1: sign it again with --version 1" in (
        out
    )

    # the document changed after signing: refused
    assert fleet("config", "sign", "s1/gw-1", str(site_file), "--version", "1", "--key",
                 str(key_file), database=False)[0] == 0  # fmt: skip
    original = site_file.read_text()
    site_file.write_text(original.replace("limit_w = 5000", "limit_w = 4000"))
    code, out = fleet("config", "push", "s1/gw-1", str(site_file), "--signature", str(sig))
    assert code == 2
    assert "signed over another document" in out

    # a forged signature value (the right key id, other bytes): refused
    site_file.write_text(original)
    data = json.loads(sig.read_text())
    forged = dict(data, signature=key.sign(b"something else").encode())
    (tmp_path / "forged.sig").write_text(json.dumps(forged))
    code, out = fleet(
        "config", "push", "s1/gw-1", str(site_file), "--signature", str(tmp_path / "forged.sig")
    )
    assert code == 2
    assert "does not match this document, gateway and version" in out
    (tmp_path / "junk.sig").write_text("KEYID:abc")
    code, out = fleet(
        "config", "push", "s1/gw-1", str(site_file), "--signature", str(tmp_path / "junk.sig")
    )
    assert code == 2
    assert "not a signature file from `fleet config sign`" in out

    # the right one: stored with the version, shown in the history
    code, out = fleet("config", "push", "s1/gw-1", str(site_file), "--signature", str(sig))
    assert (code, out.strip()) == (0, f"s1/gw-1: version 1 is desired, signed by key {key.key_id}")
    code, out = fleet("config", "history", "s1/gw-1")
    assert f"[signed {key.key_id}]" in out

    # --key signs at the push (here: a revert and a bulk change too)
    code, out = fleet("config", "revert", "s1/gw-1", "1", "--key", str(key_file))
    assert code == 0, out
    fragment = tmp_path / "f.toml"
    fragment.write_text("[safety.export_limit]\nmax_step = 0.1\n")
    code, out = fleet(
        "config", "bulk", str(fragment), "--site", "s1", "--apply", "--key", str(key_file)
    )
    assert "✓ s1/gw-1: version 3" in out
    code, out = fleet("config", "history", "s1/gw-1")
    assert out.count(f"[signed {key.key_id}]") == 3
    code, out = fleet("config", "push", "s1/gw-1", str(site_file), "--key", str(tmp_path / "no"))
    assert code == 2
    assert "--key: signing key" in out
    # the server refuses to start with a key file it cannot use, naming it
    (tmp_path / "junk.key").write_text("junk")
    code, out = fleet("serve", "--config-signing-key", str(tmp_path / "junk.key"))
    assert code == 2
    assert f"--config-signing-key: the configuration signing key: signing key {tmp_path}" in out
    assert "not an unencrypted PEM private key" in out


async def test_versions_made_on_the_screens_are_signed_with_the_fleets_key(
    tmp_path: Path,
) -> None:
    key = SigningKey.generate()
    key.write(tmp_path / "config.key")
    url = f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    async with fleet_app(url, config_signing_key=tmp_path / "config.key") as app:
        await register(app, "s1", "gw-1")
        page = "/gateways/s1/gw-1/config"
        async with user(app, "olga", Role.OPERATOR) as op:
            answer = await pages.post(op, page, document=document("s1", "gw-1"), comment="1")
            assert answer.status_code == 303
            answer = await pages.post(op, page + "/revert", version="1", comment="2")
            assert answer.status_code == 303
            answer = await pages.post(
                op, "/config/bulk", site="s1", fragment="[poll]\nslow = 30.0\n", action="apply"
            )
            assert answer.status_code == 200, answer.text
            shown = pages.text(await op.get(page))
            assert shown.count(f"signed by key {key.key_id}") == 3
            history = (await op.get("/api/gateways/s1/gw-1/config/versions")).json()
            assert [(v["number"], v["signed_by"]) for v in history] == [
                (3, key.key_id),
                (2, key.key_id),
                (1, key.key_id),
            ]


async def test_a_signature_made_offline_comes_with_the_push_through_the_api(
    fleet_db_url: str,
) -> None:
    key = SigningKey.generate()
    async with fleet_app(fleet_db_url) as app:
        await register(app, "s1", "gw-1")
        async with user(app, "olga", Role.OPERATOR) as op:
            text = document("s1", "gw-1")
            early = sign(key, "s1", "gw-1", 2, text).model_dump()
            answer = await push(op, "gw-1", text, signature=early)
            assert answer.status_code == 422
            assert "signed for version 2, this push becomes version 1" in answer.json()["detail"]
            good = sign(key, "s1", "gw-1", 1, text).model_dump()
            answer = await push(op, "gw-1", text, signature=good)
            assert answer.status_code == 201, answer.text
            assert answer.json()["signed_by"] == key.key_id
            answer = await push(op, "gw-1", text, signature={"signature": "x"})
            assert answer.status_code == 422  # not a signature file: refused, nothing stored
            versions = (await op.get("/api/gateways/s1/gw-1/config/versions")).json()
            assert len(versions) == 1
