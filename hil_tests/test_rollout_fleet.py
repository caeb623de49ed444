"""Staged rollouts over many real gateways: one real fleet process (``fleet serve`` on
PostgreSQL, ingest on a real mosquitto), ``GATEWAYS`` real gateway processes each started by
the launcher under its own supervisor (its own state directory, OTA agent and A/B slots),
each polling its own SunSpec meter in one shared simulated-site process
(:mod:`hil_tests.fleet_of_gateways`). The gateways start a few at a time, once for the
module; the scenarios run in order on them:

1. a good release (0.2.0) reaches every gateway in a canary and two batches, and the fleet
   shows each on 0.2.0 as the gateway itself reports it; on the way, a gateway whose
   interlock is active is held (never sent a command) until the interlock clears, and the
   fleet process is stopped and started again while the first batch installs: the rollout
   resumes where it was, no gateway commanded twice;
2. a release that crashes at start (0.3.0) rolls back on its two canaries by the launcher's
   boot counter, the rollout pauses itself saying why, no gateway outside the canaries
   receives a command (the broker delivered none), and the fleet shows 0.2.0 running on
   the canaries, as they report;
3. an aborted rollout (0.4.0) stops: its two hand-picked canaries finish the update they
   had begun, and no other gateway receives a command.

How many gateways: ``DOORSTEP_HIL_ROLLOUT_GATEWAYS`` (default 50). Memory is no limit: the
processes of this test take 3.3 GiB with 50 gateways (about 62 MiB a gateway) of the 24 GiB
here. The two cores are: every update builds a virtual environment and pip-installs the
gateway's wheel at idle priority (about 5 s of CPU), and each start of a gateway costs a
second or two. Measured on the two-core development machine, shared with other work (load
average 3 to 16 during the run): 50 gateways started in 25-41 s, the whole module took
5.5 min, 4.4 min of it the good release's 50 updates. That is over the 4 minutes the suite
allows a HIL module; on a machine doing nothing else it is expected near it, and
``DOORSTEP_HIL_ROLLOUT_GATEWAYS=30`` should keep it within (not measured).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import psutil
import pytest

from gateway.trust import SigningKey
from hil_tests.fleet_of_gateways import SITE, GatewayFleet, label, memory_mib
from hil_tests.ota_release import release

pytestmark = pytest.mark.hil

GATEWAYS = int(os.environ.get("DOORSTEP_HIL_ROLLOUT_GATEWAYS", "50"))
HELD = 3  # gw-03, in the first batch: its meter-watch interlock goes active
CRASH = 'raise SystemExit("release 0.3.0 cannot start")\n'
#: per gateway of a phase: download, pip install at idle priority, restart, health window
PER_GATEWAY_S = 15.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFleet]:
    tmp = tmp_path_factory.mktemp("rollout-fleet")
    key = SigningKey.generate()
    bundles = [
        release(tmp / "r", "0.2.0", key),
        release(tmp / "r", "0.3.0", key, {"gateway/cli/run.py": CRASH}),
        release(tmp / "r", "0.4.0", key),
    ]
    with GatewayFleet(tmp / "fleet", GATEWAYS, key, watched=[HELD]) as fleet:
        for bundle in bundles:
            fleet.upload(bundle)
        used = psutil.virtual_memory()
        print(
            f"\n{GATEWAYS} gateways started in {fleet.started_in_s:.0f} s; processes of this "
            f"test {memory_mib([os.getpid()]):.0f} MiB; machine {used.used / 2**20:.0f} MiB "
            f"used of {used.total / 2**20:.0f}; load {os.getloadavg()}"
        )
        yield fleet


def within(gateways: int) -> float:
    """A bound for a phase of ``gateways`` on this machine (installs share two cores)."""
    return 60.0 + PER_GATEWAY_S * gateways


def phase_of(fleet: GatewayFleet, name: str, phase: str) -> dict[str, str]:
    """Each member of a phase of a rollout: its progress, and why it waits."""
    view = fleet.rollout(name)
    [shown] = [p for p in view.phases if p.name == phase]
    return {m.gateway: f"{m.progress} {m.waiting}".strip() for m in shown.gateways}


def downloaded(fleet: GatewayFleet, name: str, phase: str) -> bool:
    """Every commanded member of the phase has its bundle (its update is further on)."""
    [shown] = [p for p in fleet.rollout(name).phases if p.name == phase]
    states = [m.ota_state for m in shown.gateways if m.progress == "commanded"]
    return all(s not in (None, "", "idle", "downloading") for s in states)


def explain(fleet: GatewayFleet, name: str) -> str:
    view = fleet.rollout(name)
    lines = [f"rollout {name}: {view.status} {view.reason!r} phase {view.phase} {view.counts}"]
    for p in view.phases:
        members = (
            f"{m.gateway} {m.progress} {m.ota_state} {m.waiting}{m.reason}" for m in p.gateways
        )
        lines.append(f"  {p.name}: " + ", ".join(members))
    return "\n".join(lines)


def interlocks_active(fleet: GatewayFleet, index: int) -> int:
    return fleet.interlocks_active(label(index))


def test_a_good_release_reaches_all_held_by_an_interlock_and_across_a_fleet_restart(
    fleet: GatewayFleet,
) -> None:
    everyone = {label(i) for i in range(GATEWAYS)}
    assert {g for g, v in fleet.versions().items() if v.version == "0.1.0"} == everyone
    fleet.meter_dead(HELD, True)
    fleet.until(
        lambda: interlocks_active(fleet, HELD) > 0, 30, "the held gateway's interlock active",
        lambda: fleet.member(HELD).tail(),
    )  # fmt: skip
    fleet.cli(
        "rollout", "create", "good", "--release", "0.2.0", "--site", SITE,
        "--phase", "canary:count=2", "--phase", "first:percent=50", "--phase", "rest",
        "--base-url", fleet.url,
    )  # fmt: skip
    first = (GATEWAYS + 1) // 2
    fleet.until(
        lambda: fleet.rollout("good").phase == "first", within(2), "the canaries committed",
        lambda: explain(fleet, "good"),
    )  # fmt: skip
    # the fleet process stops while the first batch installs, and starts again (once every
    # download is done: a download retries for some 20 s, then the update fails, which is
    # how a longer outage of the fleet's HTTP server ends)
    fleet.until(
        lambda: downloaded(fleet, "good", "first"), within(first), "the first batch downloaded",
        lambda: explain(fleet, "good"),
    )  # fmt: skip
    assert "commanded" in phase_of(fleet, "good", "first").values()
    fleet.stop_fleet()
    fleet.start_fleet()
    held = label(HELD)
    fleet.until(
        lambda: sorted(phase_of(fleet, "good", "first").values()).count("done") == first - 1,
        within(first), "the first batch committed, but the held gateway",
        lambda: explain(fleet, "good"),
    )  # fmt: skip
    time.sleep(3.0)  # a few more steps of the driver: the held gateway still waits
    assert phase_of(fleet, "good", "first")[held] == "pending interlocks active"
    assert held not in fleet.commanded("0.2.0")
    assert held not in fleet.commands.to("0.2.0"), "the broker delivered it a command"
    assert fleet.rollout("good").phase == "first", "the phase waits for the held gateway"

    fleet.meter_dead(HELD, False)
    cleared = time.time()
    fleet.until(
        lambda: fleet.rollout("good").status == "completed", within(GATEWAYS - first + 1),
        "the rollout completed", lambda: explain(fleet, "good"),
    )  # fmt: skip
    view = fleet.rollout("good")
    assert [p.counts["done"] for p in view.phases] == [2, first, GATEWAYS - 2 - first]
    commanded = fleet.commanded("0.2.0")
    assert set(commanded) == everyone
    twice = {g: c for g, c in commanded.items() if len(c) > 1}
    assert not twice, f"commanded again after the fleet's restart: {twice}"
    assert commanded[held][0][1] >= cleared - 1.0, "commanded before its interlock cleared"
    shown = fleet.versions()
    assert {g: (v.version, v.ota_state) for g, v in shown.items()} == dict.fromkeys(
        everyone, ("0.2.0", "committed")
    )
    assert {v.slot for v in shown.values()} == {"a"}


def test_a_release_that_crashes_at_start_rolls_back_on_the_canaries_and_pauses(
    fleet: GatewayFleet,
) -> None:
    fleet.cli(
        "rollout", "create", "crash", "--release", "0.3.0", "--site", SITE,
        "--phase", "canary:count=2", "--phase", "rest", "--base-url", fleet.url,
    )  # fmt: skip
    canaries = {label(0), label(1)}

    def rolled_back() -> bool:  # and the rollout, on that evidence, paused
        shown = fleet.versions()
        back = all(shown[g].ota_state == "rolled-back" for g in canaries)
        return back and fleet.rollout("crash").status == "paused"

    fleet.until(
        rolled_back,
        within(2) + 60,
        "both canaries rolled back, the rollout paused",
        lambda: explain(fleet, "crash"),
    )
    view = fleet.rollout("crash")
    assert view.status == "paused"
    assert view.reason.startswith("phase canary: "), view.reason
    assert "failed (allowed 0)" in view.reason
    time.sleep(3.0)  # the driver steps on: the rollout stays paused, nobody else is told
    assert fleet.rollout("crash").status == "paused"
    assert set(fleet.commanded("0.3.0")) == canaries
    assert fleet.commands.to("0.3.0") == canaries, "the broker delivered a command elsewhere"
    shown = fleet.versions()
    for gateway in canaries:  # what they really run, as they report it
        assert (shown[gateway].version, shown[gateway].slot) == ("0.2.0", "a")
        assert "release 0.3.0 did not start healthy" in shown[gateway].reason
    assert {v.version for v in shown.values()} == {"0.2.0"}


PICKED = [label(4), label(5)]  # the aborted rollout's hand-picked canaries
FINISHED = ("committed", "rolled-back", "failed")
SECOND_UPDATE_BUG = (
    "gateway/ota/slots.py (test mode, --ota-system-site-packages): slot b's .pth names the "
    "running slot a's site-packages, not the base environment's, so a second update cannot "
    "import its dependencies (No module named 'rich') and the launcher rolls it back; "
    "reported in /work/briefs/s22/from_h16hil.md"
)


def test_an_aborted_rollout_leaves_the_remaining_gateways_untouched(fleet: GatewayFleet) -> None:
    before = fleet.versions()
    fleet.cli(
        "rollout", "create", "aborted", "--release", "0.4.0", "--site", SITE,
        "--phase", f"canary:count=2,gateways={'+'.join(PICKED)}", "--phase", "rest",
        "--base-url", fleet.url,
    )  # fmt: skip
    fleet.until(
        lambda: set(fleet.commanded("0.4.0")) == set(PICKED), 30, "the canaries commanded",
        lambda: explain(fleet, "aborted"),
    )  # fmt: skip
    fleet.cli("rollout", "abort", "aborted", "-m", "hil")

    def finished() -> bool:  # as the rollout shows their commands' states
        states = {
            m.gateway: m.ota_state for p in fleet.rollout("aborted").phases for m in p.gateways
        }
        return all(states.get(g) in FINISHED for g in PICKED)

    fleet.until(
        finished, within(2) + 60, "the canaries ended the update they had begun",
        lambda: explain(fleet, "aborted"),
    )  # fmt: skip
    time.sleep(3.0)  # without the abort, the rest would be commanded by now
    view = fleet.rollout("aborted")
    assert (view.status, view.reason) == ("aborted", "aborted by cli:root: hil")
    assert set(fleet.commanded("0.4.0")) == set(PICKED)
    assert fleet.commands.to("0.4.0") == set(PICKED), "the broker delivered a command elsewhere"
    shown = fleet.versions()
    untouched = {g: (v.version, v.slot, v.ota_state) for g, v in before.items() if g not in PICKED}
    assert {
        g: (shown[g].version, shown[g].slot, shown[g].ota_state) for g in untouched
    } == untouched


@pytest.mark.xfail(strict=True, reason=SECOND_UPDATE_BUG)
def test_a_second_release_installs_into_the_other_slot_and_commits(fleet: GatewayFleet) -> None:
    shown = fleet.versions()
    assert {
        g: (shown[g].version, shown[g].slot, shown[g].ota_state) for g in PICKED
    } == dict.fromkeys(PICKED, ("0.4.0", "b", "committed")), {g: shown[g].reason for g in PICKED}
