"""Who is asking: every request or command resolves to an :class:`Actor`, and what it may do
is decided by :meth:`Actor.require` on :attr:`fleet.models.Role.rank`.

Actors come from a login session cookie (fleet.accounts.logins), an API token
(fleet.accounts.tokens) or the server's shell (:func:`cli_actor`).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from fleet.errors import AccessDenied
from fleet.models import Role, User


@dataclass(frozen=True)
class Actor:
    """The person (or their token) behind one request or command."""

    user_id: int | None
    user: str
    role: Role
    label: str  # the audit actor: "user:NAME", "token:TOKEN@USER", "cli:UNIXUSER"
    token_id: int | None = None

    def require(self, role: Role, doing: str) -> None:
        """AccessDenied unless this actor holds ``role`` or above; ``doing`` names the action,
        e.g. "acknowledging alarms"."""
        if self.role.rank < role.rank:
            raise AccessDenied(f"{doing} needs the {role} role; you are {self.role}")


def user_actor(user: User) -> Actor:
    """A user acting in person (a browser login): their own role, audited as ``user:NAME``."""
    return Actor(user_id=user.id, user=user.name, role=Role(user.role), label=f"user:{user.name}")


def cli_actor() -> Actor:
    """The person at the server's shell: full rights, audited as ``cli:UNIXUSER``."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):
        who = f"uid{os.getuid()}"
    return Actor(user_id=None, user=who, role=Role.ADMIN, label=f"cli:{who}")
