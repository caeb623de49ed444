"""``fleet serve``: the API, the web UI and ingest, with an embedded MQTT broker unless an
external one is given. Once it is up it says where its database is, where its broker listens
and its URL."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from fleet.cli import database
from fleet.cli.exits import EXIT_FAILED, EXIT_OK
from fleet.core.broker import BrokerUrl
from fleet.core.settings import Settings
from fleet.errors import BadInput, BrokerUrlError

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
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="HTTP port (default 8080)")


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
    """Run the server until it is stopped: exit 0, or 1 if it never started."""
    import uvicorn  # only the server needs it

    from fleet.app import create_app

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
        trusted_proxies=tuple(args.trusted_proxy),
        api_docs=args.api_docs,
        max_body_bytes=args.max_body,
    )
    lines = where(settings, args.host, args.port)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print("\n".join(f"fleet: {line}" for line in lines), flush=True)

    server = Server(server_config(create_app(settings), settings, args.host, args.port))
    server.run()
    return EXIT_OK if server.started else EXIT_FAILED
