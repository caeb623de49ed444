"""A test seam: the OTA agent stops at a named step, so a test can ``kill -9`` it right there.

Off unless the environment variable ``DOORSTEP_OTA_TEST_PAUSE`` names a file; nothing in a
gateway's normal configuration sets it. The file lists steps, one a line, in the order the
test wants them. When the agent reaches the step on the first line, it takes that line off
(so the start after the kill goes past it), writes the step's name to ``FILE.reached`` and
waits there until it is killed. The steps: ``downloading``, ``verifying``, ``installing``,
``flashing``, ``switching`` (the state file says the new slot, the link does not yet),
``restarting`` (both say it; the gateway is about to exit), ``checking``, ``committing``
(healthy, not yet recorded). ``hil_tests/test_ota_sio1.py`` uses it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from gateway.state_files import write_atomic

ENV = "DOORSTEP_OTA_TEST_PAUSE"
STEPS = (
    "downloading",
    "verifying",
    "installing",
    "flashing",
    "switching",
    "restarting",
    "checking",
    "committing",
)

log = logging.getLogger(__name__)


async def checkpoint(step: str) -> None:
    """Wait here for ever when the test seam asks for ``step`` next; else return at once."""
    assert step in STEPS, step
    name = os.environ.get(ENV)
    if not name:
        return
    path = Path(name)
    try:
        lines = path.read_text().split()  # noqa: ASYNC240 - a test seam, a few bytes
    except OSError:
        return
    if not lines or lines[0] != step:
        return
    write_atomic(path, "".join(f"{line}\n" for line in lines[1:]).encode())
    write_atomic(path.with_name(path.name + ".reached"), step.encode())
    log.warning("ota: paused at %s for a test (%s)", step, ENV)
    await asyncio.Event().wait()  # for ever: the test kills the gateway here
