"""The rollout engine decides on evidence: phases advance on committed gateways, a release that
breaks on start stops at the canaries, and no gateway with active interlocks, offline or
outside its window is ever commanded."""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fleet.rollouts.engine import (
    Command,
    Engine,
    Phase,
    Plan,
    Progress,
    Rollout,
    Site,
    Status,
    commanded,
    from_json,
    summary,
    to_json,
)

RELEASE = "1.4.0"
NAMES = [f"gw-{i:02d}" for i in range(50)]
PLAN = Plan(
    RELEASE,
    (
        Phase("canary", count=5),
        Phase("half", percent=50, max_failure_share=0.1),
        Phase("rest", max_failure_share=0.1),
    ),
)


def fleet(names: list[str] = NAMES, **site: object) -> dict[str, Site]:
    return {name: Site(running="1.3.0", **site) for name in names}  # type: ignore[arg-type]


def commit_all(engine: Engine, commands: list[Command]) -> None:
    for command in commands:
        engine.report(command.gateway, "committed", RELEASE)


def test_a_good_release_reaches_every_gateway_in_a_canary_and_two_batches() -> None:
    engine, targets = Engine(Rollout(PLAN)), fleet()
    batches = []
    now = 0.0
    while engine.rollout.status is Status.RUNNING:
        commands = engine.tick(now, targets)
        if commands:
            batches.append(len(commands))
        commit_all(engine, commands)
        now += 10
    assert engine.rollout.status is Status.COMPLETED
    assert batches == [5, 25, 20]
    assert summary(engine.rollout)["done"] == 50


def test_a_release_that_breaks_on_start_stops_at_the_canaries_and_says_why() -> None:
    engine, targets = Engine(Rollout(PLAN)), fleet()
    first = engine.tick(0, targets)
    assert len(first) == 5
    for command in first[:1]:
        engine.report(command.gateway, "rolled-back", "1.3.0", "gateway exited at start")
    later = [c for t in range(1, 100) for c in engine.tick(t, targets)]
    assert later == []
    assert engine.rollout.status is Status.PAUSED
    assert "phase canary: 1 of 5 failed" in engine.rollout.reason
    assert first[0].gateway in engine.rollout.reason


def test_resume_accepts_the_failures_so_far_and_goes_on() -> None:
    engine, targets = Engine(Rollout(PLAN)), fleet()
    first = engine.tick(0, targets)
    engine.report(first[0].gateway, "failed", "1.3.0", "no disk space")
    commit_all(engine, first[1:])
    assert engine.tick(1, targets) == []
    engine.resume()
    plan = Plan(RELEASE, (Phase("canary", count=5, success=0.8), *PLAN.phases[1:]))
    engine.rollout.plan = plan
    assert len(engine.tick(2, targets)) == 25


def test_a_gateway_with_active_interlocks_is_held_until_they_clear() -> None:
    targets = fleet()
    targets["gw-00"] = Site(running="1.3.0", interlocks_active=True)
    engine = Engine(Rollout(PLAN))
    first = engine.tick(0, targets)
    assert "gw-00" not in commanded(first)
    assert engine.rollout.members["gw-00"].waiting == "interlocks active"
    commit_all(engine, first)
    assert engine.tick(1, targets) == []  # the canary phase waits for it
    targets["gw-00"] = Site(running="1.3.0")
    assert commanded(engine.tick(2, targets)) == {"gw-00"}


def test_offline_and_out_of_window_gateways_wait_and_say_why() -> None:
    targets = fleet(NAMES[:2])
    targets["gw-00"] = Site(running="1.3.0", online=False)
    targets["gw-01"] = Site(running="1.3.0", in_window=False)
    engine = Engine(Rollout(Plan(RELEASE, (Phase("all"),))))
    assert engine.tick(0, targets) == []
    waiting = {m.gateway: m.waiting for m in engine.rollout.members.values()}
    assert waiting == {"gw-00": "offline", "gw-01": "outside its maintenance window"}


def test_a_gateway_that_does_not_finish_in_time_counts_as_failed() -> None:
    plan = Plan(RELEASE, (Phase("canary", count=2, timeout_s=600), Phase("rest")))
    engine, targets = Engine(Rollout(plan)), fleet(NAMES[:10])
    first = engine.tick(0, targets)
    engine.report(first[0].gateway, "committed", RELEASE)
    engine.report(first[1].gateway, "installing", RELEASE)  # counts for nothing
    assert engine.tick(500, targets) == []
    assert engine.rollout.status.value == "running"
    engine.tick(601, targets)
    assert engine.rollout.status is Status.PAUSED
    assert engine.rollout.members[first[1].gateway].reason == "timed out after 600 s"


def test_gateways_already_on_the_release_are_skipped_and_late_joiners_get_the_next_phase() -> None:
    targets = fleet(NAMES[:10])
    targets["gw-00"] = Site(running=RELEASE)
    engine = Engine(Rollout(Plan(RELEASE, (Phase("canary", count=2), Phase("rest")))))
    first = engine.tick(0, targets)
    assert "gw-00" not in commanded(first)
    assert engine.rollout.members["gw-00"].progress is Progress.SKIPPED
    targets["gw-99"] = Site(running="1.3.0")
    commit_all(engine, first)
    second = engine.tick(1, targets)
    assert "gw-99" in commanded(second)
    assert len(second) == 8  # 9 left of the first ten, less gw-00, plus gw-99


def test_the_rate_limit_spreads_commands_over_minutes() -> None:
    engine = Engine(Rollout(Plan(RELEASE, (Phase("all"),), per_minute=10)))
    targets = fleet(NAMES[:25])
    sent = [len(engine.tick(t, targets)) for t in (0, 30, 61, 122)]
    assert sent == [10, 0, 10, 5]
    assert engine.rollout.members["gw-24"].progress is Progress.COMMANDED


def test_abort_with_revert_asks_only_the_gateways_that_took_the_release() -> None:
    engine, targets = Engine(Rollout(PLAN)), fleet()
    first = engine.tick(0, targets)
    commit_all(engine, first[:3])
    reverts = engine.abort(revert=True)
    assert {c.gateway for c in reverts} == {c.gateway for c in first}
    assert {c.action for c in reverts} == {"revert"}
    assert engine.tick(1, targets) == []


def test_a_rollout_survives_a_round_trip_through_json() -> None:
    engine, targets = Engine(Rollout(PLAN)), fleet()
    commit_all(engine, engine.tick(0, targets))
    engine.tick(1, targets)
    stored = json.loads(json.dumps(to_json(engine.rollout)))
    assert from_json(stored) == engine.rollout


class RolloutMachine(RuleBasedStateMachine):
    """Any sequence of gateway reports, site changes, operator actions and fleet restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.names = NAMES[:12]
        self.targets = fleet(self.names)
        plan = Plan(
            RELEASE,
            (
                Phase("canary", count=3, max_failures=0),
                Phase("batch", percent=40, max_failures=1),
                Phase("rest", max_failure_share=0.2),
            ),
            per_minute=2,
        )
        self.engine = Engine(Rollout(plan))
        self.now = 0.0
        self.broken = False  # the release fails on every gateway
        self.ever_commanded: set[str] = set()
        self.commanded_before_operator: set[str] = set()
        self.operator_acted = False

    @rule(dt=st.floats(0, 400))
    def tick(self, dt: float) -> None:
        self.now += dt
        phase = self.engine.rollout.phase
        commands = self.engine.tick(self.now, self.targets)
        for command in commands:
            member = self.engine.rollout.members[command.gateway]
            assert member.phase == self.engine.rollout.phase, "commanded outside its phase"
            site = self.targets[command.gateway]
            assert site.online, command
            assert not site.interlocks_active, command
            assert site.in_window, command
            assert self.engine.rollout.status is Status.RUNNING
            self.ever_commanded.add(command.gateway)
            if not self.operator_acted:
                self.commanded_before_operator.add(command.gateway)
        assert self.engine.rollout.phase >= phase
        rollout = self.engine.rollout
        if rollout.status is Status.RUNNING:  # after a tick: never over the allowance
            members = [m for m in rollout.members.values() if m.phase == rollout.phase]
            failed = sum(m.progress is Progress.FAILED for m in members)
            allowed = rollout.plan.phases[rollout.phase].allowance(len(members))
            assert failed <= allowed + rollout.accepted_failures

    @rule(
        data=st.data(), state=st.sampled_from(["committed", "rolled-back", "failed", "installing"])
    )
    def report(self, data: st.DataObject, state: str) -> None:
        busy = sorted(
            m.gateway
            for m in self.engine.rollout.members.values()
            if m.progress is Progress.COMMANDED
        )
        name = data.draw(st.sampled_from(busy or self.names))
        if self.broken and state == "committed":
            state = "rolled-back"
        self.engine.report(name, state, RELEASE if state == "committed" else "1.3.0")

    @rule(
        data=st.data(),
        online=st.booleans(),
        interlocks=st.booleans(),
        window=st.booleans(),
    )
    def site_changes(
        self, data: st.DataObject, online: bool, interlocks: bool, window: bool
    ) -> None:
        name = data.draw(st.sampled_from(self.names))
        self.targets[name] = Site(
            online=online, interlocks_active=interlocks, in_window=window, running="1.3.0"
        )

    @precondition(lambda self: not self.ever_commanded)
    @rule()
    def release_breaks_on_start(self) -> None:
        self.broken = True

    @rule()
    def restart(self) -> None:
        stored = json.loads(json.dumps(to_json(self.engine.rollout)))
        self.engine = Engine(from_json(stored))

    @rule()
    def pause_and_resume(self) -> None:
        self.operator_acted = True
        self.engine.pause("operator")
        self.engine.resume()

    @invariant()
    def a_release_that_breaks_on_start_never_passes_the_canaries(self) -> None:
        if self.broken:
            assert len(self.commanded_before_operator) <= 3


TestRolloutMachine = RolloutMachine.TestCase
TestRolloutMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
