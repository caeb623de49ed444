"""``fleet serve``: the API, the web UI and ingest, with an embedded MQTT broker unless an
external one is given. Once it is up it says where its database is, where its broker listens
and its URL."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from fleet.cli import database
from fleet.cli.exits import EXIT_FAILED, EXIT_OK
from fleet.core.broker import BrokerUrl
from fleet.core.db import open_database
from fleet.core.settings import Settings, default_client_id
from fleet.errors import BadInput, BrokerUrlError, Failed, FleetError

#: the shared subscription group of the workers, unless --mqtt-share-group names another
DEFAULT_SHARE_GROUP = "doorstep-fleet"
MAX_WORKERS = 64
EMBEDDED_BROKER_OPEN = (
    "the embedded broker has no authentication: listen on 127.0.0.1, or use --mqtt with a "
    "broker that has per-gateway credentials and ACLs"
)


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], db: argparse.ArgumentParser
) -> None:
    """``fleet serve``; ``db`` adds the ``--db`` option."""
    serve = commands.add_parser("serve", parents=[db], help="run the API, web UI and ingest")
    serve.add_argument(
        "--mqtt", metavar="URL", help="external broker mqtt[s]://[USER:PW@]HOST[:PORT]"
    )
    serve.add_argument(
        "--mqtt-listen", metavar="HOST:PORT", type=_host_port, default=("127.0.0.1", 1883),
        help="where the embedded broker listens when --mqtt is not given (default 127.0.0.1:1883)",
    )  # fmt: skip
    serve.add_argument(
        "--mqtt-listen-insecure", action="store_true",
        help="let the embedded broker (no authentication) listen on a non-loopback address",
    )  # fmt: skip
    serve.add_argument(
        "--mqtt-client-id", metavar="ID",
        help="ingest's MQTT client id (its persistent session); default doorstep-fleet-HOSTNAME",
    )  # fmt: skip
    serve.add_argument(
        "--releases-dir", type=Path, metavar="DIR",
        help="where uploaded release bundles are kept (default: releases/ beside fleet.db)",
    )  # fmt: skip
    serve.add_argument(
        "--public-url", metavar="URL",
        help="the URL gateways fetch release bundles from (default: the one a request used)",
    )  # fmt: skip
    serve.add_argument(
        "--config-signing-key", type=Path, metavar="KEYFILE",
        help="sign desired configurations with this Ed25519 key file (fleet release keygen); "
        "the key stays in the file, never in the database",
    )  # fmt: skip
    serve.add_argument(
        "--trusted-proxy", metavar="ADDRESS", action="append", default=[],
        help="a reverse proxy whose X-Forwarded-For/-Proto are believed (repeatable; "
        "default none: the peer's address is the client's)",
    )  # fmt: skip
    serve.add_argument(
        "--api-docs", choices=("login", "public", "off"), default="login",
        help="who may read /docs and /openapi.json (default: logged-in users)",
    )  # fmt: skip
    serve.add_argument(
        "--max-body", type=int, metavar="BYTES", default=1024 * 1024,
        help="request bodies over this are refused before they are read (default 1 MiB)",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=_count, default=1, metavar="N",
        help="run N worker processes sharing the HTTP port and the gateways' stream, restarting "
        "a dead one (PostgreSQL and an external broker; default 1: this process alone)",
    )  # fmt: skip
    serve.add_argument(
        "--worker-slot", type=_count, metavar="K",
        help="run as worker K of several started separately (e.g. one systemd unit each): "
        "MQTT client id PREFIX-wK (see --mqtt-client-id), a shared subscription, the HTTP "
        "port shared through SO_REUSEPORT",
    )  # fmt: skip
    serve.add_argument(
        "--mqtt-share-group", type=_share_group, default=DEFAULT_SHARE_GROUP, metavar="NAME",
        help="the shared subscription ($share/NAME/...) of the workers (default "
        f"{DEFAULT_SHARE_GROUP}); one name for every worker of one fleet",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="HTTP port (default 8080)")


def _signing_key(path: Path | None) -> Path | None:
    """``--config-signing-key``: read once here, so a wrong file stops the server at start."""
    from fleet.config.signing import fleet_key

    try:
        fleet_key(path)
    except FleetError as exc:
        raise BadInput(f"--config-signing-key: {exc}") from None
    return path


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number 1..{MAX_WORKERS}")
    return count


def _share_group(value: str) -> str:
    if not 1 <= len(value) <= 64 or not value.isprintable() or any(c in value for c in "/+#$ "):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected 1..64 printable characters without '/', '+', '#', '$' or spaces"
        )
    return value


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, _port(port)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a TCP port 1..65535")
    return port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_mqtt_listen(args: argparse.Namespace) -> None:
    """Refuse an embedded broker reachable from the network, where anyone could publish as
    any gateway, unless --mqtt-listen-insecure says so; warn then."""
    host = args.mqtt_listen[0]
    if args.mqtt is not None or _loopback(host):
        return
    if not args.mqtt_listen_insecure:
        raise BadInput(
            f"--mqtt-listen {host}: {EMBEDDED_BROKER_OPEN} "
            "(or add --mqtt-listen-insecure to listen there anyway)"
        )
    print(
        f"fleet: warning: --mqtt-listen {host}: the embedded broker has no authentication: "
        "anyone who reaches it can publish as any gateway",
        file=sys.stderr,
    )


def where(settings: Settings, host: str, port: int) -> list[str]:
    """Where the server's database is, where its broker listens, and its URL: what ``fleet
    serve`` prints once it is up (no password in any of them)."""
    db = make_url(settings.database_url)
    database_line = (
        f"database: SQLite file {db.database}"
        if db.get_backend_name() == "sqlite"
        else f"database: {db.render_as_string(hide_password=True)}"
    )
    if settings.mqtt_url is not None:
        broker = f"MQTT broker: {BrokerUrl.parse(settings.mqtt_url)} (external)"
    else:
        mqtt_host, mqtt_port = settings.mqtt_listen
        broker = f"MQTT broker: embedded, listening on mqtt://{_url_host(mqtt_host)}:{mqtt_port}"
    everywhere = " (all addresses)" if host in ("0.0.0.0", "::") else ""  # noqa: S104
    url = f"http://{_url_host(host)}:{port}/"
    return [
        database_line,
        broker,
        f"web UI and API: {url}{everywhere}, API documentation at {url}docs",
    ]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def server_config(app: Any, settings: Settings, host: str, port: int) -> Any:
    """uvicorn's configuration of the fleet's server. uvicorn believes X-Forwarded-For from
    loopback by default: that would let anyone on the machine choose the address the login
    throttle counts, so forwarded headers are believed only from ``settings.trusted_proxies``."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
    )


def serve(args: argparse.Namespace) -> int:
    """Run the server until it is stopped: exit 0, or 1 if it never started. With
    ``--workers N`` (N > 1) this process supervises N workers (:func:`supervise`); with
    ``--worker-slot K`` it is worker K of several started separately."""
    _check_mqtt_listen(args)
    if args.mqtt is not None:
        try:
            BrokerUrl.parse(args.mqtt)
        except BrokerUrlError as exc:
            raise BadInput(f"--mqtt: {exc}") from None
    settings = Settings(
        database_url=database.url(args.db),
        mqtt_url=args.mqtt,
        mqtt_listen=args.mqtt_listen,
        mqtt_client_id=args.mqtt_client_id,
        releases_dir=args.releases_dir,
        public_url=args.public_url,
        config_signing_key=_signing_key(args.config_signing_key),
        trusted_proxies=tuple(args.trusted_proxy),
        api_docs=args.api_docs,
        max_body_bytes=args.max_body,
    )
    lines = where(settings, args.host, args.port)
    if args.workers > 1:
        if args.worker_slot is not None:
            raise BadInput(
                "--worker-slot: the workers of --workers get their slots 1..N from it; "
                "give --workers N, or start each worker with its own --worker-slot K"
            )
        _check_workers(f"--workers {args.workers}", settings)
        return supervise(settings, args.host, args.port, args.workers, args.mqtt_share_group)
    if args.worker_slot is None:
        return run_worker(settings, args.host, args.port, lines)
    _check_workers(f"--worker-slot {args.worker_slot}", settings)
    mine = worker_settings(settings, args.worker_slot, args.mqtt_share_group)
    return run_worker(
        mine,
        args.host,
        args.port,
        [*lines, _worker_line(mine, args.worker_slot)],
        sockets=[reuse_port_socket(args.host, args.port)],
    )


# -- several workers -------------------------------------------------------------------------


def _check_workers(option: str, settings: Settings) -> None:
    """Several workers need a database and a broker they can share: PostgreSQL and an
    external broker with shared subscriptions."""
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        raise BadInput(
            f"{option}: SQLite is the one-process embedded database (one writer, a file on "
            "this machine); several workers need PostgreSQL: --db postgresql://USER@HOST/DB"
        )
    if settings.mqtt_url is None:
        raise BadInput(
            f"{option}: the embedded broker lives inside one process and has no shared "
            "subscriptions; several workers need an external broker: --mqtt mqtt://HOST:PORT"
        )


def worker_settings(settings: Settings, slot: int, group: str) -> Settings:
    """The settings of worker ``slot``: MQTT client id ``PREFIX-wSLOT`` (a persistent session
    of its own, so a restarted worker resumes its share of the stream) on the shared
    subscription ``group``."""
    prefix = settings.mqtt_client_id or default_client_id()
    return replace(settings, mqtt_client_id=f"{prefix}-w{slot}", mqtt_share_group=group)


def _worker_line(settings: Settings, slot: int) -> str:
    return (
        f"worker {slot} (pid {os.getpid()}): MQTT client id {settings.mqtt_client_id}, "
        f"shared subscription group {settings.mqtt_share_group}"
    )


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT: workers started separately (systemd units) on
    one port, the kernel spreading new connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise Failed(f"--host {host} --port {port}: {exc.strerror or exc}") from None
    return sock


def run_worker(
    settings: Settings,
    host: str,
    port: int,
    lines: list[str],
    sockets: list[socket.socket] | None = None,
) -> int:
    """One fleet process (the only one, or a worker): uvicorn until it is stopped; prints
    ``lines`` once it is up."""
    import uvicorn  # only the server needs it

    from fleet.app import create_app

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print("\n".join(f"fleet: {line}" for line in lines), flush=True)

    server = Server(server_config(create_app(settings), settings, host, port))
    server.run(sockets=sockets)
    return EXIT_OK if server.started else EXIT_FAILED


def _worker_process(
    settings: Settings, host: str, port: int, sock: socket.socket, slot: int
) -> None:
    """A worker process of :func:`supervise` (spawned: a fresh interpreter)."""
    sys.exit(run_worker(settings, host, port, [_worker_line(settings, slot)], sockets=[sock]))


def supervise(settings: Settings, host: str, port: int, workers: int, group: str) -> int:
    """``fleet serve --workers N``: migrate the database once, bind the HTTP port once, and
    run N worker processes (slots 1..N) that share it (one listening socket, inherited: the
    kernel hands each connection to one worker, and a dead worker's queued connections go to
    the others). A worker that dies is started again in its slot (same MQTT client id, so it
    resumes its share of the stream); one that keeps dying at once is started again after a
    growing pause (up to a minute). SIGTERM or SIGINT stops every worker (SIGTERM: each
    finishes what it is handling) and then the supervisor."""
    import uvicorn

    asyncio.run(_migrate(settings.database_url))
    sock = uvicorn.Config("fleet.app:create_app", host=host, port=port).bind_socket()
    spawn = multiprocessing.get_context("spawn")
    slots = {slot: _Slot(worker_settings(settings, slot, group)) for slot in range(1, workers + 1)}
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print("\n".join(f"fleet: {line}" for line in where(settings, host, port)), flush=True)
    print(f"fleet: {workers} workers, shared subscription group {group}", flush=True)
    try:
        while not stopping.is_set():
            now = time.monotonic()
            for slot, held in slots.items():
                if held.process is not None and not held.process.is_alive():
                    held.exited(slot, now)
                if held.process is None and now >= held.not_before:
                    held.start(spawn, host, port, sock, slot, now)
            stopping.wait(SUPERVISE_TICK_S)
    finally:
        _stop_all([held.process for held in slots.values() if held.process is not None])
        sock.close()
    return EXIT_OK


#: how often the supervisor looks at its workers; how long a stopped worker may take
SUPERVISE_TICK_S = 0.5
STOP_TIMEOUT_S = 15.0
#: a worker that dies within this of its start is started again after a growing pause
QUICK_DEATH_S = 10.0
RESTART_PAUSE_MAX_S = 60.0


@dataclass
class _Slot:
    settings: Settings
    process: multiprocessing.process.BaseProcess | None = None
    started: float = 0.0
    not_before: float = 0.0
    pause_s: float = 0.0

    def start(
        self,
        spawn: Any,
        host: str,
        port: int,
        sock: socket.socket,
        slot: int,
        now: float,
    ) -> None:
        self.process = spawn.Process(
            target=_worker_process,
            args=(self.settings, host, port, sock, slot),
            name=f"fleet-worker-{slot}",
        )
        self.process.start()
        self.started = now

    def exited(self, slot: int, now: float) -> None:
        assert self.process is not None
        code, pid, self.process = self.process.exitcode, self.process.pid, None
        quick = now - self.started < QUICK_DEATH_S
        self.pause_s = min(max(1.0, self.pause_s * 2), RESTART_PAUSE_MAX_S) if quick else 0.0
        self.not_before = now + self.pause_s
        print(
            f"fleet: worker {slot} (pid {pid}) exited with code {code}; starting it again"
            + (f" in {self.pause_s:.0f} s" if self.pause_s else ""),
            file=sys.stderr,
            flush=True,
        )


def _stop_all(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        process.terminate()  # SIGTERM: uvicorn's graceful shutdown
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


async def _migrate(url: str) -> None:
    """Bring the schema up to date once, before any worker starts (under the migration lock,
    fleet.core.db.upgrade)."""
    engine = await open_database(url)
    await engine.dispose()
