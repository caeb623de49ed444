"""``python -m hil_tests.rig.scenario NAME [--clear] [ARGS]``: make something happen on the
simulated site of a running ``make demo`` — a fire alarm, a charger's residual-current trip,
a trapped passenger, a dead device, an export over the limit, CPU load, a day in the life —
and watch the gateway and the fleet respond. ``--list`` lists them.

It talks to the demo over its control channel (:mod:`hil_tests.rig.control_channel`); the
catalogue is :mod:`hil_tests.rig.scenarios`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from hil_tests.rig import control_channel
from hil_tests.rig.scenarios import SCENARIOS, Param, Scenario

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_DEMO = 0, 1, 2, 3


def command() -> str:
    """How to type this command here: the running Python (relative when it is under the
    current directory, as ``.venv/bin/python`` is for ``make demo``) and the module."""
    python = os.path.relpath(sys.executable)
    if python.startswith(".."):
        python = sys.executable
    return f"{python} -m hil_tests.rig.scenario"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command(), description=__doc__.split("\n\n")[0].replace("``", "`")
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument(
        "--socket",
        type=Path,
        help=f"the demo's control socket (default: ${control_channel.SOCKET_ENV}, else the "
        "newest running demo's)",
    )
    sub = parser.add_subparsers(dest="scenario", metavar="SCENARIO")
    for scenario in SCENARIOS.values():
        p = sub.add_parser(scenario.name, help=scenario.help, description=scenario.help)
        p.add_argument("--clear", action="store_true", help=f"undo it ({scenario.undo})")
        for param in scenario.params:
            _add(p, param)
    return parser


def _add(parser: argparse.ArgumentParser, param: Param) -> None:
    if param.flag:
        parser.add_argument(param.name, action="store_true", help=param.help)
    elif param.name.startswith("--"):
        parser.add_argument(param.name, type=param.type, default=param.default, help=param.help)
    else:
        parser.add_argument(param.name, nargs="?", type=param.type, help=param.help)


def listing() -> str:
    width = max(len(name) for name in SCENARIOS)
    lines = ["scenarios for the site of a running `make demo`:"]
    lines += [f"  {s.name:<{width}}  {s.help}" for s in SCENARIOS.values()]
    lines.append(f"`{command()} NAME --help` shows its arguments; NAME --clear undoes it")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list or args.scenario is None:
        print(listing())
        return EXIT_OK if args.list else EXIT_USAGE
    scenario = SCENARIOS[args.scenario]
    values = {p.key: getattr(args, p.key) for p in scenario.params}
    request = {"scenario": scenario.name, "clear": args.clear, "args": values}
    try:
        path = control_channel.locate(args.socket)
        return _show(control_channel.request(path, request), scenario, args.clear, values)
    except control_channel.NoDemoRunning as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return EXIT_NO_DEMO
    except control_channel.ChannelError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:  # Ctrl-C ends a day in the life: hanging up stops it
        print("stopped: the day in the life ends, its faults clear", flush=True)
        return EXIT_OK


def _show(
    replies: Iterator[control_channel.Reply],
    scenario: Scenario,
    clear: bool,
    values: dict[str, object],
) -> int:
    for reply in replies:
        if "event" in reply:
            print(reply["event"], flush=True)
        elif "error" in reply:
            print(f"✗ {reply['error']}", file=sys.stderr)
            return EXIT_REFUSED
        elif "ok" in reply:
            print(reply["ok"] + ("" if clear else _undo_hint(scenario, values)), flush=True)
            return EXIT_OK
    print("✗ the demo closed the connection without an answer", file=sys.stderr)
    return EXIT_REFUSED


def _undo_hint(scenario: Scenario, values: dict[str, object]) -> str:
    if scenario.name == "day":
        return ""
    device = values.get("device")
    target = f" {device}" if device else ""
    return f"\n  run `{command()} {scenario.name}{target} --clear` {scenario.undo}"


if __name__ == "__main__":
    sys.exit(main())
