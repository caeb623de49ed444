"""``fleet`` command line: run the fleet manager, and the changes made before anyone can log
in (the first admin) or by a service account on the server itself.

    fleet serve [--db URL] [--mqtt URL] [--mqtt-listen HOST:PORT [--mqtt-listen-insecure]]
                [--host H] [--port N]
    fleet user create NAME --role ROLE [--password-stdin] [--db URL]
    fleet user disable NAME | enable NAME | set-role NAME ROLE | remove NAME [--db URL]
    fleet site add NAME [--title TITLE] | remove NAME [--with-gateways] [--db URL]
    fleet gateway add SITE NAME | remove SITE NAME [--db URL]
    fleet token create USER --name NAME --role ROLE | revoke ID [--db URL]
    fleet user list | site list | gateway list [SITE] | token list [--user U] [--all] [--json]
    fleet config push|show|status|diff|history|revert|tag|bulk ...   (fleet.cli.config)

Every change is audited with the actor ``cli:UNIXUSER``. Exit codes: 0 done, 1 failed (a
duplicate, something missing, the database unreachable), 2 bad input (the message names the
option or argument and what was expected); see :mod:`fleet.cli.exits`.

This module holds the parser and the dispatch; each command lives with its resource:
:mod:`~fleet.cli.serve`, :mod:`~fleet.cli.users`, :mod:`~fleet.cli.sites` (sites and
gateways), :mod:`~fleet.cli.tokens`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from fleet.cli import config, release, rollout, serve, sites, tokens, users
from fleet.cli.database import db_option
from fleet.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, exit_code
from fleet.errors import FleetError


def _parser() -> argparse.ArgumentParser:
    db = db_option()
    parser = argparse.ArgumentParser(prog="fleet", description="Doorstep fleet manager")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands, db)
    users.add_parsers(commands, db)
    sites.add_parsers(commands, db)
    tokens.add_parsers(commands, db)
    config.add_parsers(commands, db)
    rollout.add_parsers(commands, db)
    release.add_parsers(commands, db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve.serve(args)
        print(args.change(args))  # a change: what it did, one line
    except FleetError as exc:
        code = exit_code(exc)
        kind = "error" if code == EXIT_BAD_INPUT else "failed"
        print(f"fleet: {kind}: {exc}", file=sys.stderr)
        return code
    except (OSError, SQLAlchemyError) as exc:
        print(f"fleet: failed: database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
