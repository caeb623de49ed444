"""The gateway's place in the operating system's scheduler.

A Pi in a plant room also runs an OTA install, a log rotation, a backup. The control loop and
the buses must not starve behind them: a late control cycle lets inputs go stale, and stale
inputs trip interlocks. So ``gateway run`` asks for a real-time round-robin priority for its
event loop's thread (the control loop and every bus scheduler run there) when the system
allows it, a raised nice value when only that is allowed, and says in one log line which it
got. The priority is not inherited (``SCHED_RESET_ON_FORK``): every thread and process
started from the control path begins at normal priority.

Work that is not time-critical runs off the control loop's thread, in two kinds of places:

* **Threads of the gateway's process** (the outbox's SQLite commits, health sampling, log
  writing: :func:`background_executor`) share the interpreter lock with the control loop. A
  thread that holds the lock and is then starved by the CPU load holds the control loop up
  with it (priority inversion: measured at 0.6 s p99 lateness with such threads at nice 10
  and eight busy loops on two cores). So they run one step *below* the control path and
  *above* ordinary processes (:func:`background_thread_priority`: real-time priority
  :data:`BACKGROUND_RT_PRIORITY`, or nice :data:`BACKGROUND_RAISED_NICE`): the control loop
  preempts them, the load does not, and the lock comes back within its switch interval. What
  they do is short (a commit waits on the disk without CPU; a log line, a psutil sample).
* **Processes of their own** (drawing the status table, ~10 ms of CPU a frame) share
  nothing with it and drop to nice :data:`BACKGROUND_NICE` (:func:`demote_current_thread`).

Under systemd the unit grants the priority (``CPUSchedulingPolicy=rr``; see
``deploy/doorstep-gateway.service``); as a plain user without ``CAP_SYS_NICE`` the gateway
runs at normal priority and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: SCHED_RR priority of the control path: above ordinary real-time helpers (1-10), well below
#: the kernel's own threads (50 and up), so it cannot starve interrupt handling.
RT_PRIORITY = 20
#: The nice value asked for when real-time scheduling is refused.
RAISED_NICE = -10
#: Background threads of the gateway's process, below the control path and above the rest.
BACKGROUND_RT_PRIORITY = 10
BACKGROUND_RAISED_NICE = -5
#: The nice value of background processes (the status screen).
BACKGROUND_NICE = 10

_granted: Granted | None = None  # what raise_control_priority got, for background threads


@dataclass(frozen=True)
class Granted:
    """What the scheduler gave the control path, in words for the log."""

    policy: str  # "rr", "nice", "normal"
    detail: str

    def __str__(self) -> str:
        return f"control path scheduling: {self.detail}"


def raise_control_priority() -> Granted:
    """Give the calling thread (the event loop's) the priority the control path needs."""
    global _granted
    _granted = _raise()
    return _granted


def _raise() -> Granted:
    me = threading.get_native_id()  # Linux schedules threads: this one, not the process
    try:
        os.sched_setscheduler(me, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(RT_PRIORITY))
        return Granted("rr", f"real-time round-robin, priority {RT_PRIORITY}")
    except (PermissionError, OSError) as exc:
        rt_refused = exc.strerror or str(exc)
    try:
        with contextlib.suppress(OSError):  # threads started from here begin at nice 0
            os.sched_setscheduler(me, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, me, RAISED_NICE)
        return Granted("nice", f"nice {RAISED_NICE} (real-time refused: {rt_refused})")
    except (PermissionError, OSError) as exc:
        return Granted(
            "normal",
            f"normal priority: real-time and raised nice refused ({exc.strerror or exc}); "
            "a busy machine can delay the control loop — run it as the systemd unit",
        )


def background_thread_priority() -> None:
    """Give the calling thread of the gateway's process its place: below the control path,
    above ordinary processes (see the module doc); nothing when the control path runs at
    normal priority."""
    me = threading.get_native_id()
    policy = None if _granted is None else _granted.policy
    try:
        if policy == "rr":
            os.sched_setscheduler(me, os.SCHED_RR, os.sched_param(BACKGROUND_RT_PRIORITY))
        elif policy == "nice":
            os.setpriority(os.PRIO_PROCESS, me, BACKGROUND_RAISED_NICE)
    except OSError as exc:
        log.debug("a background thread stays at normal priority: %s", exc)


def demote_current_thread() -> None:
    """Put the calling thread back to normal scheduling at a low priority: for a process of
    its own (the status screen) doing work that must never delay the control loop. Not for
    threads of the gateway's process (:func:`background_thread_priority`). Harmless where
    nothing was raised."""
    me = threading.get_native_id()
    try:
        if os.sched_getscheduler(me) != os.SCHED_OTHER:
            os.sched_setscheduler(me, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, me, BACKGROUND_NICE)
    except OSError as exc:  # a container may forbid even lowering: keep going
        log.debug("could not demote a background thread: %s", exc)


def background_executor(workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool of the gateway's process for work that is not time-critical, its threads
    at :func:`background_thread_priority`."""
    return ThreadPoolExecutor(
        workers, thread_name_prefix=name, initializer=background_thread_priority
    )
