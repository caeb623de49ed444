"""``gateway flash``: install the SIO-1 firmware on a board over its USB REPL.

A technician's command: find the board on ``--port``, check that it runs a supported
MicroPython, compile ``firmware/`` (:mod:`gateway.flash.firmware`), install what differs from
the board atomically (:mod:`gateway.flash.plan`; a re-run after an unplug finishes the job,
a re-run with nothing to do says "up to date" and writes nothing), write the board's identity
file, reset the board and check over its Modbus data channel (``--verify-port``) that the new
firmware answers as an SIO-1. Every failure a technician meets ends in one plain message and
exit code 1 (2 for bad input); :mod:`gateway.flash.board_link` is the one module that talks to
mpremote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from gateway.bus.pdu import ExceptionAnswer, Read, decode_response
from gateway.bus.pdu import encode_request as encode
from gateway.bus.rtu import RtuTransport
from gateway.control.safety_io import MAP_VERSION
from gateway.devices.profile import Table, load_profile
from gateway.errors import (
    BadInput,
    CopyInterrupted,
    FlashError,
    GatewayError,
    IdentityRejected,
    LinkLost,
    NotMicroPython,
    ResponseError,
    UnsupportedVersion,
    VerificationFailed,
)
from gateway.flash.board_link import BoardInfo, BoardLink
from gateway.flash.firmware import (
    DEFAULT_FIRMWARE,
    MANIFEST,
    BoardIdentity,
    Firmware,
    load_firmware,
    manifest_names,
)
from gateway.flash.plan import TMP, Plan, Remove, Rename, Upload, describe, plan_install, sha256_hex

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
SUPPORTED = (1, 23)
#: The SIO-1 data channel's line speed (firmware ``sio_app.Firmware``).
DATA_BAUDRATE = 115200
#: How long a board may take to come back after its watchdog reset (USB enumeration included).
RECONNECT_WITHIN_S = 10.0
#: Wait this much past the firmware's watchdog period before the first reconnect, so it does
#: not land in the board's last moments before the reset.
RESTART_MARGIN_S = 0.5
DEFAULT_UNIT_ID = 1


# -- the command line ------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What the technician asked for, validated."""

    port: str
    identity: bytes | None  # the identity file to write, or None to keep the board's
    unit_id: int | None  # of that identity
    dry_run: bool
    verify_port: str | None
    verify_timeout: float


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``flash`` subcommand to the ``gateway`` command line."""
    p = sub.add_parser(
        "flash",
        help="install the SIO-1 firmware on a board over USB (mpremote)",
        description="Compile firmware/ and install it on the SIO-1 board's MicroPython "
        "over its USB REPL port, atomically; a re-run finishes an interrupted install.",
    )
    p.add_argument("--port", required=True, help="the board's REPL port, e.g. /dev/ttyACM0")
    p.add_argument("--site", help="site name for the board's identity file")
    p.add_argument("--gateway-id", help="gateway id for the board's identity file")
    p.add_argument(
        "--unit-id",
        type=int,
        default=None,
        help=f"Modbus unit id for the identity file (default {DEFAULT_UNIT_ID})",
    )
    p.add_argument("--token", help="provisioning token; only its SHA-256 goes to the board")
    p.add_argument("--dry-run", action="store_true", help="list what would change; change nothing")
    p.add_argument(
        "--verify-port",
        help="the SIO-1's Modbus data port: after the reset, check that the new firmware answers",
    )
    p.add_argument(
        "--verify-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the SIO-1 to answer after the reset (default %(default)s)",
    )
    p.add_argument(
        "--firmware", type=Path, default=DEFAULT_FIRMWARE, help="firmware sources (%(default)s)"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Run ``gateway flash``; the exit code (0 ok, 1 failed, 2 bad input)."""
    try:
        firmware = load_firmware(args.firmware)
        request = _request(args, firmware)
        unit_id = _install(request, firmware, console)
        if not request.dry_run:
            _verify(request, firmware, unit_id, console)
    except (BadInput, IdentityRejected) as exc:
        _say(console, f"✗ {exc}")
        return EXIT_BAD_INPUT
    except GatewayError as exc:
        _say(console, f"✗ {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say(console, "✗ interrupted: run the same command again to finish")
        return EXIT_FAILED
    return EXIT_OK


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def _request(args: argparse.Namespace, firmware: Firmware) -> Request:
    given = {"--site": args.site, "--gateway-id": args.gateway_id, "--token": args.token}
    identity, unit_id = None, None
    if any(v is not None for v in given.values()):
        missing = [flag for flag, v in given.items() if v is None]
        if missing:
            raise BadInput(f"the identity file needs {' and '.join(missing)} too")
        unit_id = DEFAULT_UNIT_ID if args.unit_id is None else args.unit_id
        identity = firmware.identity_file(args.site, args.gateway_id, unit_id, args.token)
    elif args.unit_id is not None:
        raise BadInput("--unit-id needs --site, --gateway-id and --token (one identity file)")
    if args.verify_timeout <= 0:
        raise BadInput(f"--verify-timeout: {args.verify_timeout} is not a positive number")
    return Request(
        port=args.port,
        identity=identity,
        unit_id=unit_id,
        dry_run=args.dry_run,
        verify_port=args.verify_port,
        verify_timeout=args.verify_timeout,
    )


# -- the board ---------------------------------------------------------------------------------


@dataclass
class Board:
    """An open session and what the board holds."""

    link: BoardLink
    info: BoardInfo
    files: dict[str, str]  # name → SHA-256 hex, hashed on the board


def _install(request: Request, firmware: Firmware, console: Console) -> int:
    """Plan and (unless a dry run) install; the unit id the board will answer on."""
    local = firmware.build()
    with _session(request.port, firmware, console) as board:
        identity = _board_identity(board, firmware)
        if request.identity is not None:
            local[firmware.identity_name] = request.identity
        elif identity is None:
            raise BadInput(
                f"the board has no valid {firmware.identity_name} yet: "
                "give --site, --gateway-id and --token to provision it"
            )
        manifest = board.link.read_file(MANIFEST) if MANIFEST in board.files else None
        plan = plan_install(local, board.files, manifest_names(manifest))
        _report_plan(plan, local, firmware, request.dry_run, console)
        if not request.dry_run and not plan.up_to_date:
            _execute(board.link, plan, local, console)
            _check_installed(board.link, local)
            _say(console, f"✓ installed SIO-1 firmware {firmware.version_text} on {request.port}")
    if request.unit_id is not None:
        return request.unit_id
    return DEFAULT_UNIT_ID if identity is None else identity.unit_id


@contextlib.contextmanager
def _session(port: str, firmware: Firmware, console: Console) -> Iterator[Board]:
    """An open board with its firmware stopped; reset at the end so the firmware runs again,
    also after a failure that left the link up."""
    board = _open_settled(port, firmware, console)
    _say(console, f"board on {port}: MicroPython {board.info.version_text} ({board.info.platform})")
    try:
        yield board
    except (LinkLost, CopyInterrupted):  # the board is gone: nothing more to say to it
        board.link.close()
        raise
    except BaseException:
        with contextlib.suppress(FlashError):
            board.link.reset()
        board.link.close()
        raise
    board.link.reset()
    board.link.close()
    _say(console, "board reset: it boots its firmware now")


def _open_settled(port: str, firmware: Firmware, console: Console) -> Board:
    """Open the board's REPL. If the SIO-1 firmware was running, Ctrl-C stopped it and its
    watchdog is about to reset the board into maintenance mode (firmware/main.py): wait for
    the restart (the flag file is gone then) and open the REPL again."""
    try:
        board = _open(port)
        if firmware.maintenance_flag not in board.files:
            return board
        board.link.close()
    except LinkLost:
        pass  # the watchdog reset came first
    _say(
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
                return board  # restarted (or no watchdog runs: nothing to wait for)
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
        _say(
            console,
            f"✓ up to date: the board holds firmware {firmware.version_text}, nothing copied",
        )
        return
    lines = describe(plan, local)
    _say(console, f"{'dry run, would make ' if dry_run else ''}{len(lines)} change(s):")
    for line in lines:
        _say(console, f"  {line}")


def _execute(link: BoardLink, plan: Plan, local: Mapping[str, bytes], console: Console) -> None:
    """Run the plan with a progress bar of the bytes copied."""
    committing = False
    columns = (TextColumn("copying"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("copy", total=sum(len(local[n]) for n in plan.uploads))
            for op in plan.ops:
                if isinstance(op, Upload):
                    _upload(link, op.name, local[op.name], lambda n: progress.advance(task, n))
                    continue
                # temporaries left by an interrupted run go first; anything else commits
                committing = committing or not (isinstance(op, Remove) and op.name in plan.stale)
                if isinstance(op, Rename):
                    link.rename(op.source, op.target)
                else:
                    link.remove(op.name)
    except LinkLost as exc:
        raise _interrupted(exc, committing) from None


def _interrupted(exc: LinkLost, committing: bool) -> CopyInterrupted:
    if committing:
        return CopyInterrupted(
            "copy interrupted while files were renamed into place: the board may start no "
            f"firmware until you run the same command again ({exc})"
        )
    return CopyInterrupted(
        "copy interrupted: the board kept its previous firmware; "
        f"run the same command again ({exc})"
    )


def _upload(link: BoardLink, name: str, data: bytes, advance: Callable[[int], None]) -> None:
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
            "the board kept its previous firmware (run the command again; if this repeats, "
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


# -- the Modbus check of the running firmware ---------------------------------------------------


def _verify(request: Request, firmware: Firmware, unit_id: int, console: Console) -> None:
    if request.verify_port is None:
        _say(
            console,
            "note: Modbus check skipped: give --verify-port (the SIO-1's data port, "
            "not its REPL port) to check that the new firmware answers",
        )
        return
    summary = asyncio.run(
        verify_sio(request.verify_port, unit_id, firmware.version, request.verify_timeout)
    )
    _say(console, f"✓ {summary}")


#: The input registers that say what runs on the board (SIO-1 profile), read in one request.
_CHECKED = ("map_version", "fw_version", "state")


def _checked_registers() -> tuple[Read, list[int]]:
    """One read covering the checked points, and each point's index in its answer."""
    points = load_profile("SIO-1").point_map
    addresses = [points[name].address or 0 for name in _CHECKED]
    start = min(addresses)
    return Read(Table.INPUT, start, max(addresses) - start + 1), [a - start for a in addresses]


async def verify_sio(port: str, unit_id: int, version: tuple[int, int], within: float) -> str:
    """Wait until the SIO-1 answers on its data port and check that it runs ``version`` in a
    healthy state: a one-line summary, or :class:`VerificationFailed`."""
    request, where = _checked_registers()
    deadline = time.monotonic() + within
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            async with RtuTransport("sio-verify", port, DATA_BAUDRATE) as bus:
                pdu = await bus.transact(unit_id, encode(request), 0.3)
            answer = decode_response(request, pdu)
        except (GatewayError, ResponseError) as exc:  # still booting, or the port is back soon
            last = str(exc)
            await asyncio.sleep(0.1)
            continue
        if isinstance(answer, ExceptionAnswer):
            raise VerificationFailed(
                f"verification failed: the SIO-1 (unit {unit_id}) on {port} answered "
                f"exception {answer.exception_code:02d} to reading its input registers"
            )
        values = [answer[i] for i in where]
        return _check_values(f"the SIO-1 (unit {unit_id}) on {port}", values, version)
    raise VerificationFailed(
        f"verification failed: no answer from the SIO-1 (unit {unit_id}) on {port} "
        f"within {within:g} s ({last})"
    )


def _check_values(where: str, values: list[int], version: tuple[int, int]) -> str:
    """map_version, fw_version and state as read: the summary, or what is wrong."""
    map_version, fw, state = values
    points = load_profile("SIO-1").point_map
    state_name = (points["state"].enum or {}).get(state, str(state))
    if map_version != MAP_VERSION:
        raise VerificationFailed(
            f"verification failed: {where} answers map version {map_version:#06x}, "
            f"expected {MAP_VERSION:#06x}"
        )
    if fw != version[0] << 8 | version[1]:
        raise VerificationFailed(
            f"verification failed: {where} runs firmware {fw >> 8}.{fw & 0xFF}, "
            f"expected {version[0]}.{version[1]}"
        )
    if state_name == "FAULT":
        raise VerificationFailed(
            f"verification failed: {where} is in FAULT after booting (a bad identity file or "
            "a failed self-test; its fault.log says which)"
        )
    return f"{where} answers: map {map_version:#06x}, firmware {fw >> 8}.{fw & 0xFF}, {state_name}"
