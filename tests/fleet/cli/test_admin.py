"""What an administrator does with the ``fleet`` command on the server: list users, sites,
gateways and API tokens (as columns or JSON), and remove them — each removal audited, the
last enabled admin kept, a site with gateways removed only when told."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fleet.models import Role
from gateway import wire
from tests.fleet.api_client import PASSWORD, client, fleet_app, login, raised, send
from tests.fleet.cli.test_cli import CLI_ACTOR, fleet

pytestmark = pytest.mark.fleet


async def _gateway_reports(url: str) -> None:
    """gw-1 of north comes online with two devices and raises an alarm."""
    async with fleet_app(url) as app:
        now = time.time()
        devices = {"charger-1": "EVSE-HEC", "meter": "EM-3"}
        state = wire.State(status="online", version="1.4.0", at=now, devices=devices)
        await send(app, "north", "gw-1", state)
        alarm = raised(1, "fire", "critical", now)
        await send(app, "north", "gw-1", wire.EventBatch(seq=1, at=now, events=[alarm]))


async def _as_ada(url: str, path: str, token: str | None = None) -> tuple[int, object]:
    async with fleet_app(url) as app:
        if token is not None:
            async with client(app, token=token) as script:
                answer = await script.get(path)
        else:
            async with login(app, "ada") as admin:
                answer = await admin.get(path)
    return answer.status_code, answer.json()


def test_an_admin_lists_and_removes_users_sites_gateways_and_tokens(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", fleet_db_url]

    def run(*argv: str, stdin: str = "") -> tuple[int, str]:
        return fleet([*argv, *db], capsys, stdin)

    for name, role in (("ada", Role.ADMIN), ("bob", Role.MAINTAINER)):
        assert (
            run("user", "create", name, "--role", role, "--password-stdin", stdin=PASSWORD)[0] == 0
        )
    for site in ("north", "south"):
        assert run("site", "add", site, "--title", site.title())[0] == 0
    for gateway in ("gw-1", "gw-2"):
        assert run("gateway", "add", "north", gateway)[0] == 0
    asyncio.run(_gateway_reports(fleet_db_url))
    code, out = run("token", "create", "bob", "--name", "ci", "--role", "viewer")
    secret = out.rsplit(": ", 1)[1].strip()

    # listing: columns for a person, JSON for a script
    code, users = run("user", "list")
    assert code == 0
    assert users.splitlines()[0].split() == ["NAME", "ROLE", "DISABLED", "CREATED", "TOKENS"]
    assert [line.split()[:3] + line.split()[-1:] for line in users.splitlines()[1:]] == [
        ["ada", "admin", "no", "0"], ["bob", "maintainer", "no", "1"],
    ]  # fmt: skip
    assert [s["name"] for s in json.loads(run("site", "list", "--json")[1])] == ["north", "south"]
    code, gateways = run("gateway", "list", "north", "--json")
    assert [(g["name"], g["online"], g["version"], g["devices"]) for g in json.loads(gateways)] == [
        ("gw-1", True, "1.4.0", 2), ("gw-2", False, None, 0),
    ]  # fmt: skip
    assert run("gateway", "list", "west") == (
        1,
        "fleet: failed: no site 'west' (`fleet site list` lists them)\n",
    )
    code, tokens = run("token", "list")
    [token] = tokens.splitlines()[1:]
    token_id, name, owner, token_role, state = token.split()[:5]
    assert (name, owner, token_role, state) == ("ci", "bob", "viewer", "active")

    # tokens: revoked (refused from then on), still listed with --all
    assert run("token", "revoke", token_id) == (0, f"revoked API token {token_id}\n")
    assert run("token", "remove", token_id) == (0, f"API token {token_id} was revoked already\n")
    assert run("token", "revoke", "999") == (
        1,
        "fleet: failed: no API token 999 (`fleet token list` lists them)\n",
    )
    assert run("token", "list") == (0, "(none)\n")
    assert "revoked" in run("token", "list", "--all", "--user", "bob")[1]
    assert asyncio.run(_as_ada(fleet_db_url, "/api/me", token=secret))[0] == 401

    # users: never the last enabled admin
    code, out = run("user", "remove", "ada")
    assert code == 1
    assert "'ada' is the last enabled admin: make another user admin first" in out
    assert run("user", "remove", "bob") == (0, "removed user bob (role maintainer)\n")
    assert run("user", "remove", "bob") == (1, "fleet: failed: no user 'bob'\n")
    assert [u["name"] for u in json.loads(run("user", "list", "--json")[1])] == ["ada"]

    # a gateway goes with its data; a site with gateways only when told
    code, out = run("site", "remove", "north")
    assert (code, out) == (
        1,
        "fleet: failed: site 'north' has 2 gateway(s) (gw-1, gw-2): remove them first, or add "
        "--with-gateways to remove them with their history and alarms\n",
    )
    assert run("gateway", "remove", "north", "gw-1") == (
        0, "removed gateway north/gw-1 with its devices, history and alarms\n",
    )  # fmt: skip
    assert asyncio.run(_as_ada(fleet_db_url, "/api/alarms?state=all")) == (200, [])
    assert run("gateway", "remove", "north", "gw-1")[0] == 1
    assert run("site", "remove", "north", "--with-gateways") == (
        0, "removed site north and its gateways gw-2\n",
    )  # fmt: skip
    assert run("site", "remove", "south") == (0, "removed site south\n")
    assert run("site", "list") == (0, "(none)\n")
    assert run("gateway", "list") == (0, "(none)\n")

    status, entries = asyncio.run(_as_ada(fleet_db_url, "/api/audit"))
    assert status == 200
    assert isinstance(entries, list)
    removals = [
        (e["actor"], e["action"], e["target"])
        for e in reversed(entries)
        if e["action"].endswith((".remove", ".revoke"))
    ]
    assert removals == [
        (CLI_ACTOR, "token.revoke", f"token:{token_id}"),
        (CLI_ACTOR, "user.remove", "user:bob"),
        (CLI_ACTOR, "gateway.remove", "gateway:north/gw-1"),
        (CLI_ACTOR, "site.remove", "site:north"),
        (CLI_ACTOR, "site.remove", "site:south"),
    ]
