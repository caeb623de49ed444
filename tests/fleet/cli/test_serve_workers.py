"""``fleet serve --workers N`` / ``--worker-slot K``: what is refused and why, each worker's
MQTT identity, and a worker started on its own sharing the HTTP port with another."""

from __future__ import annotations

import socket

import pytest

from fleet.cli.serve import DEFAULT_SHARE_GROUP, reuse_port_socket, worker_settings
from fleet.core.broker import shared
from fleet.core.settings import Settings
from gateway import wire
from hil_tests.broker import free_port
from tests.fleet.cli.test_cli import fleet

pytestmark = pytest.mark.fleet

PG = "postgresql://fleet@db.example/fleet"
MQTT = "mqtt://broker.example:1883"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--workers", "2", "--db", "sqlite:///{tmp}/f.db", "--mqtt", MQTT],
         "--workers 2: SQLite is the one-process embedded database"),
        (["--worker-slot", "1", "--db", "sqlite:///{tmp}/f.db", "--mqtt", MQTT],
         "--worker-slot 1: SQLite is the one-process embedded database"),
        (["--workers", "3", "--db", PG],
         "--workers 3: the embedded broker lives inside one process"),
        (["--workers", "2", "--worker-slot", "1", "--db", PG, "--mqtt", MQTT],
         "--worker-slot: the workers of --workers get their slots 1..N from it"),
        (["--workers", "0"], "argument --workers: '0': expected a whole number 1..64"),
        (["--workers", "two"], "expected a whole number 1..64"),
        (["--worker-slot", "-1"], "expected a whole number 1..64"),
        (["--mqtt-share-group", "a/b"], "without '/', '+', '#', '$' or spaces"),
        (["--mqtt-share-group", "#"], "without '/', '+', '#', '$' or spaces"),
    ],
)  # fmt: skip
def test_several_workers_are_refused_where_they_cannot_share(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    code, out = fleet(["serve", *(a.format(tmp=tmp_path) for a in argv)], capsys)
    assert code == 2
    assert expected in out
    assert "Traceback" not in out


def test_sqlite_refusal_says_what_to_use_instead(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    code, out = fleet(
        ["serve", "--workers", "2", "--db", f"sqlite:///{tmp_path}/f.db", "--mqtt", MQTT], capsys
    )
    assert code == 2
    assert "several workers need PostgreSQL: --db postgresql://USER@HOST/DB" in out


def test_each_worker_has_its_own_persistent_session_in_one_shared_group() -> None:
    base = Settings(database_url=PG, mqtt_url=MQTT, mqtt_client_id="fleet-a")
    one, two = worker_settings(base, 1, "g"), worker_settings(base, 2, "g")
    assert (one.mqtt_client_id, two.mqtt_client_id) == ("fleet-a-w1", "fleet-a-w2")
    assert one.mqtt_share_group == two.mqtt_share_group == "g"
    again = worker_settings(base, 1, "g")  # a restarted worker resumes the same session
    assert again == one
    default = worker_settings(Settings(database_url=PG, mqtt_url=MQTT), 3, DEFAULT_SHARE_GROUP)
    assert default.mqtt_client_id is not None
    assert default.mqtt_client_id.startswith("doorstep-fleet-")
    assert default.mqtt_client_id.endswith("-w3")


def test_workers_subscribe_through_the_shared_group_and_one_process_does_not() -> None:
    topic = wire.subscription(wire.Kind.TELEMETRY)
    assert shared(topic, "doorstep-fleet") == "$share/doorstep-fleet/doorstep/v1/+/+/telemetry"
    assert shared(topic, None) == topic


def test_workers_started_separately_share_one_http_port() -> None:
    port = free_port()
    first = reuse_port_socket("127.0.0.1", port)
    second = reuse_port_socket("127.0.0.1", port)
    try:
        for sock in (first, second):
            sock.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        first.close()
        second.close()


def test_a_port_taken_by_something_else_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = fleet(
            ["serve", "--worker-slot", "1", "--db", PG, "--mqtt", MQTT, "--port", str(port)],
            capsys,
        )
    assert code == 1
    assert f"--host 127.0.0.1 --port {port}: Address already in use" in out
