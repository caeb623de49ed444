"""Test-side pieces for the uplink's HIL tests: a recording subscriber and the runner process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.mqtt import Client
from gateway.wire import compact
from hil_tests.rig.processes import terminate

PREFIX = "doorstep/v1/"


@dataclass
class Received:
    topic: str
    kind: str
    body: dict[str, Any]
    retain: bool


@dataclass
class Recorder:
    """Everything a subscriber to ``doorstep/v1/#`` saw, in arrival order."""

    messages: list[Received] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m.body for m in self.messages if m.kind == kind]

    def seqs(self, kind: str) -> list[int]:
        return [int(b["seq"]) for b in self.of(kind)]

    async def wait_for(
        self, condition: Callable[[], bool], within: float, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def recording(port: int, **options: Any) -> AsyncIterator[Recorder]:
    """A subscriber on 127.0.0.1:port recording every Doorstep message until the block ends."""
    recorder = Recorder()
    subscribed = asyncio.Event()

    async def listen() -> None:
        async with Client("127.0.0.1", port, identifier=f"rec-{os.getpid()}", **options) as c:
            await c.subscribe(PREFIX + "#", qos=1)
            subscribed.set()
            async for m in c.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b"{}"
                kind = str(m.topic).split("/", 4)[4]
                body = compact.readable(payload) if compact.is_compact(payload) else None
                recorder.messages.append(
                    Received(str(m.topic), kind, body or json.loads(payload), m.retain)
                )

    async with asyncio.TaskGroup() as group:
        task = group.create_task(listen())
        await asyncio.wait_for(subscribed.wait(), 10)
        try:
            yield recorder
        finally:
            task.cancel()


class RunnerProcess:
    """``python -m hil_tests.uplink_runner`` as a child process: start, kill -9, stop."""

    def __init__(self, broker: str, state: Path, log: Path, *extra: str) -> None:
        self.args = [sys.executable, "-m", "hil_tests.uplink_runner", "--broker", broker]
        self.args += ["--state", str(state), *extra]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """kill -9: no flush, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM: a clean stop (pending readings into the outbox, State offline)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        code = terminate(proc, timeout)
        if code is None:
            raise AssertionError(f"the runner did not stop within {timeout} s")
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
