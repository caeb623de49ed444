"""The configuration agent as a state machine (hypothesis): any sequence of pushes (good,
with a typo, for another gateway, changing the control period), health verdicts, failed
applies, repeats, clean restarts and kills during the health window leaves the site file
holding the last committed document in full, the agent reporting exactly what runs, and a
refused or rolled-back version never tried again.

The bus side is replaced (an in-memory apply and verdict: the real ones run on the rig in
hil_tests/test_desired_config.py); the store, the validator and the agent are the real ones.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.agent import ConfigAgent
from gateway.config.apply import Changes, InPlace
from gateway.config.store import ConfigStore
from gateway.control.alarms import AlarmLog
from gateway.errors import ApplyError
from gateway.health_gate import HEALTHY, Verdict
from gateway.runtime import Gateway
from gateway.site import SiteConfig, parse_site
from gateway.wire.config import DesiredConfig, document_hash

SITE = """[gateway]
site = "s1"
id = "{gateway}"

[poll]
telemetry = {telemetry}

[control]
period_ms = {period}

[[buses]]
name = "b1"
kind = "tcp"
host = "127.0.0.1"
port = 1502

[[devices]]
name = "charger"
profile = "EVSE-HEC"
bus = "b1"
unit_id = 1
"""


def document(version: int, kind: str = "good") -> str:
    text = SITE.format(gateway="gw-1", telemetry=1.0 + version, period=50)
    if kind == "typo":
        return text.replace("telemetry =", "telemetryy =")
    if kind == "identity":
        return text.replace('id = "gw-1"', 'id = "gw-2"')
    if kind == "period":
        return text.replace("period_ms = 50", "period_ms = 20")
    return text


class Bench(InPlace):
    """The apply without buses: the site changes, or a port 'cannot be opened'."""

    failures = 0  # how many applies fail from now on (2: the way back fails too)

    async def apply(self, new: SiteConfig) -> Changes:
        if self.failures:
            self.failures -= 1
            raise ApplyError(["buses: bus 'b1': port /dev/ttyX does not exist"])
        self.gateway.site = new
        return Changes()

    def unchanged_devices(self, new: SiteConfig) -> set[str]:
        return set()


@dataclass
class Model:
    committed: str  # what the site file must hold
    running: int | None = None
    status: str = "applied"
    about: int | None = None
    refused: dict[int, str] = field(default_factory=dict)  # version → rejected/rolled back


push = st.tuples(
    st.just("push"),
    st.sampled_from(["good", "good", "typo", "identity", "period"]),
    st.sampled_from(["healthy", "healthy", "unhealthy", "apply fails", "no way back"]),
)
ops = st.lists(
    st.one_of(push, st.just(("again",)), st.just(("restart",)), st.just(("kill",))),
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_any_sequence_leaves_one_whole_document_running_and_reported(
    steps: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), steps))


async def _run(tmp: Path, steps: list[tuple[Any, ...]]) -> None:
    site_file = tmp / "site.toml"
    state = tmp / "state"
    original = document(0)
    site_file.write_text(original)
    model = Model(committed=original)
    verdicts: list[Verdict | None] = []  # None: never ends (a kill comes first)
    last: DesiredConfig | None = None
    version = 0

    fatal: list[str] = []
    watching = asyncio.Event()  # the health window of a version that will never end began

    async def watch(new: SiteConfig, changes: Changes, unchanged: set[str]) -> Verdict:
        verdict = verdicts.pop(0)
        if verdict is None:
            watching.set()
            await asyncio.Event().wait()
        assert verdict is not None
        return verdict

    def start(interrupted: tuple[int, str] | None) -> tuple[ConfigAgent, Bench]:
        text = site_file.read_text()
        gw = cast(
            Gateway,
            SimpleNamespace(
                site=parse_site(text, "site.toml"),
                uplink=None,
                before_uplink=[],
                alarms=AlarmLog(None),
            ),
        )
        bench = Bench(gw)
        agent = ConfigAgent(
            gw,
            site_file,
            text,
            state,
            interrupted=interrupted,
            in_place=bench,
            watch=watch,
            on_fatal=fatal.append,
        )
        return agent, bench

    agent, bench = start(ConfigAgent.before_start(state, site_file))
    await agent.__aenter__()
    try:
        for step in steps:
            if step[0] == "push":
                version += 1
                kind, outcome = step[1], step[2]
                text = document(version, kind)
                last = DesiredConfig(
                    version=version, sha256=document_hash(text), document=text, at=time.time()
                )
                if kind == "good":
                    bench.failures = {"apply fails": 1, "no way back": 2}.get(outcome, 0)
                    if outcome in ("healthy", "unhealthy"):
                        verdicts.append(
                            HEALTHY if outcome == "healthy" else Verdict(False, "bus 'b1' silent")
                        )
                agent.offer(last)
                await asyncio.wait_for(agent.idle.wait(), 5)
                _expect_push(model, version, kind, outcome, text)
                if kind == "good" and outcome == "no way back":  # gateway run exits: restart
                    assert fatal == [agent.report.reason]
                    assert "going back in place failed too" in agent.report.reason
                    fatal.clear()
                    await agent.__aexit__(None, None, None)
                    agent, bench = start(ConfigAgent.before_start(state, site_file))
                    await agent.__aenter__()
            elif step[0] == "again" and last is not None:
                agent.offer(last)
                await asyncio.wait_for(agent.idle.wait(), 5)
                if model.running == last.version:
                    model.status, model.about = "applied", last.version
            elif step[0] == "restart":
                await agent.__aexit__(None, None, None)
                agent, bench = start(ConfigAgent.before_start(state, site_file))
                await agent.__aenter__()
                if model.running is None and model.about is None:
                    model.status = "applied"
            elif step[0] == "kill":
                version += 1
                text = document(version)
                verdicts.append(None)
                agent.offer(
                    DesiredConfig(
                        version=version, sha256=document_hash(text), document=text, at=time.time()
                    )
                )
                await asyncio.wait_for(watching.wait(), 5)
                assert agent.report.status == "pending"
                watching.clear()
                assert agent._task is not None
                agent._task.cancel()  # the process dies here: nothing after this runs
                verdicts.clear()
                assert site_file.read_text() == model.committed
                agent, bench = start(ConfigAgent.before_start(state, site_file))
                await agent.__aenter__()
                model.status, model.about = "rolled back", version
                model.refused[version] = "rolled back"
                assert "restarted during the apply of version" in agent.report.reason
            _check(model, agent, site_file, state)
    finally:
        await agent.__aexit__(None, None, None)


def _expect_push(model: Model, version: int, kind: str, outcome: str, text: str) -> None:
    if kind != "good":
        model.status, model.about = "rejected", version
        model.refused[version] = "rejected"
    elif outcome != "healthy":
        model.status, model.about = "rolled back", version
        model.refused[version] = "rolled back"
    else:
        model.committed, model.running = text, version
        model.status, model.about = "applied", version


def _check(model: Model, agent: ConfigAgent, site_file: Path, state: Path) -> None:
    text = site_file.read_text()
    assert text == model.committed  # one whole document, the last committed one
    running = ConfigStore(state, site_file).running(text)
    assert running.version == model.running
    report = agent.report
    assert report.version == model.running  # it says what runs, never what it was told
    assert report.sha256 == document_hash(text)
    assert (report.status, report.about) == (model.status, model.about)
    if report.status == "rejected":
        assert report.messages
        assert all(m.split(":")[0] for m in report.messages)
    if report.status == "rolled back":
        assert report.reason
