"""``fleet`` command line: run the fleet manager, and the changes made before anyone can log
in (the first admin) or by a service account on the server itself.

    fleet serve [--db URL] [--mqtt URL] [--mqtt-listen HOST:PORT [--mqtt-listen-insecure]]
                [--host H] [--port N]
    fleet user create NAME --role ROLE [--password-stdin] [--db URL]
    fleet user disable NAME | enable NAME | set-role NAME ROLE [--db URL]
    fleet site add NAME [--title TITLE] [--db URL]
    fleet gateway add SITE NAME [--db URL]
    fleet token create USER --name NAME --role ROLE [--db URL]

Every change is audited with the actor ``cli:UNIXUSER``. Exit codes: 0 done, 1 failed (a
duplicate, something missing, the database unreachable), 2 bad input (the message names the
option or argument and what was expected).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.accounts.auth import (
    DEFAULT_TOKEN_LIFETIME,
    MIN_PASSWORD,
    AccessDenied,
    Actor,
    LastAdmin,
    UserError,
    UserExists,
    UserNotFound,
    create_token,
    create_user,
    update_user,
)
from fleet.core.broker import BrokerUrl, BrokerUrlError
from fleet.core.db import DatabaseUrlError, async_url, open_database, sessions
from fleet.core.settings import Settings, default_database_url
from fleet.models import Role, User
from fleet.registry import RegistryError, find_gateway, find_site, register_gateway, register_site

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
ROLES = [r.value for r in Role]
T = TypeVar("T")


class Failed(Exception):
    """The command could not do what it was asked (exit 1); the message says why."""


class BadInput(Exception):
    """An option or argument with a value the command cannot use (exit 2)."""


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


def cli_actor() -> Actor:
    """The person at the server's shell: full rights, audited as ``cli:UNIXUSER``."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):
        who = f"uid{os.getuid()}"
    return Actor(user_id=None, user=who, role=Role.ADMIN, label=f"cli:{who}")


def _database(url: str | None) -> str:
    if url is None:
        return default_database_url()
    try:
        async_url(url)
    except DatabaseUrlError as exc:
        raise BadInput(f"--db: {exc}") from None
    return url


async def _in_transaction(url: str, change: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``change`` in one session on the database at ``url`` and commit it."""
    engine = await open_database(url)
    try:
        async with sessions(engine)() as session:
            result = await change(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def _new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from standard input, or a generated one (and whether it was)."""
    if not args.password_stdin:
        return secrets.token_urlsafe(15), True
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise BadInput(
            f"--password-stdin: expected a password of at least {MIN_PASSWORD} characters "
            "on the first line of standard input, got nothing"
        )
    return password, False


def _user_create(args: argparse.Namespace) -> str:
    password, generated = _new_password(args)
    actor = cli_actor()

    async def change(session: AsyncSession) -> User:
        user = await create_user(session, args.name, args.role, password)
        audit.record(session, actor.label, "user.create", f"user:{user.name}", {"role": user.role})
        return user

    user = asyncio.run(_in_transaction(_database(args.db), change))
    done = f"created user {user.name} with role {user.role}"
    return f"{done}; password (shown once): {password}" if generated else done


def _user_update(args: argparse.Namespace) -> str:
    """``user disable``, ``user enable`` and ``user set-role``: audited as "user.update"."""
    actor = cli_actor()
    disabled = {"disable": True, "enable": False}.get(args.action)
    role = getattr(args, "role", None)

    async def change(session: AsyncSession) -> str:
        try:
            done = await update_user(session, args.name, role, disabled)
        except (UserNotFound, LastAdmin) as exc:
            raise Failed(str(exc)) from None
        if done.changed:
            audit.record(session, actor.label, "user.update", f"user:{args.name}", done.detail())
        user = done.user
        if args.action == "set-role":
            return f"user {user.name} has role {user.role}"
        if not user.disabled:
            return f"enabled user {user.name}"
        return (
            f"disabled user {user.name}: ended {done.sessions_ended} login session(s), "
            f"revoked {done.tokens_revoked} API token(s)"
        )

    return asyncio.run(_in_transaction(_database(args.db), change))


def _site_add(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        if await find_site(session, args.name) is not None:
            raise Failed(f"site {args.name!r} exists already")
        try:
            site = await register_site(session, args.name, args.title)
        except IntegrityError:  # registered by someone else between the check and the insert
            raise Failed(f"site {args.name!r} exists already") from None
        audit.record(
            session, actor.label, "site.create", f"site:{site.name}", {"title": site.title}
        )
        return site.name

    return f"added site {asyncio.run(_in_transaction(_database(args.db), change))}"


def _gateway_add(args: argparse.Namespace) -> str:
    actor = cli_actor()

    async def change(session: AsyncSession) -> str:
        if await find_site(session, args.site) is None:
            raise Failed(f"no site {args.site!r}: add it first with `fleet site add {args.site}`")
        if await find_gateway(session, args.site, args.name) is not None:
            raise Failed(f"gateway {args.name!r} of site {args.site!r} exists already")
        try:
            gateway = await register_gateway(session, args.site, args.name)
        except IntegrityError:  # registered by someone else between the check and the insert
            raise Failed(f"gateway {args.name!r} of site {args.site!r} exists already") from None
        target = f"gateway:{args.site}/{gateway.name}"
        audit.record(session, actor.label, "gateway.create", target)
        return target.removeprefix("gateway:")

    return f"added gateway {asyncio.run(_in_transaction(_database(args.db), change))}"


def _expiry(at: datetime | None) -> str:
    return "never expiring" if at is None else f"expires {at:%Y-%m-%d %H:%M} UTC"


def _token_create(args: argparse.Namespace) -> str:
    actor = cli_actor()
    if not 0 <= args.expires_in_days <= 3650:
        raise BadInput(f"--expires-in-days: {args.expires_in_days} is not in 0..3650")
    lifetime = timedelta(days=args.expires_in_days) if args.expires_in_days else None

    async def change(session: AsyncSession) -> str:
        owner = await session.scalar(select(User).where(User.name == args.user))
        if owner is None:
            raise Failed(f"no user {args.user!r}")
        try:
            token, secret = await create_token(
                session, actor, owner, args.name, args.role, lifetime
            )
        except AccessDenied as exc:
            raise BadInput(f"--role: {exc} (user {owner.name} is {owner.role})") from None
        audit.record(
            session, actor.label, "token.create", f"token:{token.id}",
            {"name": token.name, "role": token.role, "owner": owner.name},
        )  # fmt: skip
        return (
            f"created API token {token.id} ({token.name}, role {token.role}) for {owner.name}, "
            f"{_expiry(token.expires_at)}; "
            f"the token (shown once): {secret}"
        )

    return asyncio.run(_in_transaction(_database(args.db), change))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


EMBEDDED_BROKER_OPEN = (
    "the embedded broker has no authentication: listen on 127.0.0.1, or use --mqtt with a "
    "broker that has per-gateway credentials and ACLs"
)


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


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # only the server needs it

    from fleet.app import create_app

    _check_mqtt_listen(args)
    if args.mqtt is not None:
        try:
            BrokerUrl.parse(args.mqtt)
        except BrokerUrlError as exc:
            raise BadInput(f"--mqtt: {exc}") from None
    settings = Settings(
        database_url=_database(args.db),
        mqtt_url=args.mqtt,
        mqtt_listen=args.mqtt_listen,
        mqtt_client_id=args.mqtt_client_id,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=args.host, port=args.port, log_level="info")
    )
    server.run()
    return EXIT_OK if server.started else EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB "
        "(default: fleet.db under $DOORSTEP_FLEET_DIR or ~/.local/share/doorstep-fleet)",
    )
    parser = argparse.ArgumentParser(prog="fleet", description="Doorstep fleet manager")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="HTTP port (default 8080)")

    user = commands.add_parser("user", help="users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = user.add_parser("create", parents=[db], help="create a user (the first admin too)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument(
        "--password-stdin", action="store_true",
        help="read the password from standard input (else one is generated and printed once)",
    )  # fmt: skip

    for action, what in (
        ("disable", "disable a user: ends their login sessions, revokes their API tokens"),
        ("enable", "enable a disabled user again (their old tokens stay revoked)"),
    ):
        user.add_parser(action, parents=[db], help=what).add_argument("name", metavar="NAME")
    set_role = user.add_parser("set-role", parents=[db], help="change a user's role")
    set_role.add_argument("name", metavar="NAME")
    set_role.add_argument("role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))

    site = commands.add_parser("site", help="sites").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add_site = site.add_parser("add", parents=[db], help="register a site")
    add_site.add_argument("name", metavar="NAME")
    add_site.add_argument("--title", default="", help="a human-readable name")

    gateway = commands.add_parser("gateway", help="gateways").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add_gateway = gateway.add_parser("add", parents=[db], help="register a gateway of a site")
    add_gateway.add_argument("site", metavar="SITE")
    add_gateway.add_argument("name", metavar="NAME")

    token = commands.add_parser("token", help="API tokens").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add_token = token.add_parser("create", parents=[db], help="create an API token for a user")
    add_token.add_argument("user", metavar="USER")
    add_token.add_argument("--name", required=True, help="what the token is for")
    add_token.add_argument("--role", required=True, choices=ROLES, help="at most the user's")
    add_token.add_argument(
        "--expires-in-days",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME.days,
        help="refused after this many days, 0: never (default %(default)s)",
    )
    return parser


CHANGES: dict[tuple[str, str], Callable[[argparse.Namespace], str]] = {
    ("user", "create"): _user_create,
    ("user", "disable"): _user_update,
    ("user", "enable"): _user_update,
    ("user", "set-role"): _user_update,
    ("site", "add"): _site_add,
    ("gateway", "add"): _gateway_add,
    ("token", "create"): _token_create,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        print(CHANGES[args.command, args.action](args))
    except (BadInput, UserError, RegistryError) as exc:
        kind = "failed" if isinstance(exc, UserExists) else "error"
        print(f"fleet: {kind}: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, UserExists) else EXIT_BAD_INPUT
    except Failed as exc:
        print(f"fleet: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, SQLAlchemyError) as exc:
        print(f"fleet: failed: database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
