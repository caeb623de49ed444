"""``gateway`` command line: check a site config, run a site with a live status table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from gateway.cli import flash, run, scan, screen
from gateway.cli import profile as profile_cli
from gateway.cli import wire as wire_cli
from gateway.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from gateway.control import command_socket
from gateway.control.alarms import AlarmLog
from gateway.control.standard.interlocks import capability_notes
from gateway.errors import ConfigError, GatewayError
from gateway.site import load_site


def _check(args: argparse.Namespace, console: Console) -> int:
    try:
        site = load_site(args.config)
    except ConfigError as exc:
        console.print(f"[red]✗ {exc.source}[/red]: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            console.print(f"  {problem}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    points = sum(len(site.profile(d).points) for d in site.devices)
    console.print(
        f"[green]✓ {args.config}[/green]: site {site.gateway.site}, gateway {site.gateway.id}, "
        f"{len(site.buses)} bus(es), {len(site.devices)} device(s), {points} points, "
        f"{len(site.all_interlocks())} interlock(s)"
    )
    for note in capability_notes(site.safety, {d.name: site.profile(d) for d in site.devices}):
        console.print(f"  ! {note}", style="yellow", markup=False, highlight=False)
    return EXIT_OK


def _reset_latch(args: argparse.Namespace, console: Console) -> int:
    try:
        reply = asyncio.run(
            command_socket.send(
                args.state_dir / command_socket.SOCKET_NAME,
                {"cmd": "reset-latch", "name": args.name},
            )
        )
    except GatewayError as exc:
        console.print(f"✗ {exc}", style="red", markup=False, highlight=False)
        return EXIT_FAILED
    if "error" in reply:
        console.print(f"✗ refused: {reply['error']}", markup=False, highlight=False)
        return EXIT_FAILED
    console.print(f"✓ {reply['ok']}", markup=False, highlight=False)
    return EXIT_OK


def _alarms(args: argparse.Namespace, console: Console) -> int:
    journal = args.state_dir / "alarms.jsonl"
    if not journal.exists():
        console.print(f"no alarms recorded in {args.state_dir}", markup=False)
        return EXIT_OK
    log = AlarmLog(journal)
    events = log.recent if args.history else log.by_severity()
    console.print(
        screen.alarm_table(events, title="alarm history" if args.history else "active alarms")
    )
    return EXIT_OK


def default_state_dir() -> Path:
    """Where latches and the alarm journal live: $DOORSTEP_STATE_DIR, /var/lib/doorstep when
    it exists (the installed gateway), else ~/.local/state/doorstep."""
    env = os.environ.get("DOORSTEP_STATE_DIR")
    if env:
        return Path(env)
    system = Path("/var/lib/doorstep")
    if system.is_dir():
        return system
    return Path.home() / ".local" / "state" / "doorstep"


RUN_DESCRIPTION = f"""\
Poll every device of a site, run its interlocks, and show how it is doing.

On a terminal (stdout a TTY) a full-screen table is drawn: each device coloured by its
health (red: offline, or a critical or major alarm on it; yellow: a minor alarm, stale or
bad points, or held by an interlock; green: ok), the quality of its data in a column of its
own, the buses, and the active alarms at the bottom. Columns that do not fit the terminal
are dropped in this order: {", ".join(screen.DEVICE_DROP_ORDER)}. Log messages are held
while the table is shown and written out when it closes; Ctrl-C stops the gateway.

Without a terminal (under systemd, whose stdout is the journal; stdout redirected to a
file or a pipe) it logs to stdout instead: one line per device at start, every alarm as it
is raised, updated or cleared, and a one-line summary every --log-every seconds. When
stdout is the journal the lines carry journald priorities (critical alarms at crit).

The control loop and the buses ask for a real-time priority (or nice -10) and the log says
what they got. SIGTERM (systemd's stop) stops the gateway cleanly, as Ctrl-C does."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Doorstep edge gateway")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a site config against schema and profiles")
    check.add_argument("config", help="site config (TOML)")
    run = sub.add_parser(
        "run",
        help="poll a site and show a live status table (or log, without a terminal)",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", required=True, help="site config (TOML)")
    run.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    run.add_argument("--json", action="store_true", help="print a final snapshot as JSON")
    run.add_argument(
        "--display",
        choices=("auto", "table", "log"),
        default="auto",
        help="table: full-screen status table; log: log lines on stdout; auto (default): "
        "the table on a terminal, log lines otherwise",
    )
    run.add_argument(
        "--log-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="in log mode, a one-line summary this often (default: %(default)s)",
    )
    run.add_argument(
        "--ota-window",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a new release must stay healthy this long to commit (default: %(default)s)",
    )
    run.add_argument(
        "--ota-defer",
        type=_defer_list,
        default="interlocks,charging",
        metavar="LIST",
        help="what an update's restart waits for: interlocks (any active), charging (any "
        "charger charging), both (default: %(default)s) or none",
    )
    run.add_argument(
        "--ota-sio1-repl",
        type=_device_port,
        action="append",
        default=[],
        metavar="DEVICE=PORT",
        help="an SIO-1's USB REPL port (e.g. sio=/dev/ttyACM0): updates install the SIO-1 "
        "firmware they carry on it (repeat for each board)",
    )
    run.add_argument(  # tests and development: a bundle that carries only the gateway's wheel
        "--ota-system-site-packages", action="store_true", help=argparse.SUPPRESS
    )
    reset = sub.add_parser("reset-latch", help="reset a latched interlock of the running gateway")
    reset.add_argument("name", help="interlock name (see the status table)")
    alarms = sub.add_parser("alarms", help="show active alarms (or --history)")
    alarms.add_argument("--history", action="store_true", help="the last 200 events")
    flash.add_parser(sub)
    profile_cli.add_parser(sub)
    scan.add_parser(sub)
    wire_cli.add_parser(sub)
    for p in (run, reset, alarms):
        p.add_argument(
            "--state-dir",
            type=Path,
            default=default_state_dir(),
            help="latches, alarm journal and control socket (default: %(default)s)",
        )
    return parser


def _device_port(text: str) -> tuple[str, str]:
    """``--ota-sio1-repl``: DEVICE=PORT."""
    device, _, port = text.partition("=")
    if not device.strip() or not port.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected DEVICE=PORT, e.g. sio=/dev/ttyACM0")
    return device.strip(), port.strip()


def _defer_list(text: str) -> str:
    """``--ota-defer``: a comma-separated list of interlocks, charging; or none."""
    words = {w.strip() for w in text.split(",") if w.strip()}
    unknown = sorted(words - {"interlocks", "charging", "none"})
    if unknown or not words:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected interlocks, charging, both comma-separated, or none"
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    console = Console()
    if args.command == "check":
        return _check(args, console)
    if args.command == "reset-latch":
        return _reset_latch(args, console)
    if args.command == "alarms":
        return _alarms(args, console)
    if args.command == "flash":
        return flash.run(args, console)
    if args.command == "profile":
        return profile_cli.run(args, console)
    if args.command == "scan":
        return scan.run(args, console)
    if args.command == "wire":
        return wire_cli.run(args, console)
    with contextlib.suppress(KeyboardInterrupt):
        return run.run_command(args, console)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
