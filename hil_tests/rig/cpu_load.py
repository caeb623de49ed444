"""Heavy CPU load on the rig's machine, and the rig's own raised priority against it.

The rig stands for hardware: a busy Pi slows the gateway, never the elevators and chargers.
So the rig raises its own scheduling priority when the OS lets it (:func:`raise_priority`),
and the load it is asked to make (:class:`CpuHogs`) runs at normal priority, as an OTA
install, a log rotation or a backup would on the gateway's Pi.
"""

from __future__ import annotations

import os
import subprocess
import sys

from hil_tests.rig.processes import terminate

#: the rig's nice value: under the kernel's fair scheduler nice -10 weighs about nine normal
#: processes, so eight busy loops do not slow the simulated hardware down
RIG_NICE = -10

#: one busy loop at nice 0 for a while; nice is inherited, so it lowers its own priority
#: back to normal first (always allowed; it keeps a higher nice it inherited)
_HOG = """
import os, sys, time
if os.getpriority(os.PRIO_PROCESS, 0) < 0:
    os.setpriority(os.PRIO_PROCESS, 0, 0)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


def raise_priority(nice: int = RIG_NICE) -> str:
    """Raise this process's priority (call it before any thread starts: on Linux a thread
    inherits its creator's nice value); a line for the log saying what happened."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        return (
            f"rig priority: not raised (nice {nice} needs root or CAP_SYS_NICE; an RLIMIT_NICE "
            f"of {20 - nice} also allows it): the rig stays at nice {now}, so load on this "
            "machine slows the simulated hardware as well as the gateway"
        )
    return f"rig priority: raised to nice {nice}, above normal processes and CPU load"


class CpuHogs:
    """Busy-loop processes at normal priority, each ending by itself after its time."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, seconds: float) -> list[int]:
        """Stop any still running, then start ``count`` new ones; their pids."""
        self.stop()
        self._procs = [
            subprocess.Popen([sys.executable, "-c", _HOG, str(seconds)]) for _ in range(count)
        ]
        return [p.pid for p in self._procs]

    def running(self) -> list[int]:
        return [p.pid for p in self._procs if p.poll() is None]

    def stop(self) -> int:
        """End them all; how many were still running."""
        still = len(self.running())
        for proc in self._procs:
            terminate(proc, timeout=2.0)
        self._procs = []
        return still
