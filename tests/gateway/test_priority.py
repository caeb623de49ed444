"""The control path's scheduling priority, asked of the real kernel in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from gateway import priority

CHILD = """
import os, subprocess, sys, threading
from gateway import priority
granted = priority.raise_control_priority()
seen = {}
def worker():
    me = threading.get_native_id()
    seen["plain"] = (os.sched_getscheduler(me), os.getpriority(os.PRIO_PROCESS, me))
    priority.demote_current_thread()
    seen["worker"] = (os.sched_getscheduler(me), os.getpriority(os.PRIO_PROCESS, me))
t = threading.Thread(target=worker); t.start(); t.join()
child = subprocess.run(
    [sys.executable, "-c", "import os; print(os.sched_getscheduler(0), os.getpriority(0, 0))"],
    capture_output=True, text=True, check=True,
).stdout.split()
me = threading.get_native_id()
policy = os.sched_getscheduler(me) & ~os.SCHED_RESET_ON_FORK
print(granted.policy, policy, *seen["worker"], *seen["plain"], *child)
"""


def _run_child(*prefix: str) -> list[str]:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.split()


#: Root without CAP_SYS_NICE: as a service user without the unit's grant.
WITHOUT_SYS_NICE = ("setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SYS_NICE) to grant real-time")
def test_as_root_the_control_path_runs_round_robin_and_background_threads_do_not() -> None:
    policy, main_policy, worker_policy, worker_nice, *started = _run_child()
    assert policy == "rr"
    assert int(main_policy) == os.SCHED_RR
    assert int(worker_policy) == os.SCHED_OTHER
    assert int(worker_nice) == priority.BACKGROUND_NICE
    # a thread or process started from the control path does not inherit its priority
    assert [int(v) for v in started] == [os.SCHED_OTHER, 0, os.SCHED_OTHER, 0]


def test_without_privilege_it_runs_at_normal_priority_and_says_so() -> None:
    prefix = WITHOUT_SYS_NICE if os.geteuid() == 0 else ()
    policy, main_policy, *_ = _run_child(*prefix)
    assert policy == "normal"
    assert int(main_policy) == os.SCHED_OTHER


def test_the_log_line_names_the_policy() -> None:
    granted = priority.Granted("normal", "normal priority: refused")
    assert str(granted) == "control path scheduling: normal priority: refused"
    assert threading.get_native_id() > 0


BACKGROUND = """
import os
from gateway import priority
print(priority.raise_control_priority().policy)
def where():
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
with priority.background_executor(1, "bg") as pool:
    print(*pool.submit(where).result())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SYS_NICE) to grant real-time")
def test_background_threads_run_below_the_control_path_and_above_ordinary_processes() -> None:
    # they share the interpreter lock with the control loop: starved by the load at a low
    # priority they would hold it up (priority inversion), so they stay real-time, lower
    out = subprocess.run(
        [sys.executable, "-c", BACKGROUND], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    assert out == ["rr", str(os.SCHED_RR), str(priority.BACKGROUND_RT_PRIORITY)]
    assert priority.BACKGROUND_RT_PRIORITY < priority.RT_PRIORITY
