"""The ``fleet`` command line: the first admin, sites, gateways and tokens made on the server,
audited as ``cli:UNIXUSER``; option errors that name the option; ``fleet serve`` running the
API and ingest behind a real socket."""

from __future__ import annotations

import asyncio
import getpass
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from sqlalchemy import Connection, Engine, event

from fleet.cli.main import main
from gateway import wire
from hil_tests.broker import free_port
from tests.fleet.api_client import PASSWORD, client, fleet_app, login

pytestmark = pytest.mark.fleet
CLI_ACTOR = f"cli:{getpass.getuser()}"


def fleet(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str = "") -> tuple[int, str]:
    """Run ``fleet ARGV`` in this process: exit code and what it printed (stdout + stderr)."""
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    finally:
        sys.stdin = sys.__stdin__
    out = capsys.readouterr()
    return code, out.out + out.err


async def audit_log(url: str) -> list[tuple[str, str, str]]:
    async with fleet_app(url) as app, login(app, "ada") as admin:
        return [
            (e["actor"], e["action"], e["target"]) for e in (await admin.get("/api/audit")).json()
        ]


def test_a_user_created_on_the_command_line_logs_in(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["user", "create", "ada", "--role", "admin", "--password-stdin", "--db", fleet_db_url]
    code, out = fleet(argv, capsys, stdin=PASSWORD + "\n")
    assert (code, out) == (0, "created user ada with role admin\n")
    log = asyncio.run(audit_log(fleet_db_url))
    assert log == [
        ("user:ada", "session.login", "user:ada"),
        (CLI_ACTOR, "user.create", "user:ada"),
    ]


def test_a_duplicate_user_is_a_clear_error(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["user", "create", "ada", "--role", "viewer", "--password-stdin", "--db", fleet_db_url]
    assert fleet(argv, capsys, stdin=PASSWORD)[0] == 0
    code, out = fleet(argv, capsys, stdin="another long password")
    assert (code, out) == (1, "fleet: failed: user 'ada' exists already\n")


def test_a_generated_password_is_printed_once_and_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOORSTEP_FLEET_DIR", str(tmp_path / "state"))
    code, out = fleet(["user", "create", "ada", "--role", "operator"], capsys)
    assert code == 0
    prefix = "created user ada with role operator; password (shown once): "
    assert out.startswith(prefix)
    password = out.removeprefix(prefix).strip()
    assert len(password) >= 12

    async def log_in() -> int:
        url = f"sqlite:///{tmp_path / 'state' / 'fleet.db'}"  # the default database
        async with fleet_app(url) as app, client(app) as browser:
            answer = await browser.post("/api/login", json={"name": "ada", "password": password})
            return answer.status_code

    assert asyncio.run(log_in()) == 200


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["user", "create", "x", "--role", "boss"], "", "argument --role: invalid choice: 'boss'"),
        (["user", "create", "x", "--role", "admin", "--password-stdin"], "short\n",
         "fleet: error: password: at least 12 characters expected"),
        (["user", "create", "x", "--role", "admin", "--password-stdin"], "",
         "fleet: error: --password-stdin: expected a password of at least 12 characters"),
        (["user", "create", "has space", "--role", "admin"], "",
         "fleet: error: user name 'has space': expected 1-64 letters"),
        (["site", "add", "North"], "", "fleet: error: site name 'North': expected lower-case"),
        (["site", "add", "north", "--db", "mysql://db/fleet"], "",
         "fleet: error: --db: database URL 'mysql://db/fleet': expected sqlite:///PATH"),
        (["serve", "--mqtt-listen", "1883"], "",
         "argument --mqtt-listen: '1883': expected HOST:PORT, e.g. 127.0.0.1:1883"),
        (["serve", "--mqtt-listen", "0.0.0.0:1883"], "",
         "fleet: error: --mqtt-listen 0.0.0.0: the embedded broker has no authentication: "
         "listen on 127.0.0.1, or use --mqtt with a broker that has per-gateway credentials "
         "and ACLs (or add --mqtt-listen-insecure to listen there anyway)"),
        (["serve", "--mqtt-listen", "broker.example:1883"], "",
         "fleet: error: --mqtt-listen broker.example: the embedded broker has no authentication"),
        (["serve", "--port", "80000"], "",
         "argument --port: '80000': expected a TCP port 1..65535"),
        (["serve", "--mqtt", "http://broker"], "",
         "fleet: error: --mqtt: broker URL 'http://broker': unknown scheme 'http'"),
        (["token", "create", "ada", "--name", "ci"], "",
         "the following arguments are required: --role"),
        (["token", "create", "ada", "--name", "ci", "--role", "viewer", "--expires-in-days", "-1"],
         "", "fleet: error: --expires-in-days: -1 is not in 0..3650"),
    ],
)  # fmt: skip
def test_bad_input_names_the_option_and_exits_2(
    argv: list[str],
    stdin: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOORSTEP_FLEET_DIR", str(tmp_path))
    code, out = fleet(argv, capsys, stdin=stdin)
    assert code == 2
    assert message in out


def test_sites_gateways_and_tokens_on_the_command_line(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", fleet_db_url]
    create = ["user", "create", "ada", "--role", "maintainer", "--password-stdin", *db]
    assert fleet(create, capsys, stdin=PASSWORD)[0] == 0
    assert fleet(["site", "add", "north", "--title", "North depot", *db], capsys) == (
        0, "added site north\n",
    )  # fmt: skip
    assert fleet(["gateway", "add", "north", "gw-1", *db], capsys) == (
        0, "added gateway north/gw-1\n",
    )  # fmt: skip
    assert fleet(["gateway", "add", "north", "gw-1", *db], capsys) == (
        1, "fleet: failed: gateway 'gw-1' of site 'north' exists already\n",
    )  # fmt: skip
    assert fleet(["gateway", "add", "south", "gw-1", *db], capsys) == (
        1, "fleet: failed: no site 'south': add it first with `fleet site add south`\n",
    )  # fmt: skip
    above = fleet(["token", "create", "ada", "--name", "ci", "--role", "admin", *db], capsys)
    assert above[0] == 2
    assert "--role: a token cannot have a role above its owner's" in above[1]
    assert fleet(["token", "create", "bob", "--name", "ci", "--role", "viewer", *db], capsys) == (
        1, "fleet: failed: no user 'bob'\n",
    )  # fmt: skip
    code, out = fleet(["token", "create", "ada", "--name", "ci", "--role", "viewer", *db], capsys)
    assert code == 0
    assert re.search(r", expires \d{4}-\d\d-\d\d \d\d:\d\d UTC; the token", out), out
    secret = out.rsplit(": ", 1)[1].strip()
    wall = ["token", "create", "ada", "--name", "wall", "--role", "viewer", "--expires-in-days"]
    assert ", never expiring; the token (shown once): dst_" in fleet([*wall, "0", *db], capsys)[1]

    async def use_token() -> tuple[dict[str, str], list[dict[str, object]]]:
        async with fleet_app(fleet_db_url) as app, client(app, token=secret) as script:
            return (await script.get("/api/me")).json(), (await script.get("/api/sites")).json()

    me, sites = asyncio.run(use_token())
    assert me == {"name": "ada", "role": "viewer"}
    assert sites == [{"name": "north", "title": "North depot", "gateways": 1}]


def test_fleet_serve_answers_http_and_ingests_from_its_embedded_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'fleet.db'}"]
    assert (
        fleet(
            ["user", "create", "ada", "--role", "admin", "--password-stdin", *db], capsys, PASSWORD
        )[0]
        == 0
    )
    assert fleet(["gateway", "add", "north", "gw-1", *db], capsys)[0] == 1  # no site yet
    assert fleet(["site", "add", "north", *db], capsys)[0] == 0
    assert fleet(["gateway", "add", "north", "gw-1", *db], capsys)[0] == 0
    http, mqtt = free_port(), free_port()
    argv = [
        sys.executable, "-m", "fleet.cli", "serve", *db, "--port", str(http),
        "--mqtt-listen", f"127.0.0.1:{mqtt}", "--mqtt-client-id", f"fleet-test-{os.getpid()}",
    ]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{http}"
        with httpx.Client(base_url=base, timeout=5) as browser:
            _wait_until(lambda: _answers(browser, "/api/me") == 401, "the API answers")
            login = browser.post("/api/login", json={"name": "ada", "password": PASSWORD})
            assert login.status_code == 200
            asyncio.run(_publish_online(mqtt))

            def online() -> bool:
                sites = browser.get("/api/overview").json()["sites"]
                return bool(sites[0]["gateways"][0]["online"])

            _wait_until(online, "ingest stores the gateway's state")
            assert browser.get("/").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=20)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (a service manager sees it)
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    # once up it says where its database is, where its broker listens and its URL
    assert f"fleet: database: SQLite file {tmp_path / 'fleet.db'}\n" in output
    assert f"fleet: MQTT broker: embedded, listening on mqtt://127.0.0.1:{mqtt}\n" in output
    assert f"fleet: web UI and API: http://127.0.0.1:{http}/, API documentation at" in output


def _answers(browser: httpx.Client, path: str) -> int | None:
    try:
        return browser.get(path).status_code
    except httpx.TransportError:
        return None


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for: {what}"
        time.sleep(0.1)


async def _publish_online(port: int) -> None:
    state = wire.State(status="online", version="9.9.9", at=time.time())
    async with aiomqtt.Client("127.0.0.1", port, identifier="gw-test") as gw:
        topic = wire.topic("north", "gw-1", wire.Kind.STATE)
        await gw.publish(topic, wire.encode(state), qos=1, retain=True)


def test_disabling_enabling_and_changing_a_role_on_the_command_line(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", fleet_db_url]
    for name, role in (("ada", "admin"), ("bob", "viewer")):
        create = ["user", "create", name, "--role", role, "--password-stdin", *db]
        assert fleet(create, capsys, stdin=PASSWORD)[0] == 0
    code, out = fleet(["token", "create", "bob", "--name", "ci", "--role", "viewer", *db], capsys)
    secret = out.rsplit(": ", 1)[1].strip()

    assert fleet(["user", "disable", "bob", *db], capsys) == (
        0, "disabled user bob: ended 0 login session(s), revoked 1 API token(s)\n",
    )  # fmt: skip
    assert asyncio.run(_me_with(fleet_db_url, secret)) == 401
    assert fleet(["user", "enable", "bob", *db], capsys) == (0, "enabled user bob\n")
    assert fleet(["user", "set-role", "bob", "operator", *db], capsys) == (
        0, "user bob has role operator\n",
    )  # fmt: skip
    assert fleet(["user", "disable", "ada", *db], capsys) == (
        1, "fleet: failed: user 'ada' is the last enabled admin: make another user admin first "
        "(nobody could manage users otherwise)\n",
    )  # fmt: skip
    assert fleet(["user", "set-role", "nobody", "viewer", *db], capsys) == (
        1, "fleet: failed: no user 'nobody'\n",
    )  # fmt: skip
    code, out = fleet(["user", "set-role", "bob", "boss", *db], capsys)
    assert code == 2
    assert "argument ROLE: invalid choice: 'boss'" in out

    async def updates() -> list[tuple[str, str, dict[str, object]]]:
        async with fleet_app(fleet_db_url) as app, login(app, "ada") as admin:
            log = (await admin.get("/api/audit")).json()
        return [(e["actor"], e["target"], e["detail"]) for e in log if e["action"] == "user.update"]

    assert asyncio.run(updates()) == [
        (CLI_ACTOR, "user:bob", {
            "before": {"role": "viewer", "disabled": False},
            "after": {"role": "operator", "disabled": False},
        }),
        (CLI_ACTOR, "user:bob", {
            "before": {"role": "viewer", "disabled": True},
            "after": {"role": "viewer", "disabled": False},
        }),
        (CLI_ACTOR, "user:bob", {
            "before": {"role": "viewer", "disabled": False},
            "after": {"role": "viewer", "disabled": True},
            "sessions_ended": 0, "tokens_revoked": 1,
        }),
    ]  # fmt: skip


async def _me_with(url: str, token: str) -> int:
    async with fleet_app(url) as app, client(app, token=token) as script:
        return (await script.get("/api/me")).status_code


def test_a_name_registered_by_someone_else_meanwhile_fails_cleanly(
    fleet_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process registers the same name between the command's check and its insert."""
    db = ["--db", fleet_db_url]
    rivals: list[str] = []

    def rival(
        conn: Connection, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        table = statement.removeprefix("INSERT INTO ").split(" ", 1)[0]
        if not statement.startswith("INSERT INTO ") or table in rivals:
            return
        if table not in ("sites", "gateways"):  # not alembic_version, audit_log
            return
        rivals.append(table)
        with conn.engine.connect() as other:
            other.exec_driver_sql(statement, parameters)
            other.commit()

    event.listen(Engine, "before_cursor_execute", rival)
    try:
        site = fleet(["site", "add", "north", *db], capsys)
        gateway = fleet(["gateway", "add", "north", "gw-1", *db], capsys)
    finally:
        event.remove(Engine, "before_cursor_execute", rival)
    assert rivals == ["sites", "gateways"]
    assert site == (1, "fleet: failed: site 'north' exists already\n")
    assert gateway == (1, "fleet: failed: gateway 'gw-1' of site 'north' exists already\n")


@pytest.mark.parametrize(
    "listen",
    [
        ["--mqtt-listen", "0.0.0.0:1883", "--mqtt-listen-insecure"],
        ["--mqtt-listen", "127.0.0.2:1883"],
        ["--mqtt-listen", "localhost:1883"],
        ["--mqtt-listen", "0.0.0.0:1883", "--mqtt", "mqtts://fleet:pw@broker.example"],
    ],
)
def test_the_embedded_broker_listens_beyond_loopback_only_when_told(
    listen: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Accepted: the next check (a bad --db) is what stops it."""
    code, out = fleet(["serve", *listen, "--db", "mysql://db/fleet"], capsys)
    assert code == 2
    assert "fleet: error: --db: database URL 'mysql://db/fleet'" in out
    insecure = "--mqtt-listen-insecure" in listen
    assert ("the embedded broker has no authentication: anyone who reaches it" in out) is insecure
