"""The site's own profiles travel with its document: ``fleet config push`` of a site file that
finds profiles by file (``profile_dirs``, ``MODEL.toml`` next to it) stores a document that
carries them as ``[[profiles]]`` tables, validated by the fleet and usable by a gateway with no
such files; a document without a file that names a relative profile directory is refused."""

from __future__ import annotations

import io
import json
import sqlite3
import sys
import tomllib
from pathlib import Path

import pytest

from fleet.cli.main import main
from fleet.config.profiles import carry_profiles
from gateway.site import parse_site
from gateway.trust import SigningKey, TrustedKeys
from gateway.wire.config import document_hash, signed_statement
from tests.fleet.config.test_versions import CHARGER_4, document

SHIPPED = Path(__file__).parents[3] / "gateway" / "devices" / "profiles"


def own_profile(directory: Path, model: str) -> None:
    """A site profile: the shipped charger's map under a model name of the site's own."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (SHIPPED / "EVSE-HEC.toml").read_text()
    (directory / f"{model}.toml").write_text(
        text.replace('model = "EVSE-HEC"', f'model = "{model}"')
    )


def site_with_own_profiles(tmp: Path) -> Path:
    own_profile(tmp / "profiles", "CARPORT-AC22")  # found through profile_dirs
    own_profile(tmp, "CARPORT-AC11")  # found next to the site file
    text = document("s1", "gw-1")
    text = text.replace(CHARGER_4, CHARGER_4.replace("EVSE-HEC", "CARPORT-AC22"))
    text = text.replace(
        '[[devices]]\nname = "charger-3"\nprofile = "EVSE-HEC"',
        '[[devices]]\nname = "charger-3"\nprofile = "CARPORT-AC11"',
    )
    text = 'profile_dirs = ["profiles"]  # the carport\'s own chargers\n' + text
    path = tmp / "site.toml"
    path.write_text(text)
    return path


def test_push_carries_the_sites_own_profiles_in_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_file = site_with_own_profiles(tmp_path / "site")
    parse_site(site_file.read_text(), str(site_file), site_file.parent)  # valid where it is
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

    assert fleet("site", "add", "s1")[0] == 0
    assert fleet("gateway", "add", "s1", "gw-1")[0] == 0
    # signed offline from the same file: the signature covers the document as pushed
    key_file = tmp_path / "k.key"
    SigningKey.generate().write(key_file)
    code, out = fleet(
        "config", "sign", "s1/gw-1", str(site_file), "--version", "1", "--key", str(key_file),
        database=False,
    )  # fmt: skip
    assert code == 0, out
    sig = str(site_file) + ".sig"
    code, out = fleet("config", "push", "s1/gw-1", str(site_file), "--signature", sig)
    assert code == 0, out
    assert "the site's own profiles carried with it: CARPORT-AC22, CARPORT-AC11" in out

    with sqlite3.connect(tmp_path / "fleet.db") as conn:
        (stored,) = conn.execute("SELECT document FROM config_versions").fetchone()
    data = tomllib.loads(stored)
    assert "profile_dirs" not in data
    assert sorted(p["model"] for p in data["profiles"]) == ["CARPORT-AC11", "CARPORT-AC22"]
    assert "# the carport's own chargers" not in stored  # the dropped key's line went with it
    assert "# the interlocks' control loop" in stored  # the author's comments are kept
    # a gateway anywhere, with none of those files, runs it as the site ran before
    there = parse_site(stored, "pushed version")
    here = parse_site(site_file.read_text(), str(site_file), site_file.parent)
    for name in ("charger-3", "charger-4"):
        device = next(d for d in there.devices if d.name == name)
        assert there.profile(device) == here.profile(device)
    key = SigningKey.load(key_file)
    statement = signed_statement("s1", "gw-1", 1, stored)
    assert TrustedKeys.of(key.public).verify(statement, _signature(tmp_path, sig)) == key.key_id


def _signature(tmp: Path, path: str) -> str:
    return str(json.loads(Path(path).read_text())["signature"])


def test_a_document_without_its_own_profiles_is_pushed_as_written(tmp_path: Path) -> None:
    text = document("s1", "gw-1")
    path = tmp_path / "site.toml"
    path.write_text(text)
    assert carry_profiles(text, path) == (text, [])
    broken = text.replace("limit_w", "limit_ww")  # refused by the push, not changed here
    assert carry_profiles(broken, path) == (broken, [])
    assert document_hash(text) == document_hash(carry_profiles(text, path)[0])
