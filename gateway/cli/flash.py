"""``gateway flash``: its command line, and what the technician reads.

Parses and checks the flags (:class:`~gateway.flash.install.Request`), runs the install
(:mod:`gateway.flash.install`) and the Modbus check of the new firmware
(:mod:`gateway.flash.verify`), and turns every failure into one line starting with ``✗``
and an exit code: 1 when the job failed (missing identity flags included, as the README
promises), 2 for a flag that is malformed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console

from gateway.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from gateway.errors import BadInput, GatewayError, IdentityMissing, IdentityRejected
from gateway.flash.firmware import DEFAULT_FIRMWARE, Firmware, load_firmware
from gateway.flash.install import DEFAULT_UNIT_ID, Request, install, say
from gateway.flash.verify import verify_sio


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
        unit_id = install(request, firmware, console)
        if not request.dry_run:
            _verify(request, firmware, unit_id, console)
    except (BadInput, IdentityRejected) as exc:
        say(console, f"✗ {exc}")
        return EXIT_BAD_INPUT
    except GatewayError as exc:
        say(console, f"✗ {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say(console, "✗ interrupted: run the same command again to finish")
        return EXIT_FAILED
    return EXIT_OK


def _request(args: argparse.Namespace, firmware: Firmware) -> Request:
    given = {"--site": args.site, "--gateway-id": args.gateway_id, "--token": args.token}
    identity, unit_id = None, None
    if any(v is not None for v in given.values()):
        missing = [flag for flag, v in given.items() if v is None]
        if missing:
            raise IdentityMissing(f"the identity file needs {' and '.join(missing)} too")
        unit_id = DEFAULT_UNIT_ID if args.unit_id is None else args.unit_id
        identity = firmware.identity_file(args.site, args.gateway_id, unit_id, args.token)
    elif args.unit_id is not None:
        raise IdentityMissing(
            "--unit-id needs --site, --gateway-id and --token (one identity file)"
        )
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


def _verify(request: Request, firmware: Firmware, unit_id: int, console: Console) -> None:
    if request.verify_port is None:
        say(
            console,
            "note: Modbus check skipped: give --verify-port (the SIO-1's data port, "
            "not its REPL port) to check that the new firmware answers",
        )
        return
    summary = asyncio.run(
        verify_sio(request.verify_port, unit_id, firmware.version, request.verify_timeout)
    )
    say(console, f"✓ {summary}")
