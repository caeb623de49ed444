"""``make demo``: the example community site in the simulator, a gateway polling it, and the
fleet manager it reports to.

The simulator runs as a process of its own (as the hardware would), at a raised priority
where the OS allows it, serving the site's RTU buses on pseudo-terminals and its TCP devices
on loopback ports; ``python -m hil_tests.rig.scenario`` drives it from another terminal (a
fire alarm, a trapped passenger, a day in the life: see ``--list``). The fleet manager is
the real ``fleet serve`` with its embedded MQTT broker and a SQLite database in a temporary
directory; the demo creates its admin user, registers the site's gateway and prints the URL
and the login. The gateway is the real ``gateway run`` with the config the simulator
resolved plus an ``[uplink]`` to that broker. Needs no hardware, root or services.

The gateway logs (``--display log``) by default, so the scenario commands the demo prints
stay on the screen above its lines; ``--display table`` shows the full-screen status table
instead, which hides them while it is drawn (they are printed again when it closes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

from hil_tests.rig.control_channel import DEMO_DIR_PREFIX, SOCKET_NAME
from hil_tests.rig.processes import terminate
from hil_tests.rig.scenario import command as scenario_command

READY_TIMEOUT_S = 20.0
HOST = "127.0.0.1"
DEMO_USER = "demo-admin"
#: The gateway's one-line summary of the site, this often (s), in the demo's log display.
LOG_EVERY_S = 15.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    parser.add_argument("--no-fleet", action="store_true", help="the gateway alone")
    parser.add_argument("--http-port", type=int, default=8080, help="fleet web UI (if free)")
    parser.add_argument("--mqtt-port", type=int, default=1883, help="embedded broker (if free)")
    parser.add_argument(
        "--display",
        choices=("log", "table"),
        default="log",
        help="the gateway's: log lines under the scenario commands (default), or the "
        "full-screen status table, which hides them while it is drawn",
    )
    args = parser.parse_args(argv)
    example = Path(str(resources.files("gateway.examples").joinpath("community.toml")))
    with tempfile.TemporaryDirectory(prefix=DEMO_DIR_PREFIX) as tmp, contextlib.ExitStack() as s:
        resolved, state_dir = Path(tmp) / "site.toml", Path(tmp) / "gateway-state"
        _start_rig(s, Path(tmp), example, resolved, state_dir)
        if not args.no_fleet:
            broker = _start_fleet(s, Path(tmp), resolved, args.http_port, args.mqtt_port)
            with resolved.open("a") as f:
                f.write(f'\n[uplink]\nbroker = "{broker}"\nbatch_interval_s = 1.0\n')
        command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(resolved)]
        command += ["--state-dir", str(state_dir), "--display", args.display]
        command += ["--log-every", str(LOG_EVERY_S)]
        if args.duration:
            command += ["--duration", str(args.duration)]
        os.environ.setdefault("COLUMNS", "160")
        _banner()
        try:
            return subprocess.call(command)
        except KeyboardInterrupt:
            return 0
        finally:
            if args.display == "table":  # the table hid it
                _banner()


def _start_rig(
    stack: contextlib.ExitStack, tmp: Path, example: Path, resolved: Path, state_dir: Path
) -> None:
    """Start the simulated site with its control channel; echo its start-up lines (its
    priority) and keep the rest of its output in ``rig.log``."""
    log_path = tmp / "rig.log"
    log = log_path.open("w")
    stack.callback(log.close)
    stack.enter_context(_process(
        [sys.executable, "-m", "hil_tests.rig.driven_site", str(example),
         "--resolved", str(resolved), "--socket", str(tmp / SOCKET_NAME),
         "--gateway-state-dir", str(state_dir)],
        stdout=log, stderr=subprocess.STDOUT,
    ))  # fmt: skip
    _wait_for(resolved.exists, f"the simulator (log: {log_path})")
    for line in log_path.read_text().splitlines():
        print(f"  {line}", flush=True)
    print(f"simulated site running; gateway config: {resolved}; log: {log_path}", flush=True)


def _banner() -> None:
    cmd = scenario_command()
    print(
        "drive the site from another terminal (--list shows every scenario):\n"
        f"  {cmd} fire      a fire alarm (fire --clear ends it)\n"
        f"  {cmd} rcd       a charger's residual-current trip (rcd --clear resets it)\n"
        f"  {cmd} trapped   a passenger trapped in an elevator\n"
        f"  {cmd} dead NAME a device stops answering\n"
        f"  {cmd} load      eight busy loops for two minutes\n"
        f"  {cmd} day       a day in the life of the community",
        flush=True,
    )


def _start_fleet(
    stack: contextlib.ExitStack, tmp: Path, site_config: Path, http_port: int, mqtt_port: int
) -> str:
    """Start ``fleet serve``, create the demo admin and register the gateway; the broker URL."""
    gateway = tomllib.loads(site_config.read_text())["gateway"]
    db = f"sqlite:///{tmp / 'fleet.db'}"
    fleet = [sys.executable, "-m", "fleet.cli"]
    password = secrets.token_urlsafe(12)
    subprocess.run(
        [*fleet, "user", "create", DEMO_USER, "--role", "admin", "--password-stdin", "--db", db],
        input=password + "\n", text=True, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run([*fleet, "site", "add", gateway["site"], "--db", db], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    subprocess.run([*fleet, "gateway", "add", gateway["site"], gateway["id"], "--db", db],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    http, mqtt = _port_or_free(http_port), _port_or_free(mqtt_port)
    log = (tmp / "fleet.log").open("w")
    stack.callback(log.close)
    stack.enter_context(_process(
        [*fleet, "serve", "--db", db, "--host", HOST, "--port", str(http),
         "--mqtt-listen", f"{HOST}:{mqtt}"],
        stdout=log, stderr=subprocess.STDOUT,
    ))  # fmt: skip
    url = f"http://{HOST}:{http}/"
    _wait_for(
        lambda: _answers(url + "api/me"),
        f"the fleet manager (log: {tmp / 'fleet.log'})",
    )
    print(f"fleet manager: {url}  login: {DEMO_USER} / {password}", flush=True)
    print(
        f"  (its embedded MQTT broker: mqtt://{HOST}:{mqtt}; log: {tmp / 'fleet.log'})", flush=True
    )
    return f"mqtt://{HOST}:{mqtt}"


@contextlib.contextmanager
def _process(argv: list[str], **popen: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, **popen)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        terminate(proc)


def _port_or_free(wanted: int) -> int:
    with socket.socket() as s:
        try:
            s.bind((HOST, wanted))
        except OSError:
            s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # 401: up, and refusing us as it should
    except OSError:
        return False


def _wait_for(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} was not ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
