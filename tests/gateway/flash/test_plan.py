"""``gateway flash`` without a board: the install plan (which files are copied, reused,
removed, in which order) and what goes on a board (host-only modules stay home, the
identity file is the firmware's own format, bad input is refused before any board is
touched).

The plan is run against a dict standing in for the board's flash, interrupted at every step:
a board never holds a half-written file under a final name, never boots a mix of old and new
modules, and planning again from whatever it holds finishes the job.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from gateway.cli import exits, flash
from gateway.errors import IdentityRejected
from gateway.flash.firmware import (
    DEFAULT_FIRMWARE,
    MANIFEST,
    board_name,
    firmware_sources,
    load_firmware,
    manifest_names,
    render_manifest,
)
from gateway.flash.plan import ENTRY, TMP, Op, Remove, Rename, Upload, plan_install, sha256_hex

FIRMWARE_V1 = {"main.py": b"import app\napp.run()\n", "app.mpy": b"M1", "regs.mpy": b"R1"}
IDENTITY = "identity.txt"

Flash = dict[str, bytes]


def hashes(board: Mapping[str, bytes]) -> dict[str, str]:
    return {name: sha256_hex(data) for name, data in board.items()}


def with_manifest(files: Flash, version: tuple[int, int] = (1, 0)) -> Flash:
    return {**files, MANIFEST: render_manifest(version, files)}


def apply(board: Flash, op: Op, local: Mapping[str, bytes]) -> None:
    """One operation on the model of the board's flash (as strict as littlefs)."""
    if isinstance(op, Upload):
        board[op.name + TMP] = local[op.name]
    elif isinstance(op, Rename):
        board[op.target] = board.pop(op.source)
    else:
        del board[op.name]


def plan_for(board: Flash, local: Flash) -> list[Op]:
    return list(plan_install(local, hashes(board), manifest_names(board.get(MANIFEST))).ops)


def install(board: Flash, local: Flash) -> Flash:
    board = dict(board)
    for op in plan_for(board, local):
        apply(board, op, local)
    return board


def finals(board: Mapping[str, bytes]) -> dict[str, bytes]:
    return {n: d for n, d in board.items() if not n.endswith(TMP)}


# -- the plan, case by case ---------------------------------------------------------------------


def test_clean_board_gets_every_file_through_a_temporary_and_main_last() -> None:
    local = with_manifest(FIRMWARE_V1)
    ops = plan_for({}, local)
    uploads = [op.name for op in ops if isinstance(op, Upload)]
    renames = [op for op in ops if isinstance(op, Rename)]
    assert sorted(uploads) == sorted(local)
    assert uploads[-1] == ENTRY
    assert all(r.source == r.target + TMP for r in renames)
    assert renames[-1] == Rename(ENTRY + TMP, ENTRY)
    assert install({}, local) == local


def test_board_holding_the_same_files_is_up_to_date() -> None:
    local = with_manifest(FIRMWARE_V1)
    board = {**local, "fault.log": b"BOOT", IDENTITY: b"site = a"}
    plan = plan_install(local, hashes(board), manifest_names(board[MANIFEST]))
    assert plan.up_to_date
    assert plan.ops == ()


def test_only_changed_files_are_copied() -> None:
    old = with_manifest(FIRMWARE_V1)
    new = with_manifest({**FIRMWARE_V1, "regs.mpy": b"R2"}, (1, 1))
    plan = plan_install(new, hashes(old), manifest_names(old[MANIFEST]))
    assert set(plan.uploads) == {MANIFEST, "regs.mpy"}
    assert set(plan.changed) == {MANIFEST, "regs.mpy"}
    assert plan.new == ()


def test_unchanged_main_is_parked_while_files_are_renamed_into_place() -> None:
    old = with_manifest(FIRMWARE_V1)
    new = with_manifest({**FIRMWARE_V1, "app.mpy": b"M2"})
    ops = plan_for(old, new)
    commit = [op for op in ops if not isinstance(op, Upload)]
    assert commit[0] == Rename(ENTRY, ENTRY + TMP)
    assert commit[-1] == Rename(ENTRY + TMP, ENTRY)


def test_changed_main_waits_in_its_temporary_and_the_old_one_is_removed_first() -> None:
    old = with_manifest(FIRMWARE_V1)
    new = with_manifest({**FIRMWARE_V1, ENTRY: b"import app\napp.run(fast=True)\n"})
    commit = [op for op in plan_for(old, new) if not isinstance(op, Upload)]
    assert commit[0] == Remove(ENTRY)
    assert commit[-1] == Rename(ENTRY + TMP, ENTRY)


def test_temporary_already_holding_the_new_content_is_reused_not_copied() -> None:
    local = with_manifest(FIRMWARE_V1)
    board = {"app.mpy.tmp": local["app.mpy"]}
    plan = plan_install(local, hashes(board))
    assert plan.reused == ("app.mpy",)
    assert "app.mpy" not in plan.uploads
    assert Rename("app.mpy.tmp", "app.mpy") in plan.ops


def test_half_written_temporaries_are_removed_before_anything_is_copied() -> None:
    local = with_manifest(FIRMWARE_V1)
    board = {"app.mpy.tmp": b"M", "gone.mpy.tmp": b"x"}
    plan = plan_install(local, hashes(board))
    assert plan.stale == ("app.mpy.tmp", "gone.mpy.tmp")
    assert list(plan.ops[:2]) == [Remove("app.mpy.tmp"), Remove("gone.mpy.tmp")]


def test_files_of_the_previous_release_go_and_the_boards_own_files_stay() -> None:
    old = with_manifest({**FIRMWARE_V1, "legacy.mpy": b"L"})
    new = with_manifest(FIRMWARE_V1, (2, 0))
    board = {**old, IDENTITY: b"site = a", "fault.log": b"BOOT", "notes.txt": b"hi"}
    plan = plan_install(new, hashes(board), manifest_names(board[MANIFEST]))
    assert plan.obsolete == ("legacy.mpy",)
    after = install(board, new)
    assert "legacy.mpy" not in after
    assert {IDENTITY, "fault.log", "notes.txt"} <= after.keys()


def test_a_py_that_would_shadow_a_new_mpy_is_removed() -> None:
    """MicroPython imports ``app.py`` before ``app.mpy``: a copied source would win."""
    local = with_manifest(FIRMWARE_V1)
    plan = plan_install(local, hashes({"app.py": b"print('dev copy')"}))
    assert plan.obsolete == ("app.py",)


def test_manifest_lists_every_file_with_its_hash() -> None:
    text = render_manifest((1, 2), FIRMWARE_V1)
    assert manifest_names(text) == set(FIRMWARE_V1)
    assert b"version = 1.2" in text
    assert sha256_hex(FIRMWARE_V1["app.mpy"]).encode() in text
    assert manifest_names(None) == frozenset()
    assert manifest_names(b"\xff garbage = \n") == frozenset()


# -- the plan, against every board state ---------------------------------------------------------

names = st.sampled_from(["main.py", "app.mpy", "regs.mpy", "util.mpy", IDENTITY])
contents = st.sampled_from([b"A", b"B", b"C", b""])


@st.composite
def boards_and_releases(draw: st.DrawFn) -> tuple[Flash, Flash]:
    """A board (an old release, maybe half-installed, maybe with leftovers) and a new one."""
    old = draw(st.dictionaries(names, contents, max_size=5))
    new = draw(st.dictionaries(names, contents, min_size=1, max_size=5))
    new[ENTRY] = draw(contents)
    board = with_manifest(old) if draw(st.booleans()) else dict(old)
    board.update(draw(st.dictionaries(names.map(lambda n: n + TMP), contents, max_size=3)))
    board.update(draw(st.dictionaries(st.sampled_from(["fault.log", "app.py"]), contents)))
    return board, with_manifest(new, (9, 9))


@settings(max_examples=300, deadline=None)
@given(boards_and_releases())
def test_any_board_ends_holding_the_release_and_then_is_up_to_date(
    case: tuple[Flash, Flash],
) -> None:
    board, local = case
    after = install(board, local)
    assert {n: after[n] for n in local} == local
    assert not any(n.endswith(TMP) for n in after)
    assert not (manifest_names(board.get(MANIFEST)) - local.keys()) & after.keys()
    assert after.get("fault.log") == board.get("fault.log")
    assert plan_for(after, local) == []


@settings(max_examples=300, deadline=None)
@given(boards_and_releases())
def test_final_names_only_ever_hold_old_or_new_content_and_main_boots_no_mix(
    case: tuple[Flash, Flash],
) -> None:
    board, local = case
    before = finals(board)
    state = dict(board)
    for op in plan_for(board, local):
        apply(state, op, local)
        for name, data in finals(state).items():
            assert data in (before.get(name), local.get(name)), name
        if ENTRY in state:
            # with main.py in place the board boots either the old files or the new ones
            assert finals(state) == before or all(state.get(n) == d for n, d in local.items())


@settings(max_examples=300, deadline=None)
@given(boards_and_releases(), st.data())
def test_install_interrupted_at_any_step_is_finished_by_running_it_again(
    case: tuple[Flash, Flash], data: st.DataObject
) -> None:
    board, local = case
    ops = plan_for(board, local)
    state = dict(board)
    for op in ops[: data.draw(st.integers(min_value=0, max_value=len(ops)), label="stop after")]:
        apply(state, op, local)
    state["app.mpy.tmp"] = b"half"  # the op in flight when the link dropped
    after = install(state, local)
    assert {n: after[n] for n in local} == local
    assert not any(n.endswith(TMP) for n in after)
    # files of the old release are gone, even when the new manifest was already in place
    assert not (manifest_names(board.get(MANIFEST)) - local.keys()) & after.keys()
    assert plan_for(after, local) == []


# -- what goes on a board --------------------------------------------------------------------


def test_every_firmware_module_goes_on_the_board_and_main_stays_source() -> None:
    sources = {s.name for s in firmware_sources(DEFAULT_FIRMWARE)}
    assert sources == {p.name for p in DEFAULT_FIRMWARE.glob("*.py")}
    names = {board_name(DEFAULT_FIRMWARE / n) for n in sources}
    assert ENTRY in names
    assert all(n == ENTRY or n.endswith(".mpy") for n in names)


def test_firmware_without_main_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    with pytest.raises(Exception, match=r"main\.py is missing"):
        firmware_sources(tmp_path)


def test_identity_file_is_the_firmware_format_with_only_the_token_hash() -> None:
    firmware = load_firmware(DEFAULT_FIRMWARE)
    text = firmware.identity_file("hil", "gw-1", 7, "s3cret")
    assert b"s3cret" not in text
    assert hashlib.sha256(b"s3cret").hexdigest().encode() in text
    identity = firmware.parse_identity(text)
    assert identity is not None
    assert (identity.site, identity.gateway, identity.unit_id) == ("hil", "gw-1", 7)


@pytest.mark.parametrize(
    ("site", "unit_id", "message"),
    [
        ("hil", 300, r"unit_id: 300 is outside 1\.\.247"),
        ("a#b", 1, r"cannot hold '#'"),
        ("", 1, r"must not be empty"),
    ],
)
def test_identity_the_firmware_would_reject_is_refused(
    site: str, unit_id: int, message: str
) -> None:
    firmware = load_firmware(DEFAULT_FIRMWARE)
    with pytest.raises(IdentityRejected, match=message):
        firmware.identity_file(site, "gw-1", unit_id, "t")


def run_flash(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gateway")
    flash.add_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = flash.run(parser.parse_args(["flash", *argv]), Console(file=out, width=200))
    return code, out.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--unit-id", "3"], "--unit-id needs --site, --gateway-id and --token"),
        (["--site", "hil"], "the identity file needs --gateway-id and --token too"),
    ],
)
def test_missing_identity_flags_exit_1_before_any_board_is_touched(
    argv: list[str], message: str
) -> None:
    code, out = run_flash("--port", "/dev/doorstep-no-such-port", *argv)
    assert code == exits.EXIT_FAILED  # the README: 1 for every failure
    assert message in out
    assert "no board found" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--site", "hil", "--gateway-id", "g", "--token", "t", "--unit-id", "0"], "unit_id: 0"),
        (["--verify-timeout", "0"], "--verify-timeout: 0.0 is not a positive number"),
    ],
)
def test_bad_input_exits_2_before_any_board_is_touched(argv: list[str], message: str) -> None:
    code, out = run_flash("--port", "/dev/doorstep-no-such-port", *argv)
    assert code == exits.EXIT_BAD_INPUT
    assert message in out
    assert "no board found" not in out
