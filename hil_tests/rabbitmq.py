"""A throw-away three-node RabbitMQ cluster on loopback, speaking MQTT: Debian's
``rabbitmq-server`` (3.10) with its MQTT plugin, durable MQTT sessions on quorum queues
(replicated to every node, so a killed node loses nothing that was acknowledged).

Each node runs from its own directory (database, logs, config, plugins file) with a shared
Erlang cookie and its own ports; nodes 2 and 3 join node 1. :func:`rabbitmq_bin` finds the
scripts or skips the test saying how to get them; under CI (``CI=true``) a missing server
fails instead. Starting the cluster takes 15–30 s: share it (module or session scope).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from hil_tests.broker import free_port

BIN = Path("/usr/lib/rabbitmq/bin")
MISSING = (
    "needs Debian's RabbitMQ server: sudo apt-get install rabbitmq-server "
    "(make test installs it as root)"
)
START_TIMEOUT_S = 90.0


def rabbitmq_bin() -> Path:
    if not (BIN / "rabbitmq-server").exists() or not (BIN / "rabbitmqctl").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ is missing under CI: {MISSING}")
        pytest.skip(MISSING)
    return BIN


@dataclass
class Node:
    index: int
    name: str  # rabbitN-<tag>@localhost
    home: Path
    mqtt_port: int
    amqp_port: int
    dist_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RabbitCluster:
    """``with RabbitCluster() as cluster: cluster.nodes[0].mqtt_port`` — anonymous MQTT on
    127.0.0.1; :meth:`kill` a node (SIGKILL, like a power cut) and :meth:`start` it again."""

    def __init__(self, size: int = 3) -> None:
        self.bin = rabbitmq_bin()
        self.cookie = secrets.token_hex(16)
        self.tag = secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix="doorstep-rabbit-"))
        self.nodes = [self._node(i) for i in range(1, size + 1)]

    def _node(self, index: int) -> Node:
        home = self.dir / f"n{index}"
        home.mkdir()
        node = Node(
            index,
            f"rabbit{index}-{self.tag}@localhost",
            home,
            mqtt_port=free_port(),
            amqp_port=free_port(),
            dist_port=free_port(),
        )
        cookie = home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (home / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (home / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}",
                    f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}",
                    "mqtt.allow_anonymous = true",
                    "mqtt.durable_queue_type = quorum",
                    "loopback_users = none",
                    # a test machine's disk may be nearly full; the default alarm stops publishers
                    "disk_free_limit.absolute = 1MB",
                ]
            )
            + "\n"
        )
        return node

    def _env(self, node: Node) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(node.home),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.home / "log"),
            "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.home / "enabled_plugins"),
        }

    def ctl(self, node: Node, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl`` against one node; raises with its output when it fails."""
        result = subprocess.run(
            [str(self.bin / "rabbitmqctl"), "-n", node.name, "--erlang-cookie", self.cookie, *args],
            env=self._env(node),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {node.name}: {result.stdout}{result.stderr}"
            )
        return result.stdout

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, node: Node) -> None:
        """Start one node (again) and wait until it runs its applications."""
        assert not node.running, f"{node.name} already runs"
        log = (node.home / "server.log").open("ab")
        node.proc = subprocess.Popen(
            [str(self.bin / "rabbitmq-server")],
            env=self._env(node),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # until the node has registered with epmd, await_startup fails at once
            try:
                self.ctl(node, "await_startup", "--timeout", "30", timeout=40)
                return
            except RuntimeError:
                if not node.running:
                    raise RuntimeError(
                        f"{node.name} exited at start: see {node.home / 'server.log'}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def kill(self, node: Node) -> None:
        """SIGKILL the node's whole process group (its Erlang VM and helpers)."""
        if node.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=30)
        node.proc = None

    def __enter__(self) -> Self:
        try:
            first, *others = self.nodes
            self.start(first)
            for node in others:
                self.start(node)
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", first.name)
                self.ctl(node, "start_app")
        except BaseException:
            self.close()
            raise
        return self

    def running_nodes(self) -> list[str]:
        for node in self.nodes:
            if node.running:
                status = self.ctl(node, "cluster_status", "--formatter", "json")
                return sorted(json.loads(status)["running_nodes"])
        return []

    def queue_leaders(self) -> dict[str, str]:
        """Queue name → the node leading it (quorum queues)."""
        for node in self.nodes:
            if node.running:
                out = self.ctl(node, "list_queues", "name", "leader", "--formatter", "json")
                return {q["name"]: q["leader"] for q in json.loads(out) if q.get("leader")}
        return {}

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
