"""``gateway scan``: which units answer on a line (or a Modbus TCP gateway), what they say
they are, and a ready ``[[devices]]`` block for each one a profile recognises.

Only reads (gateway.bus.scan): safe to run on a line in service, though it shares the line
with nothing else while it runs, so stop the gateway first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rich.console import Console

from gateway.bus.config import STANDARD_BAUDRATES, RtuBus, TcpBus
from gateway.bus.scan import Found, Scanner, ScanSettings, devices_block
from gateway.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from gateway.devices.library import ProfileLibrary
from gateway.errors import BusError, GatewayError
from gateway.runtime import open_transport


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scan",
        help="find the units that answer on a bus and what they are (reads only)",
        description="Probe each unit id once (a read of holding register 0: any answer, even "
        "a Modbus exception, means a device), then ask each one that answers what it is: "
        "Modbus device identification (FC43/14), the SunSpec 'SunS' marker and common model, "
        "and the identity registers of the profiles. Never writes to a device. Prints a "
        "[[devices]] block for every unit a profile recognises.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of an RS-485 line, e.g. /dev/ttyUSB0")
    where.add_argument("--host", help="Modbus TCP device or gateway")
    p.add_argument("--baud", type=int, default=9600, help="line speed (default %(default)s)")
    p.add_argument("--parity", choices=("N", "E", "O"), default="N")
    p.add_argument("--tcp-port", type=int, default=502, help="Modbus TCP port (default 502)")
    p.add_argument(
        "--units",
        default="1-247",
        help="unit ids to probe: '1-247', '1,2,10-20' (default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=0.3,
        help="seconds to wait for a silent unit id (default %(default)s)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=3.0,
        help="seconds at most to ask an answering unit what it is (default %(default)s)",
    )
    p.add_argument("--bus-name", default="line-1", help="bus name in the printed blocks")
    p.add_argument(
        "--profiles",
        type=Path,
        action="append",
        default=[],
        help="a directory of the site's own profiles (may be repeated)",
    )


def parse_units(text: str) -> tuple[int, ...]:
    """'1-5,9' → (1, 2, 3, 4, 5, 9); ValueError naming what is wrong."""
    units: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--units: {part.strip()!r} is not a unit id or a range") from None
        if not 0 <= first <= last <= 255:
            raise ValueError(f"--units: {part.strip()!r} is not within 0..255")
        units += range(first, last + 1)
    return tuple(dict.fromkeys(units))


def run(args: argparse.Namespace, console: Console) -> int:
    try:
        units = parse_units(args.units)
    except ValueError as exc:
        console.print(f"✗ {exc}", style="red", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    if args.port and args.baud not in STANDARD_BAUDRATES:
        rates = ", ".join(map(str, STANDARD_BAUDRATES))
        console.print(f"✗ --baud: {args.baud} is not a standard rate ({rates})", style="red")
        return EXIT_BAD_INPUT
    if not 0 < args.timeout <= 10 or not 0 < args.budget <= 60:
        console.print("✗ --timeout must be within 0..10 s and --budget within 0..60 s", style="red")
        return EXIT_BAD_INPUT
    library = ProfileLibrary.load(args.profiles)
    for problem in library.problems:
        console.print(f"✗ {problem}", style="red", markup=False, highlight=False)
    if library.problems:
        return EXIT_BAD_INPUT
    bus: RtuBus | TcpBus = (
        RtuBus(
            name=args.bus_name, kind="rtu", port=args.port, baudrate=args.baud, parity=args.parity
        )
        if args.port
        else TcpBus(name=args.bus_name, kind="tcp", host=args.host, port=args.tcp_port)
    )
    settings = ScanSettings(units, args.timeout, args.budget)
    where = args.port or f"{args.host}:{args.tcp_port}"
    console.print(
        f"scanning {len(units)} unit id(s) on {where}: at most {args.timeout:g} s for a silent "
        f"id, {args.budget:g} s for one that answers",
        highlight=False,
    )
    try:
        found = asyncio.run(_scan(bus, library, settings, console))
    except KeyboardInterrupt:
        return EXIT_FAILED
    except GatewayError as exc:
        console.print(f"✗ {exc}", style="red", markup=False, highlight=False)
        return EXIT_FAILED
    console.print(f"{len(found)} unit(s) answered", highlight=False)
    kinds = {m: library.get(m).kind.value for f in found for m in f.profiles}
    block = devices_block(found, args.bus_name, kinds)
    if block:
        print(block)
    return EXIT_OK


async def _scan(
    bus: RtuBus | TcpBus, library: ProfileLibrary, settings: ScanSettings, console: Console
) -> list[Found]:
    profiles = {m: library.get(m) for m in library.models()}
    total = len(settings.units)
    done = 0

    def progress(unit: int, found: Found | None) -> None:
        nonlocal done
        done += 1
        if found is not None:
            matches = f" → {', '.join(found.profiles)}" if found.profiles else ""
            note = " (ran out of time asking)" if found.incomplete else ""
            console.print(
                f"  unit {unit:3d}: answers ({found.answered}), {found.says()}{matches}{note}",
                markup=False,
                highlight=False,
            )
        elif sys.stderr.isatty():
            print(f"\r  {done}/{total} probed (unit {unit})", end="", file=sys.stderr, flush=True)

    try:
        async with open_transport(bus) as transport:
            found = await Scanner(transport, profiles, settings, progress).scan()
    except BusError as exc:
        raise GatewayError(f"cannot scan {bus.name}: {exc}") from None
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return found
