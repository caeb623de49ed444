"""``fleet config`` on the server's database: push (refusals exit 2 naming the key or the
safety change), history, diff, revert, tags, bulk preview and apply, status."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from fleet.cli.main import main

EXAMPLE = (Path(__file__).parents[3] / "gateway" / "examples" / "community.toml").read_text()


def document(gateway: str, limit_w: int = 5000) -> str:
    text = EXAMPLE.replace('site = "lianhua-garden"', 'site = "s1"')
    text = text.replace('id = "gw-01"', f'id = "{gateway}"')
    return text.replace("limit_w = 5000", f"limit_w = {limit_w}")


def test_the_config_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'fleet.db'}"]

    def fleet(*argv: str) -> tuple[int, str]:
        sys.stdin = io.StringIO("")
        try:
            code = main([*argv, *db])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        finally:
            sys.stdin = sys.__stdin__
        out = capsys.readouterr()
        return code, out.out + out.err

    def file(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    assert fleet("site", "add", "s1")[0] == 0
    for gw in ("gw-1", "gw-2"):
        assert fleet("gateway", "add", "s1", gw)[0] == 0

    code, out = fleet("config", "push", "s1/gw-1", file("typo.toml", document("gw-1").replace(
        "limit_w = 5000", "limit_ww = 5000")), "-m", "typo")  # fmt: skip
    assert code == 2
    assert "safety.export_limit.limit_ww: unknown key" in out
    assert "typo.toml" in out
    code, out = fleet("config", "history", "s1/gw-1")
    assert "no versions yet" in out

    code, out = fleet("config", "push", "s1/gw-1", file("a.toml", document("gw-1")), "-m", "first")
    assert (code, out.strip()) == (0, "s1/gw-1: version 1 is desired, unsigned")
    more = file("b.toml", document("gw-1", 9000))
    code, out = fleet("config", "push", "s1/gw-1", more, "-m", "more")
    assert code == 2
    assert "safety.export_limit.limit_w: raised from 5000 to 9000" in out
    assert "--confirm-safety-change" in out
    code, out = fleet("config", "push", "s1/gw-1", more, "-m", "more", "--confirm-safety-change")
    assert (code, out.strip()) == (
        0,
        "s1/gw-1: version 2 is desired (safety change, confirmed), unsigned",
    )

    code, out = fleet("config", "diff", "s1/gw-1", "1", "2")
    assert "-limit_w = 5000" in out
    assert "+limit_w = 9000" in out
    code, out = fleet("config", "revert", "s1/gw-1", "1", "-m", "back")
    assert out.strip() == "s1/gw-1: version 3 (the text of 1) is desired"
    code, out = fleet("config", "history", "s1/gw-1")
    lines = out.strip().splitlines()
    assert lines[0].startswith("*    3")
    assert "revert of 1" in lines[0]
    assert "[safety change]" in lines[1]
    code, out = fleet("config", "show", "s1/gw-1", "--version", "2")
    assert "limit_w = 9000" in out
    code, out = fleet("config", "status", "s1/gw-1")
    assert "desired version 3" in out
    assert "drift: has not reported what it runs yet" in out

    assert fleet("config", "push", "s1/gw-2", file("c.toml", document("gw-2")))[0] == 0
    assert fleet("config", "tag", "s1/gw-2", "pilot")[1].strip() == "s1/gw-2: tags pilot"
    fragment = file("f.toml", "[safety.export_limit]\nmax_step = 0.1\n")
    code, out = fleet("config", "bulk", fragment, "--tag", "pilot")
    assert "✓ s1/gw-2: passes" in out
    assert "+max_step = 0.1" in out
    assert "1 would pass (preview; --apply to store), 0 refused" in out
    code, out = fleet("config", "bulk", fragment, "--site", "s1", "--apply", "-m", "slower")
    assert "✓ s1/gw-1: version 4" in out
    assert "✓ s1/gw-2: version 2" in out
    assert "2 new versions, 0 refused" in out
    code, out = fleet("config", "show", "s1/nope")
    assert code == 1
    assert "no gateway 's1/nope'" in out
