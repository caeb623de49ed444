"""The launcher: what the service manager starts, and the one that counts failed starts.

    python -m gateway.ota.launcher --state-dir DIR -- run --config SITE ...

On every start it reads the update state (:mod:`gateway.ota.state`). When the active slot is
on trial (installed, not yet committed) it counts this start; once the count is over
``max_boots`` — the new version crashed or was killed before it could commit, that many
times in a row — it switches back to the previous slot and records the rollback with the
reason, by itself, without the gateway's help. Then it replaces itself (``exec``) with the
active slot's ``gateway`` command and the arguments after ``--``, telling it the slot in
``DOORSTEP_OTA_SLOT``. With no slot installed yet it runs the ``gateway`` of its own
interpreter (slot ``none``). The service manager (systemd's ``Restart=always``; a small
supervisor in the tests) starts the launcher again whenever the gateway exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import OtaError
from gateway.ota import slots
from gateway.ota.state import UpdateState, load, save

SLOT_ENV = "DOORSTEP_OTA_SLOT"


def decide(state_dir: Path) -> tuple[str, UpdateState]:
    """Count this start and roll back if due; the slot to start (``none``: no slot yet).
    An unreadable state file never stops the gateway: the slot the link names starts."""
    try:
        state = load(state_dir)
    except OtaError as exc:
        print(f"gateway-launcher: {exc}; starting the slot the link names", file=sys.stderr)
        return slots.current(state_dir) or "none", UpdateState()
    if state.active is None:
        return "none", state
    if state.trial:
        state.boots += 1
        if state.boots > state.max_boots and state.previous is not None:
            failed = state.versions.get(state.active, "?")
            slots.switch(state_dir, state.previous)
            state.active, state.previous = state.previous, None
            state.trial, state.boots = False, 0
            state.state = "rolled-back"
            state.reason = (
                f"release {failed} did not start healthy {state.max_boots} times in a row; "
                f"the launcher went back to {state.versions.get(state.active, '?')}"
            )
        save(state_dir, state)
    if slots.current(state_dir) != state.active:  # died between the state and the link
        slots.switch(state_dir, state.active)
    return state.active, state


def command(state_dir: Path, slot: str) -> list[str]:
    if slot == "none":
        return [sys.executable, "-m", "gateway.cli"]
    return [str(slots.gateway_command(state_dir, slot))]  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-launcher", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the gateway's arguments")
    args = parser.parse_args(argv)
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    slot, _ = decide(args.state_dir)
    argv0 = command(args.state_dir, slot)
    os.environ[SLOT_ENV] = slot
    sys.stdout.flush()
    os.execv(argv0[0], [*argv0, *rest])  # noqa: S606 - our own slot's gateway


if __name__ == "__main__":
    sys.exit(main())
