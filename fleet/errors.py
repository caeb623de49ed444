"""The fleet manager's exception tree.

Every error the fleet raises for a person to read derives from :class:`FleetError`; its
message is meant for whoever asked and names the thing, the value and what was expected.
The API answers each class with one HTTP status (:data:`fleet.api.STATUS`); the ``fleet``
command prints the message and exits 1 or 2 (:data:`fleet.cli.exits.EXIT`).

    FleetError
    ├── AuthError                           users, logins, API tokens, roles
    │   ├── UserError ── UserExists         a user (or token) that cannot be made; a duplicate
    │   ├── LoginFailed                     wrong name or password, one message for every cause
    │   ├── TooManyLogins                   logging in refused for ``retry_after`` seconds
    │   ├── AccessDenied                    the actor's role is too low
    │   ├── UserNotFound, TokenNotFound     no such user; no such token of yours
    │   └── LastAdmin                       the change would leave no enabled admin
    ├── RegistryError                       a site or gateway name that cannot be registered
    │   ├── AlreadyRegistered               a site, or a site's gateway, of that name exists
    │   └── NotRegistered                   no such site
    ├── DatabaseUrlError, BrokerUrlError    a database or MQTT broker URL the fleet cannot use
    ├── EmbeddedBrokerError                 the embedded MQTT broker could not listen
    ├── RetentionError                      a history retention setting (days) not usable
    ├── ConfigVersionError                  desired configuration (fleet.config)
    │   ├── ConfigRefused                   a document the validator refuses (each key named)
    │   ├── SafetyChangeUnconfirmed         weakens a standard interlock, not confirmed
    │   └── ConfigNotFound                  no such gateway or version
    ├── Rejected                            a gateway message ingest refuses (``reason``)
    ├── ReleaseError                        a bundle refused at upload, a release command
    │   └── ReleaseExists, ReleaseNotFound  that version/platform exists; no such release
    ├── RolloutError                        a rollout that cannot be made or changed
    │   ├── WindowError                     a maintenance window or time zone not understood
    │   └── RolloutNotFound                 no such rollout
    └── Failed, BadInput                    a ``fleet`` command failed (exit 1); bad input (2)

Lower-level errors are translated into this tree where they enter, at one place each:

- the database driver's ``IntegrityError`` on a concurrent insert: in
  :func:`fleet.accounts.users.create_user` (UserExists) and :mod:`fleet.registry`
  (AlreadyRegistered); its ``DataError`` for a value a gateway sent: in
  :mod:`fleet.ingest` (Rejected). Any other ``DBAPIError``, or a lost connection
  (``OSError``), is the database's trouble, not the request's: it stays what it is and its
  caller answers it as a failure (the ``fleet`` command: exit 1 with "database: ..."; the
  API: 500; ingest: holds the message or logs it);
- argon2's ``VerificationError`` and ``InvalidHashError``: in :mod:`fleet.accounts.passwords`
  (a wrong password, never an exception);
- URL parsing (SQLAlchemy's ``ArgumentError``, :func:`urllib.parse.urlsplit`'s
  ``ValueError``): in :mod:`fleet.core.db` and :mod:`fleet.core.broker`, whose callers in
  the ``fleet`` command name the option (``--db``, ``--mqtt``) in a BadInput;
- amqtt's ``BrokerError`` when the embedded broker cannot listen: in :mod:`fleet.core.broker`
  (EmbeddedBrokerError);
- an unknown role name (``ValueError`` from :class:`fleet.models.Role`): in
  :func:`fleet.accounts.roles.role_of` (UserError);
- pydantic: request bodies are validated by FastAPI, which answers 422 itself; the gateways'
  payloads are decoded by :mod:`gateway.wire` and refused as :class:`Rejected` by ingest.

The URL and registry errors are also ValueErrors, and EmbeddedBrokerError a RuntimeError, as
they were before this tree: callers may catch those.
"""

from __future__ import annotations

#: the one message for every failed login: it never says whether the user exists
LOGIN_FAILED = "wrong name or password"


class FleetError(Exception):
    """Base of every error the fleet raises for a person to read."""


# -- accounts: users, logins, API tokens, roles ----------------------------------------------


class AuthError(FleetError):
    """Base of the accounts' errors; the message is meant for the person who asked."""


class UserError(AuthError):
    """A user that cannot be created: bad name, weak password, unknown role."""


class UserExists(UserError):
    """A user of that name exists already."""


class LoginFailed(AuthError):
    """Wrong name or password (or a disabled user): always :data:`LOGIN_FAILED`."""

    def __init__(self) -> None:
        super().__init__(LOGIN_FAILED)


class TooManyLogins(AuthError):
    """Logging in refused for a while after failed logins (fleet.accounts.login_throttle)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccessDenied(AuthError):
    """The actor's role is too low for what it asked."""


class TokenNotFound(AuthError):
    """No such API token, or not one the actor may revoke."""


class UserNotFound(AuthError):
    """No user of that name."""


class LastAdmin(AuthError):
    """The change would leave no enabled admin, and nobody could manage users any more."""


# -- sites and gateways ----------------------------------------------------------------------


class RegistryError(FleetError, ValueError):
    """A site or gateway name that cannot be registered; the message names it."""


class AlreadyRegistered(RegistryError):
    """A site, or a gateway of a site, of that name is registered already."""


class NotRegistered(RegistryError):
    """No site of that name (a gateway is added to a registered site only)."""


# -- configuration and the MQTT broker -------------------------------------------------------


class DatabaseUrlError(FleetError, ValueError):
    """A database URL the fleet cannot use; the message names it and what is expected."""


class BrokerUrlError(FleetError, ValueError):
    """A broker URL the fleet cannot use; the message names it and what is expected."""


class EmbeddedBrokerError(FleetError, RuntimeError):
    """The embedded broker could not listen (the message names the address and why)."""


class RetentionError(FleetError, ValueError):
    """A history retention setting the fleet cannot use (fleet.timeseries.retention)."""


# -- ingest ----------------------------------------------------------------------------------


class Rejected(FleetError):
    """A message ingest refuses: ``reason`` is one of fleet.ingest.checks.REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PointMapNotSeen(Rejected):
    """Compact telemetry naming a point map this worker has not seen (``pointmap``)."""

    def __init__(self, map_id: str, detail: str) -> None:
        super().__init__("pointmap", detail)
        self.map_id = map_id


# -- releases --------------------------------------------------------------------------------


class ReleaseError(FleetError, ValueError):
    """A bundle refused at upload (unsigned, damaged, tampered) or a release command that
    cannot be carried out; the message says which and why."""


class ReleaseExists(ReleaseError):
    """That version for that platform was uploaded before with other contents."""


class ReleaseNotFound(ReleaseError):
    """No such release (or command)."""


class RolloutError(FleetError, ValueError):
    """A rollout that cannot be created or changed (no gateways selected, bad phases, an
    action its state does not allow); the message says which."""


class WindowError(RolloutError):
    """A maintenance window or time zone that is not understood."""


class RolloutNotFound(RolloutError):
    """No such rollout."""


# -- configuration versions ------------------------------------------------------------------


class ConfigVersionError(FleetError):
    """Base of the desired-configuration errors (fleet.config)."""


class ConfigRefused(ConfigVersionError):
    """A document (or bulk fragment) the validator refuses; ``problems`` name each key."""

    def __init__(self, source: str, problems: list[str] | None = None) -> None:
        problems = problems or []
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: refused, {len(problems)} problem(s)\n{lines}")


class SafetyChangeUnconfirmed(ConfigVersionError):
    """The change weakens a standard interlock and was not confirmed; ``changes`` say how."""

    def __init__(self, source: str, changes: list[str] | None = None) -> None:
        changes = changes or []
        self.changes = changes
        lines = "\n".join(f"  {c}" for c in changes)
        super().__init__(
            f"{source}: weakens or removes a standard interlock; confirm it deliberately "
            f"(--confirm-safety-change, or the confirmation in the UI)\n{lines}"
        )


class ConfigNotFound(ConfigVersionError):
    """No such gateway, version, or no configuration yet."""


# -- the ``fleet`` command -------------------------------------------------------------------


class Failed(FleetError):
    """The command could not do what it was asked (exit 1); the message says why."""


class BadInput(FleetError):
    """An option or argument with a value the command cannot use (exit 2)."""
