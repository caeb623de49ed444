"""Installing the SIO-1 firmware on a board over its USB REPL (``gateway flash``).

A technician's command: find the board on ``--port``, check that it runs a supported
MicroPython, compile ``firmware/`` (:mod:`gateway.flash.firmware`), install what differs from
the board atomically (:mod:`gateway.flash.plan`; a re-run after an unplug finishes the job,
a re-run with nothing to do says "up to date" and writes nothing), write the board's identity
file, reset the board and check over its Modbus data channel (``--verify-port``) that the new
firmware answers as an SIO-1. Every failure a technician meets ends in one plain message and
exit code 1 (2 for a malformed flag); :mod:`gateway.flash.board_link` is the one module that
talks to mpremote. ``--dry-run`` changes nothing on the board and never resets it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from gateway.errors import (
    CopyInterrupted,
    FlashError,
    IdentityMissing,
    LinkLost,
    NotMicroPython,
    UnsupportedVersion,
    VerificationFailed,
)
from gateway.flash.board_link import BoardInfo, BoardLink
from gateway.flash.firmware import MANIFEST, BoardIdentity, Firmware, manifest_names
from gateway.flash.plan import (
    ENTRY,
    TMP,
    Plan,
    Remove,
    Rename,
    Upload,
    describe,
    plan_install,
    sha256_hex,
)

SUPPORTED = (1, 23)
#: How long a board may take to come back after its watchdog reset (USB enumeration included).
RECONNECT_WITHIN_S = 10.0
#: Wait this much past the firmware's watchdog period before the first reconnect, so it does
#: not land in the board's last moments before the reset.
RESTART_MARGIN_S = 0.5
DEFAULT_UNIT_ID = 1


@dataclass(frozen=True)
class Request:
    """What the technician asked for, validated."""

    port: str
    identity: bytes | None  # the identity file to write, or None to keep the board's
    unit_id: int | None  # of that identity
    dry_run: bool
    verify_port: str | None
    verify_timeout: float


def say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


# -- the board ---------------------------------------------------------------------------------


@dataclass
class Board:
    """An open session and what the board holds."""

    link: BoardLink
    info: BoardInfo
    files: dict[str, str]  # name → SHA-256 hex, hashed on the board


def install(request: Request, firmware: Firmware, console: Console) -> int:
    """Plan and (unless a dry run) install; the unit id the board will answer on."""
    local = firmware.build()
    with _session(request.port, firmware, console, reset=not request.dry_run) as board:
        identity = _board_identity(board, firmware)
        if request.identity is not None:
            local[firmware.identity_name] = request.identity
        elif identity is None:
            raise IdentityMissing(
                f"the board has no valid {firmware.identity_name} yet: "
                "give --site, --gateway-id and --token to provision it"
            )
        manifest = board.link.read_file(MANIFEST) if MANIFEST in board.files else None
        plan = plan_install(local, board.files, manifest_names(manifest))
        _report_plan(plan, local, firmware, request.dry_run, console)
        if not request.dry_run and not plan.up_to_date:
            _execute(board.link, plan, local, console, had_firmware=ENTRY in board.files)
            _check_installed(board.link, local)
            say(console, f"✓ installed SIO-1 firmware {firmware.version_text} on {request.port}")
    if request.unit_id is not None:
        return request.unit_id
    return DEFAULT_UNIT_ID if identity is None else identity.unit_id


@contextlib.contextmanager
def _session(port: str, firmware: Firmware, console: Console, *, reset: bool) -> Iterator[Board]:
    """An open board with its firmware stopped; reset at the end so the firmware runs again,
    also after a failure that left the link up. Without ``reset`` (a dry run) the board only
    leaves its raw REPL: nothing on it changes, and it is not restarted."""
    board, stopped = _open_settled(port, firmware, console)
    say(console, f"board on {port}: MicroPython {board.info.version_text} ({board.info.platform})")
    try:
        yield board
    except (LinkLost, CopyInterrupted):  # the board is gone: nothing more to say to it
        board.link.close()
        raise
    except BaseException:
        with contextlib.suppress(FlashError):
            board.link.reset() if reset else board.link.leave()
        board.link.close()
        raise
    if not reset:
        with contextlib.suppress(FlashError):
            board.link.leave()
        board.link.close()
        say(console, "dry run: the board was not reset")
        if stopped:
            say(
                console,
                "note: opening its REPL stopped the SIO-1 firmware (relays off); it starts "
                "again when the board is reset or powered up",
            )
        return
    board.link.reset()
    board.link.close()
    say(console, "board reset: it boots its firmware now")


def _open_settled(port: str, firmware: Firmware, console: Console) -> tuple[Board, bool]:
    """Open the board's REPL; the board and whether its firmware was running. If the SIO-1
    firmware was running, Ctrl-C stopped it and its watchdog is about to reset the board into
    maintenance mode (firmware/main.py): wait for the restart (the flag file is gone then)
    and open the REPL again."""
    try:
        board = _open(port)
        if firmware.maintenance_flag not in board.files:
            return board, False
        board.link.close()
    except LinkLost:
        pass  # the watchdog reset came first
    say(
        console,
        "the SIO-1 firmware was running and has stopped (relays off); "
        "waiting for the board to restart in maintenance mode…",
    )
    deadline = time.monotonic() + RECONNECT_WITHIN_S
    time.sleep(firmware.watchdog_s + RESTART_MARGIN_S)
    while True:
        try:
            board = _open(port)
            if firmware.maintenance_flag not in board.files or time.monotonic() > deadline:
                return board, True  # restarted (or no watchdog runs: nothing to wait for)
            board.link.close()
        except FlashError as exc:  # the port is gone or silent while the board restarts
            if isinstance(exc, UnsupportedVersion) or time.monotonic() > deadline:
                raise
        time.sleep(0.25)


def _open(port: str) -> Board:
    link = BoardLink.open(port)
    try:
        info = link.info()
        _check_supported(info, port)
        return Board(link, info, link.file_hashes())
    except BaseException:
        link.close()
        raise


def _check_supported(info: BoardInfo, port: str) -> None:
    if info.implementation != "micropython":
        raise NotMicroPython(f"not MicroPython: the board on {port} runs {info.implementation}")
    if info.version[:2] < SUPPORTED:
        raise UnsupportedVersion(
            f"unsupported MicroPython {info.version_text}, needs >= "
            f"{SUPPORTED[0]}.{SUPPORTED[1]} (update the board's MicroPython first)"
        )


def _board_identity(board: Board, firmware: Firmware) -> BoardIdentity | None:
    if firmware.identity_name not in board.files:
        return None
    return firmware.parse_identity(board.link.read_file(firmware.identity_name) or b"")


def _report_plan(
    plan: Plan, local: Mapping[str, bytes], firmware: Firmware, dry_run: bool, console: Console
) -> None:
    if plan.up_to_date:
        say(
            console,
            f"✓ up to date: the board holds firmware {firmware.version_text}, nothing copied",
        )
        return
    lines = describe(plan, local)
    say(console, f"{'dry run, would make ' if dry_run else ''}{len(lines)} change(s):")
    for line in lines:
        say(console, f"  {line}")


def _execute(
    link: BoardLink,
    plan: Plan,
    local: Mapping[str, bytes],
    console: Console,
    *,
    had_firmware: bool,
) -> None:
    """Run the plan with a progress bar of the bytes copied. ``had_firmware``: the board
    held a firmware before (what an interruption leaves it with)."""
    committing = False
    columns = (TextColumn("copying"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("copy", total=sum(len(local[n]) for n in plan.uploads))
            for op in plan.ops:
                if isinstance(op, Upload):
                    advance = lambda n: progress.advance(task, n)  # noqa: E731
                    _upload(link, op.name, local[op.name], advance, had_firmware)
                    continue
                # temporaries left by an interrupted run go first; anything else commits
                committing = committing or not (isinstance(op, Remove) and op.name in plan.stale)
                if isinstance(op, Rename):
                    link.rename(op.source, op.target)
                else:
                    link.remove(op.name)
    except LinkLost as exc:
        raise _interrupted(exc, committing, had_firmware) from None


def _kept(had_firmware: bool) -> str:
    """What a board holds after an interruption before the commit."""
    if had_firmware:
        return "the board kept its previous firmware"
    return "the board had no firmware before and still has none"


def _interrupted(exc: LinkLost, committing: bool, had_firmware: bool) -> CopyInterrupted:
    if committing:
        return CopyInterrupted(
            "copy interrupted while files were renamed into place: the board may start no "
            f"firmware until you run the same command again ({exc})"
        )
    return CopyInterrupted(
        f"copy interrupted: {_kept(had_firmware)}; run the same command again ({exc})"
    )


def _upload(
    link: BoardLink, name: str, data: bytes, advance: Callable[[int], None], had_firmware: bool
) -> None:
    """Copy ``name`` to its temporary and check the hash the board computes of it."""
    done = 0

    def progress(written: int) -> None:
        nonlocal done
        advance(written - done)
        done = written

    link.write_file(name + TMP, data, progress)
    got, want = link.sha256(name + TMP), sha256_hex(data)
    if got != want:
        raise VerificationFailed(
            f"verification failed: {name}{TMP} on the board has SHA-256 {got}, expected {want}; "
            f"{_kept(had_firmware)} (run the command again; if this repeats, "
            "the board's flash may be failing)"
        )


def _check_installed(link: BoardLink, local: Mapping[str, bytes]) -> None:
    """Every installed file hashed on the board once more, and no temporary left."""
    files = link.file_hashes()
    wrong = sorted(n for n, data in local.items() if files.get(n) != sha256_hex(data))
    left = sorted(n for n in files if n.endswith(TMP))
    if wrong or left:
        raise VerificationFailed(
            f"verification failed: after installing, {', '.join(wrong + left)} on the board "
            "differ from what was copied; run the same command again"
        )
