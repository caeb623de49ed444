"""``gateway flash`` end to end: the real mpremote (through ``gateway.flash.board_link``) against a
simulated MicroPython board on a pty (``hil_tests/rig/micropython_board.py``), whose flash is
a directory these tests read directly; the SIO-1 firmware's host runner answers Modbus on the
board's data pty after it boots.

A clean install, a re-run that changes nothing, an unplug in the middle of a copy followed by
a re-run that finishes it, and the plain message of every failure a technician meets.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from rich.console import Console

from gateway.cli import exits, flash
from gateway.flash.firmware import DEFAULT_FIRMWARE, Firmware, load_firmware
from gateway.flash.plan import ENTRY, TMP, sha256_hex
from hil_tests.rig.micropython_board import MicroPythonBoard
from hil_tests.rig.nullmodem import NullModem

pytestmark = pytest.mark.hil

TOKEN = "correct horse battery staple"
IDENTITY = ("--site", "hil", "--gateway-id", "gw-hil", "--unit-id", "7", "--token", TOKEN)

MakeBoard = Callable[..., MicroPythonBoard]


@pytest.fixture(scope="module")
def firmware() -> Firmware:
    return load_firmware(DEFAULT_FIRMWARE)


@pytest.fixture(scope="module")
def release(firmware: Firmware) -> dict[str, bytes]:
    """What a board holds after an install: the compiled firmware and its manifest."""
    return firmware.build()


@pytest.fixture
def flash_dir(tmp_path: Path) -> Path:
    return tmp_path / "flash"


@pytest.fixture
def make_board(flash_dir: Path) -> Iterator[MakeBoard]:
    boards: list[MicroPythonBoard] = []

    def make(**knobs: Any) -> MicroPythonBoard:
        board = MicroPythonBoard(flash_dir, **knobs).start()
        boards.append(board)
        return board

    yield make
    for board in boards:
        board.close()


def gateway_flash(*argv: str) -> tuple[int, str]:
    """``gateway flash ARGV``: the exit code and what the technician sees."""
    parser = argparse.ArgumentParser(prog="gateway")
    flash.add_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = flash.run(parser.parse_args(["flash", *argv]), Console(file=out, width=250))
    return code, out.getvalue()


def on_board(flash_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in flash_dir.iterdir() if p.is_file()}


def assert_holds(flash_dir: Path, files: dict[str, bytes]) -> None:
    held = on_board(flash_dir)
    wrong = [n for n, data in files.items() if held.get(n) != data]
    assert not wrong, f"not installed as built: {wrong}"


def assert_only_temporaries_were_written(board: MicroPythonBoard) -> None:
    """No file under a final name was ever opened for writing: each came in by a rename of
    its hash-checked temporary (or is main.py parked and brought back)."""
    for entry in board.fs.log:
        if entry[0] == "open" and entry[2] != "rb" and "r" not in entry[2]:
            assert entry[1].endswith(TMP), entry
        if entry[0] == "rename":
            _, source, target = entry
            assert source == target + TMP or (source, target) == (ENTRY, ENTRY + TMP), entry


# -- installing -----------------------------------------------------------------------------


def test_clean_install_puts_every_file_in_place_and_the_sio1_answers(
    make_board: MakeBoard, flash_dir: Path, firmware: Firmware, release: dict[str, bytes]
) -> None:
    board = make_board(data_line=True)
    code, out = gateway_flash("--port", board.path, *IDENTITY, "--verify-port", board.data_path)
    assert code == exits.EXIT_OK, out
    assert_holds(flash_dir, release)
    assert not [n for n in on_board(flash_dir) if n.endswith(TMP)]
    assert_only_temporaries_were_written(board)
    identity_text = (flash_dir / firmware.identity_name).read_bytes()
    identity = firmware.parse_identity(identity_text)
    assert identity is not None
    assert (identity.site, identity.gateway, identity.unit_id) == ("hil", "gw-hil", 7)
    assert sha256_hex(TOKEN.encode()).encode() in identity_text
    assert TOKEN.encode() not in identity_text
    assert f"✓ installed SIO-1 firmware {firmware.version_text} on {board.path}" in out
    assert f"✓ the SIO-1 (unit 7) on {board.data_path} answers: map 0x0100" in out
    assert f"firmware {firmware.version_text}, BOOT-SAFE" in out
    assert board.firmware_running


def test_dry_run_lists_the_changes_and_writes_nothing(
    make_board: MakeBoard, flash_dir: Path
) -> None:
    board = make_board()
    code, out = gateway_flash("--port", board.path, *IDENTITY, "--dry-run")
    assert code == exits.EXIT_OK, out
    assert "dry run, would make" in out
    assert "copy main.py" in out
    assert "copy identity.txt" in out
    assert on_board(flash_dir) == {}
    assert board.resets == 0, "a dry run never resets the board"
    assert "dry run: the board was not reset" in out


def test_rerun_changes_nothing_and_restarts_the_firmware(
    make_board: MakeBoard, flash_dir: Path
) -> None:
    board = make_board(data_line=True)
    args = ("--port", board.path, *IDENTITY, "--verify-port", board.data_path)
    assert gateway_flash(*args)[0] == exits.EXIT_OK
    written = {n: (flash_dir / n).stat().st_mtime_ns for n in on_board(flash_dir)}
    written.pop("fault.log", None)  # the firmware's own, appended at every boot
    log_before = len(board.fs.log)

    code, out = gateway_flash(*args)

    assert code == exits.EXIT_OK, out
    assert "the SIO-1 firmware was running and has stopped" in out
    assert "✓ up to date" in out
    assert {n: (flash_dir / n).stat().st_mtime_ns for n in written} == written
    assert [e for e in board.fs.log[log_before:] if e[0] != "open" or e[2] != "rb"] == []
    assert "✓ the SIO-1 (unit 7)" in out
    assert board.firmware_running


def rebuilt_firmware(tmp_path: Path) -> Path:
    """The firmware with the next minor version number and one changed module."""
    directory = tmp_path / "firmware-next"
    shutil.copytree(DEFAULT_FIRMWARE, directory, ignore=shutil.ignore_patterns("__pycache__"))
    major, minor = load_firmware(DEFAULT_FIRMWARE).version
    version = directory / "version.py"
    text = re.sub(r"(?m)^VERSION = .*$", f"VERSION = ({major}, {minor + 1})", version.read_text())
    version.write_text(text)
    assert load_firmware(directory).version == (major, minor + 1)
    with (directory / "sio_regs.py").open("a") as f:
        f.write("\nREBUILT = 2\n")
    return directory


def test_interrupted_copy_keeps_the_old_firmware_and_a_rerun_finishes_it(
    make_board: MakeBoard, flash_dir: Path, tmp_path: Path, release: dict[str, bytes]
) -> None:
    board = make_board()
    assert gateway_flash("--port", board.path, *IDENTITY)[0] == exits.EXIT_OK
    new_dir = rebuilt_firmware(tmp_path)
    new_release = load_firmware(new_dir).build()
    changed = [n for n, data in new_release.items() if release.get(n) != data]
    assert len(changed) >= 2
    board.drop_link_after(sum(len(new_release[n]) for n in changed) // 2)

    code, out = gateway_flash("--port", board.path, "--firmware", str(new_dir))

    assert code == exits.EXIT_FAILED, out
    assert (
        "✗ copy interrupted: the board kept its previous firmware; run the same command again"
        in out
    )
    assert board.unplugged
    assert_holds(flash_dir, release)
    assert any(n.endswith(TMP) for n in on_board(flash_dir))

    port = board.replug()
    code, out = gateway_flash("--port", port, "--firmware", str(new_dir))

    assert code == exits.EXIT_OK, out
    assert "left over by an interrupted run" in out or "already copied" in out
    assert_holds(flash_dir, new_release)
    assert not [n for n in on_board(flash_dir) if n.endswith(TMP)]
    assert_only_temporaries_were_written(board)


def test_board_with_only_classic_raw_repl_is_installed_too(
    make_board: MakeBoard, flash_dir: Path, release: dict[str, bytes]
) -> None:
    board = make_board(raw_paste=False)
    code, out = gateway_flash("--port", board.path, *IDENTITY)
    assert code == exits.EXIT_OK, out
    assert_holds(flash_dir, release)


def test_board_without_identity_asks_for_one(make_board: MakeBoard, flash_dir: Path) -> None:
    board = make_board()
    code, out = gateway_flash("--port", board.path)
    assert code == exits.EXIT_FAILED, out  # the README: exit code 1 for every failure
    assert "✗ the board has no valid identity.txt yet: give --site, --gateway-id and --token" in out
    assert on_board(flash_dir) == {}


def test_missing_identity_flags_exit_1_as_every_failure(
    make_board: MakeBoard, flash_dir: Path
) -> None:
    board = make_board()
    code, out = gateway_flash("--port", board.path, "--site", "hil")
    assert code == exits.EXIT_FAILED, out
    assert "✗ the identity file needs --gateway-id and --token too" in out
    assert on_board(flash_dir) == {}


def test_an_interrupted_first_install_does_not_claim_a_previous_firmware(
    make_board: MakeBoard, flash_dir: Path, release: dict[str, bytes]
) -> None:
    board = make_board()
    board.drop_link_after(sum(len(data) for data in release.values()) // 2)
    code, out = gateway_flash("--port", board.path, *IDENTITY)
    assert code == exits.EXIT_FAILED, out
    assert "✗ copy interrupted: the board had no firmware before and still has none" in out
    assert "kept its previous firmware" not in out
    port = board.replug()
    assert gateway_flash("--port", port, *IDENTITY)[0] == exits.EXIT_OK
    assert_holds(flash_dir, release)


# -- what a technician meets -------------------------------------------------------------------


def gateway_command(*argv: str) -> subprocess.CompletedProcess[str]:
    """The installed ``gateway`` command as the technician types it (``argv`` may start with
    a wrapper such as setpriv)."""
    gateway = str(Path(sys.executable).with_name("gateway"))
    at = argv.index("flash")
    return subprocess.run(
        [*argv[:at], gateway, *argv[at:]],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )


def test_no_board_found(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyACM0")
    done = gateway_command("flash", "--port", port, *IDENTITY)
    assert done.returncode == exits.EXIT_FAILED, done.stderr
    assert f"✗ no board found on {port} (is it plugged in? try `mpremote connect list`)" in (
        done.stdout
    )


def test_port_busy(make_board: MakeBoard, flash_dir: Path) -> None:
    board = make_board()
    with serial.Serial(board.path, exclusive=True):
        code, out = gateway_flash("--port", board.path, *IDENTITY)
    assert code == exits.EXIT_FAILED
    assert (
        "✗ port busy: another program (a serial console, mpremote, the gateway) "
        f"has {board.path} open"
    ) in out
    assert on_board(flash_dir) == {}


@pytest.mark.parametrize("reads", [True, False], ids=["console-reads", "console-idle"])
def test_a_console_holding_the_port_without_a_lock_is_port_busy(
    make_board: MakeBoard, flash_dir: Path, reads: bool
) -> None:
    """screen/minicom open the port without pyserial's lock: one that reads swallows the
    board's answers (it used to read as "not MicroPython"), one that does not was ignored."""
    board = make_board()
    hold = (
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)\n"
        "print('holding', flush=True)\n"
        + ("while True: os.read(fd, 64)\n" if reads else "time.sleep(60)\n")
    )
    with subprocess.Popen(
        [sys.executable, "-c", hold, board.path], stdout=subprocess.PIPE, text=True
    ) as console:
        try:
            assert console.stdout is not None
            assert console.stdout.readline().strip() == "holding"
            code, out = gateway_flash("--port", board.path, *IDENTITY)
        finally:
            console.kill()
    assert code == exits.EXIT_FAILED, out
    assert "✗ port busy: " in out
    assert f"(pid {console.pid}) has {board.path} open" in out
    assert "not MicroPython" not in out
    assert on_board(flash_dir) == {}
    assert board.resets == 0


def test_permission_denied_says_how_to_fix_it() -> None:
    """A port this user may not open. Root opens any port (CAP_DAC_OVERRIDE), so as root the
    command runs with those capabilities dropped from its bounding set, as a technician's
    unprivileged account would."""
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    with NullModem() as line:
        os.chmod(line.path, 0)
        prefix = drop if os.geteuid() == 0 and shutil.which("setpriv") else []
        done = gateway_command(*prefix, "flash", "--port", line.path, *IDENTITY)
    if not prefix and _opens(line.path):
        pytest.skip("this root cannot drop CAP_DAC_OVERRIDE (setpriv from util-linux missing)")
    assert done.returncode == exits.EXIT_FAILED, done.stderr
    assert f"✗ permission denied on {line.path}: add this user to the 'dialout' group" in (
        done.stdout
    )


def _opens(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDWR | os.O_NOCTTY))
    except PermissionError:
        return False
    return True


def test_not_micropython(make_board: MakeBoard) -> None:
    board = make_board(not_micropython=True)
    code, out = gateway_flash("--port", board.path, *IDENTITY)
    assert code == exits.EXIT_FAILED
    assert f"✗ not MicroPython: no raw REPL on {board.path}" in out


def test_unsupported_micropython_version(make_board: MakeBoard, flash_dir: Path) -> None:
    board = make_board(version=(1, 22, 0))
    code, out = gateway_flash("--port", board.path, *IDENTITY)
    assert code == exits.EXIT_FAILED
    assert "✗ unsupported MicroPython 1.22.0, needs >= 1.23" in out
    assert on_board(flash_dir) == {}


def test_verification_failed_when_the_sio1_does_not_answer(make_board: MakeBoard) -> None:
    board = make_board()
    with NullModem() as silent:
        code, out = gateway_flash(
            "--port", board.path, *IDENTITY, "--verify-port", silent.path, "--verify-timeout", "1"
        )
    assert code == exits.EXIT_FAILED
    assert f"✗ verification failed: no answer from the SIO-1 (unit 7) on {silent.path}" in out


def test_verification_failed_when_the_board_does_not_run_the_new_version(
    make_board: MakeBoard, tmp_path: Path, firmware: Firmware
) -> None:
    """A board that did not boot the new files: it answers firmware/'s version."""
    board = make_board(data_line=True, boots_new_files=False)
    newer = rebuilt_firmware(tmp_path)
    code, out = gateway_flash(
        *("--port", board.path, *IDENTITY, "--firmware", str(newer)),
        *("--verify-port", board.data_path),
    )
    assert code == exits.EXIT_FAILED
    assert (
        f"✗ verification failed: the SIO-1 (unit 7) on {board.data_path} runs firmware "
        f"{firmware.version_text}, expected {load_firmware(newer).version_text}"
    ) in out
