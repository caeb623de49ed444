"""Stopping the rig's and benchmarks' child processes the way a service manager would."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``; its exit code, or None
    when it had to be killed."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
