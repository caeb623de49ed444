"""``gateway run``: a site polled, its interlocks run, and what it is doing shown, until the
``--duration`` is over, Ctrl-C, or SIGTERM (systemd's stop).

Before anything starts, the event loop's thread — the control loop and every bus scheduler
run there — asks the OS for the priority the control path needs
(:func:`gateway.priority.raise_control_priority`) and says in one log line what it got; the
threads that run work that is not time-critical (log writing, name lookups: the event loop's
default executor; the outbox's commits and the health sampling have their own) are
background threads (:func:`gateway.priority.background_executor`). SIGTERM stops the gateway
as Ctrl-C does: readings still pending go into the outbox, the uplink says offline, the
ports close, the log mode writes its last summary; the exit status is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from gateway.cli import status
from gateway.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from gateway.config.agent import ConfigAgent
from gateway.control.command_socket import SOCKET_NAME, check_path
from gateway.errors import ConfigError, GatewayError
from gateway.ota.agent import OtaAgent, trusted_keys
from gateway.priority import Granted, background_executor, raise_control_priority
from gateway.runtime import Gateway, gateway_version
from gateway.site import SiteConfig, load_site

log = logging.getLogger(__name__)

#: Threads of the event loop's default executor (log writing, getaddrinfo).
BACKGROUND_THREADS = 4


def run_command(args: argparse.Namespace, console: Console) -> int:
    """``gateway run``: its exit status."""
    if not args.verbose:  # what it got from the scheduler, and that it stops, always said
        log.setLevel(logging.INFO)
    try:
        interrupted = ConfigAgent.before_start(args.state_dir, Path(args.config))
        site = load_site(args.config)
        text = Path(args.config).read_text(encoding="utf-8")  # what the fleet is told it runs
    except ConfigError as exc:
        _error(console, str(exc))
        return EXIT_BAD_INPUT
    try:
        check_path(args.state_dir / SOCKET_NAME)
    except GatewayError as exc:
        _error(console, str(exc))
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_run(site, args, console, (text, interrupted)))
    except KeyboardInterrupt:
        return EXIT_OK
    except (GatewayError, ExceptionGroup) as exc:
        for err in _leaves(exc):
            _error(console, str(err))
        if any(not isinstance(e, GatewayError) for e in _leaves(exc)):
            raise
        return EXIT_FAILED


def _error(console: Console, message: str) -> None:
    console.print(f"✗ {message}", style="red", markup=False, highlight=False)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups raised by task groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def prepare_control_thread() -> Granted:
    """On the event loop's thread, before the gateway starts: ask for the control path's
    priority, log what it got, and make the loop's default executor background threads."""
    granted = raise_control_priority()
    log.log(logging.INFO if granted.policy == "rr" else logging.WARNING, "%s", granted)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(background_executor(BACKGROUND_THREADS, "background"))
    return granted


async def _run(
    site: SiteConfig,
    args: argparse.Namespace,
    console: Console,
    document: tuple[str, tuple[int, str] | None],
) -> int:
    """``document``: the site file's text, and the apply the last run died in (if any)."""
    prepare_control_thread()
    loop = asyncio.get_running_loop()
    terminated = _cancel_on_sigterm(loop)
    fatal: list[str] = []
    main = asyncio.current_task()
    assert main is not None

    def give_up(reason: str) -> None:  # the service manager restarts it on the site file
        fatal.append(reason)
        main.cancel()

    try:
        gw = Gateway(site, state_dir=args.state_dir)
        text, interrupted = document
        agent = ConfigAgent(
            gw, Path(args.config), text, args.state_dir, interrupted=interrupted, on_fatal=give_up
        )
        ota = OtaAgent(
            gw,
            args.state_dir,
            trusted_keys(args.state_dir),
            on_restart=give_up,
            version=gateway_version(),
            window_s=getattr(args, "ota_window", 60.0),
            system_site_packages=getattr(args, "ota_system_site_packages", False),
            defer_on_interlock="interlocks" in getattr(args, "ota_defer", "interlocks"),
            defer_on_charging="charging" in getattr(args, "ota_defer", "charging"),
            sio1_repl=dict(getattr(args, "ota_sio1_repl", [])),
        )
        async with gw, agent, ota:
            until = None if args.duration is None else time.monotonic() + args.duration
            draw = args.display == "table" or (args.display == "auto" and status.can_draw(console))
            await status.show(gw, console, draw=draw, until=until, log_every_s=args.log_every)
            if args.json:
                print(json.dumps(_snapshot(gw), indent=1), file=sys.stderr)
    except asyncio.CancelledError:
        if fatal:
            log.error("stopping: %s", fatal[0])
            return EXIT_FAILED
        if not terminated:
            raise
        log.info("stopped (SIGTERM)")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    return EXIT_OK


def _cancel_on_sigterm(loop: asyncio.AbstractEventLoop) -> list[int]:
    """On SIGTERM, cancel the running task (the gateway then closes as on Ctrl-C); the
    list returned gets the signal's number when it came."""
    task = asyncio.current_task()
    assert task is not None
    came: list[int] = []

    def stop() -> None:
        if not came:
            came.append(signal.SIGTERM)
            log.info("stopping (SIGTERM)")
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)
    return came


def _snapshot(gw: Gateway) -> dict[str, object]:
    """Every point's value and quality, and bus statistics: for scripts and tests."""
    now = time.monotonic()
    return {
        "points": {
            f"{dev}.{point}": {"value": s.value, "quality": s.quality.value}
            for dev, point, s in gw.image.points()
        },
        "buses": {name: s.stats.snapshot(now) for name, s in gw.schedulers.items()},
        "uplink": None
        if gw.uplink is None
        else {
            "connected": gw.uplink.connected,
            "outbox_depth": gw.uplink.depth,
            "dropped": gw.uplink.dropped,
        },
    }
