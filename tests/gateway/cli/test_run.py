"""``gateway run`` and a state directory too deep for its control socket: a clear error that
names the path and the setting, at once, instead of a start-up that hangs."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import pytest

from gateway.cli.exits import EXIT_BAD_INPUT
from gateway.cli.main import main
from gateway.control.command_socket import MAX_SOCKET_PATH
from gateway.errors import GatewayError
from gateway.runtime import Gateway
from gateway.site import parse_site

SITE = """
[gateway]
site = "s"
id = "gw"
[[buses]]
name = "pv"
kind = "tcp"
host = "127.0.0.1"
port = 1
[[devices]]
name = "meter"
profile = "SUNSPEC-METER"
bus = "pv"
unit_id = 1
"""


def _too_deep(tmp_path: Path) -> Path:
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH - len(str(tmp_path))))
    assert len(str(deep / "control.sock")) > MAX_SOCKET_PATH
    return deep


def test_run_refuses_a_state_dir_too_deep_for_its_socket_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = resources.files("gateway.examples").joinpath("community.toml")
    deep = _too_deep(tmp_path)
    code = main(["run", "--config", str(example), "--state-dir", str(deep), "--duration", "5"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == EXIT_BAD_INPUT
    assert "control.sock" in out
    assert "a Unix socket allows" in out
    assert "--state-dir" in out
    assert "DOORSTEP_STATE_DIR" in out


def test_reset_latch_says_the_same_instead_of_an_os_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["reset-latch", "fire", "--state-dir", str(_too_deep(tmp_path))])
    out = " ".join(capsys.readouterr().out.split())
    assert code != 0
    assert "a Unix socket allows" in out
    assert "[red]" not in out


def test_a_gateway_whose_start_fails_stops_its_buses_instead_of_hanging(tmp_path: Path) -> None:
    async def start() -> None:
        async with Gateway(parse_site(SITE, "s.toml"), state_dir=_too_deep(tmp_path)):
            pass  # pragma: no cover - it must not start

    with pytest.raises(GatewayError, match="a Unix socket allows"):
        asyncio.run(asyncio.wait_for(start(), 10))
