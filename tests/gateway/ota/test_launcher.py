"""The launcher under a supervisor that restarts it like systemd: a release that crashes at
start is left by itself after N starts, and a link left behind by a kill is put right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.ota import slots
from gateway.ota.state import UpdateState, load, save

SCRIPT = '#!/bin/sh\necho "running $DOORSTEP_OTA_SLOT $*"\nexit {code}\n'


def install_fake(state_dir: Path, slot: str, code: int) -> None:
    command = slots.gateway_command(state_dir, slot)  # type: ignore[arg-type]
    command.parent.mkdir(parents=True)
    command.write_text(SCRIPT.format(code=code))
    command.chmod(0o755)


def supervise(state_dir: Path, until: str, most: int = 8) -> list[str]:
    """Start the launcher again whenever it exits (Restart=always), until ``until`` runs."""
    lines = []
    for _ in range(most):
        done = subprocess.run(
            [sys.executable, "-m", "gateway.ota.launcher", "--state-dir", str(state_dir),
             "--", "run", "--config", "site.toml"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        )  # fmt: skip
        lines.append(done.stdout.strip() or done.stderr.strip())
        if until in lines[-1]:
            break
    return lines


def test_a_release_that_crashes_at_start_is_rolled_back_by_the_launcher(tmp_path: Path) -> None:
    install_fake(tmp_path, "a", 0)
    install_fake(tmp_path, "b", 3)  # the new release dies at once
    versions = {"a": "0.1.0", "b": "0.2.0"}
    save(tmp_path, UpdateState(active="b", previous="a", trial=True, versions=versions))
    slots.switch(tmp_path, "b")
    lines = supervise(tmp_path, "running a")
    assert lines == ["running b run --config site.toml"] * 3 + ["running a run --config site.toml"]
    state = load(tmp_path)
    assert (state.active, state.trial, state.state) == ("a", False, "rolled-back")
    assert "release 0.2.0 did not start healthy 3 times in a row" in state.reason
    assert "went back to 0.1.0" in state.reason
    assert slots.current(tmp_path) == "a"


def test_a_kill_between_the_state_and_the_link_is_put_right(tmp_path: Path) -> None:
    install_fake(tmp_path, "a", 0)
    install_fake(tmp_path, "b", 0)
    slots.switch(tmp_path, "a")  # the link still says a ...
    versions = {"a": "0.1.0", "b": "0.2.0"}
    save(tmp_path, UpdateState(active="b", previous="a", trial=True, versions=versions))
    assert supervise(tmp_path, "running b") == ["running b run --config site.toml"]
    assert slots.current(tmp_path) == "b"
    assert load(tmp_path).boots == 1


def test_a_damaged_state_file_never_keeps_the_gateway_from_starting(tmp_path: Path) -> None:
    install_fake(tmp_path, "a", 0)
    slots.switch(tmp_path, "a")
    (tmp_path / "ota" / "state.json").write_text("{half a fi")
    assert supervise(tmp_path, "running a") == ["running a run --config site.toml"]
