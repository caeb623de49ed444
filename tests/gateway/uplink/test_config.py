"""The [uplink] table: broker URL, credentials and TLS files, each mistake named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import UplinkError
from gateway.uplink.config import UplinkConfig
from gateway.validation import validation_problems


def problems(**fields: object) -> list[str]:
    with pytest.raises(ValidationError) as info:
        UplinkConfig.model_validate(fields)
    return validation_problems(info.value)


def test_plain_and_tls_urls_give_host_port_and_tls() -> None:
    plain = UplinkConfig(broker="mqtt://fleet.example.net")
    assert (plain.host, plain.port, plain.tls) == ("fleet.example.net", 1883, False)
    tls = UplinkConfig(broker="mqtts://10.0.0.5:9883")
    assert (tls.host, tls.port, tls.tls) == ("10.0.0.5", 9883, True)
    assert UplinkConfig(broker="mqtts://fleet").port == 8883


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://fleet:1883", "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"),
        ("fleet:1883", "expected mqtt://HOST[:PORT]"),
        ("mqtt://fleet:99999", "the port is not a number in 1..65535"),
        ("mqtt://fleet:x", "the port is not a number"),
        ("mqtt://:1883", "no host"),
        ("mqtt://gw:secret@fleet", "put credentials in username and password_file"),
        ("mqtt://fleet/doorstep", "nothing may follow HOST[:PORT]"),
    ],
)
def test_a_bad_broker_url_says_what_was_expected(url: str, expected: str) -> None:
    [problem] = problems(broker=url)
    assert problem.startswith("broker: ")
    assert expected in problem


def test_password_and_password_file_exclude_each_other_and_need_a_username() -> None:
    assert any("not both" in p for p in problems(
        broker="mqtt://f", username="gw", password="x", password_file="/p"
    ))  # fmt: skip
    assert any("needs a username" in p for p in problems(broker="mqtt://f", password="x"))


def test_tls_files_need_an_mqtts_broker_and_a_certificate_needs_its_key() -> None:
    assert any("need an mqtts:// broker" in p for p in problems(
        broker="mqtt://f", ca_file="/ca.pem"
    ))  # fmt: skip
    assert any("go together" in p for p in problems(broker="mqtts://f", cert_file="/c.pem"))


def test_unknown_keys_and_bad_bounds_are_named() -> None:
    found = problems(broker="mqtt://f", health_intervall_s=5, outbox={"max_rows": 0})
    assert "health_intervall_s: unknown key (not part of the schema; check the spelling)" in found
    assert any(p.startswith("outbox.max_rows:") for p in found)


def test_the_password_file_gives_its_first_line(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = UplinkConfig(broker="mqtt://f", username="gw", password_file=secret)
    assert config.secret() == "s3cret"
    assert UplinkConfig(broker="mqtt://f", username="gw", password="inline").secret() == "inline"


def test_the_password_never_shows_in_the_config_repr() -> None:
    config = UplinkConfig(broker="mqtt://f", username="gw", password="hunter2hunter2")
    assert "hunter2" not in repr(config)


def test_unreadable_files_name_their_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UplinkError, match=r"uplink\.password_file: cannot read .*nope"):
        UplinkConfig(broker="mqtt://f", username="gw", password_file=missing).secret()
    with pytest.raises(UplinkError, match=r"uplink\.ca_file: cannot load .*nope"):
        UplinkConfig(broker="mqtts://f", ca_file=missing).ssl_context()
    not_pem = tmp_path / "c.pem"
    not_pem.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(UplinkError, match=r"uplink\.cert_file/key_file"):
        UplinkConfig(broker="mqtts://f", cert_file=not_pem, key_file=not_pem).ssl_context()
