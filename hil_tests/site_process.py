"""The example site as ``make demo`` runs it, for HIL tests and benchmarks that need the whole
thing in real processes: the simulated site in a process of its own at a raised priority,
driven over its control channel (:class:`SiteProcess`), and ``gateway run`` started as its
systemd unit starts it (:class:`GatewayProcess`).

    with SiteProcess(tmp / "rig") as site, GatewayProcess(site.resolved, tmp / "state") as gw:
        gw.wait_for_summary(lambda line: " 0 offline" not in line)
        site.scenario("fire")
        gw.wait_for_event(lambda e: e["kind"] == "raised")
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from hil_tests.rig import control_channel
from hil_tests.rig.processes import terminate

EXAMPLE = Path(str(resources.files("gateway.examples").joinpath("community.toml")))
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0  # the unit's TimeoutStopSec
#: What the rig says when it could not raise its priority (hil_tests.rig.cpu_load).
NOT_RAISED = "rig priority: not raised"

Event = dict[str, Any]


def _wait(ready: Callable[[], bool], within: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + within
    while not ready():
        if time.monotonic() > deadline:
            tail = "" if log is None else f"; its log ends:\n{_tail(log)}"
            raise AssertionError(f"not within {within:g} s: {what}{tail}")
        time.sleep(0.1)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class SiteProcess:
    """``python -m hil_tests.rig.driven_site`` on a site config (the example by default, or
    ``config_text``): the site's devices on ptys and loopback ports, at nice -10 where the
    OS allows it (:attr:`priority` says what it got), driven by :meth:`scenario`."""

    def __init__(self, directory: Path, config_text: str | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.config = directory / "site-in.toml"
        self.config.write_text(config_text if config_text is not None else EXAMPLE.read_text())
        self.resolved = directory / "site.toml"
        self.socket = directory / control_channel.SOCKET_NAME
        self.log = directory / "rig.log"
        self.priority = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with self.log.open("w") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "hil_tests.rig.driven_site", str(self.config),
                 "--resolved", str(self.resolved), "--socket", str(self.socket)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            _wait(self.resolved.exists, START_TIMEOUT_S, "the simulated site", self.log)
        except BaseException:
            self.close()
            raise
        self.priority = self.log.read_text().splitlines()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            terminate(self._proc, timeout=10.0)
            self._proc = None

    @property
    def raised(self) -> bool:
        return not self.priority.startswith(NOT_RAISED)

    def scenario(self, name: str, *, clear: bool = False, **args: object) -> str:
        """Apply (or clear) a scenario; what the rig answered. Refusals raise."""
        request = {"scenario": name, "clear": clear, "args": args}
        replies = list(control_channel.request(self.socket, request))
        last = replies[-1]
        if "error" in last:
            raise AssertionError(f"the rig refused {name}: {last['error']}")
        return str(last["ok"])


SUMMARY = re.compile(r"INFO (\d+) devices: (.*); alarms: (.*); loop (.*)$")
LATENESS = re.compile(r"late p99 ([\d.]+), max ([\d.]+) ms")


class GatewayProcess:
    """``gateway run --config … --state-dir …`` as ``deploy/doorstep-gateway.service`` runs
    it: stdout and stderr not a terminal (so it logs), stdin closed, a plain environment,
    stopped by SIGTERM within the unit's ``TimeoutStopSec``. ``--log-every`` is shortened so
    a test sees summaries."""

    def __init__(self, config: Path, state_dir: Path, *, log_every_s: float = 5.0) -> None:
        self.config = config
        self.state_dir = state_dir
        self.log_every_s = log_every_s
        self.stdout = state_dir.parent / f"{state_dir.name}.out"
        self.stderr = state_dir.parent / f"{state_dir.name}.err"
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config),
                 "--state-dir", str(self.state_dir), "--log-every", str(self.log_every_s)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
            )  # fmt: skip
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> int | None:
        """SIGTERM, as ``systemctl stop`` sends; its exit status (killed after the unit's
        stop timeout, as systemd would)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode
        return self.returncode

    # -- what it said -------------------------------------------------------------------------

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def summaries(self) -> list[str]:
        return [line for line in self.out().splitlines() if SUMMARY.search(line)]

    def wait_for_summary(self, ok: Callable[[str], bool], within: float, what: str) -> str:
        """The first summary line (after now) that ``ok`` accepts."""
        seen = len(self.summaries())
        found: list[str] = []

        def ready() -> bool:
            self._check_running()
            found[:] = [line for line in self.summaries()[seen:] if ok(line)]
            return bool(found)

        _wait(ready, within, what, self.stderr)
        return found[0]

    def wait_all_ok(self, within: float = START_TIMEOUT_S) -> str:
        """Wait until a summary says every device is ok and there are no alarms."""
        return self.wait_for_summary(all_ok, within, "every device ok, no alarms")

    def journal(self) -> list[Event]:
        """The alarm journal (state dir ``alarms.jsonl``), oldest first."""
        path = self.state_dir / "alarms.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for_events(
        self, ok: Callable[[list[Event]], bool], within: float, what: str, since: int = 0
    ) -> list[Event]:
        """Journal events after the first ``since`` once ``ok`` accepts them."""
        got: list[Event] = []

        def ready() -> bool:
            self._check_running()
            got[:] = self.journal()[since:]
            return ok(got)

        _wait(ready, within, what, self.stderr)
        return got

    def _check_running(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise AssertionError(
                f"gateway run ended (exit status {self._proc.returncode}):\n{_tail(self.stderr)}"
            )


def all_ok(line: str) -> bool:
    """A summary line saying every device is ok and no alarm stands."""
    match = SUMMARY.search(line)
    if match is None:
        return False
    count, devices, alarms = match.group(1), match.group(2), match.group(3)
    return devices == f"{count} ok" and alarms == "none"


def lateness_ms(summary: str) -> tuple[float, float]:
    """The control loop's lateness p99 and max (ms) a summary line reports."""
    match = LATENESS.search(summary)
    if match is None:
        raise AssertionError(f"no lateness in {summary!r}")
    return float(match.group(1)), float(match.group(2))


def shown(events: list[Event]) -> list[str]:
    """The alarms a person sees among journal events: raised, or standing on their own after
    an update (not suppressed under another alarm), each key once."""
    standing = ("raised", "updated")
    keys = (e["key"] for e in events if e["kind"] in standing and not e["suppressed_by"])
    return list(dict.fromkeys(keys))


def describe(events: list[Event]) -> str:
    """Journal events one per line, for an assertion's message."""
    return "\n".join(
        f"{e['kind']} {e['key']} {e['message']!r} suppressed by {e['suppressed_by']}"
        for e in events
    )
