"""The ``fleet`` command's exit codes: 0 done, 1 failed (a duplicate, something missing, the
database unreachable), 2 bad input (the message names the option or argument and what was
expected); and the one mapping of fleet errors (:mod:`fleet.errors`) onto them."""

from __future__ import annotations

from fleet.errors import (
    AlreadyRegistered,
    BadInput,
    ConfigNotFound,
    ConfigRefused,
    FleetError,
    NotRegistered,
    RegistryError,
    ReleaseError,
    ReleaseExists,
    ReleaseNotFound,
    RolloutError,
    RolloutNotFound,
    SafetyChangeUnconfirmed,
    UserError,
    UserExists,
    WindowError,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

#: An error exits with the code of its most specific class here.
EXIT: dict[type[FleetError], int] = {
    BadInput: EXIT_BAD_INPUT,
    UserError: EXIT_BAD_INPUT,
    RegistryError: EXIT_BAD_INPUT,
    UserExists: EXIT_FAILED,
    AlreadyRegistered: EXIT_FAILED,
    NotRegistered: EXIT_FAILED,
    ReleaseError: EXIT_BAD_INPUT,
    ReleaseExists: EXIT_FAILED,
    ReleaseNotFound: EXIT_FAILED,
    ConfigRefused: EXIT_BAD_INPUT,
    SafetyChangeUnconfirmed: EXIT_BAD_INPUT,
    ConfigNotFound: EXIT_FAILED,
    RolloutError: EXIT_BAD_INPUT,
    RolloutNotFound: EXIT_FAILED,
    WindowError: EXIT_BAD_INPUT,
    FleetError: EXIT_FAILED,
}


def exit_code(error: FleetError) -> int:
    """EXIT_BAD_INPUT or EXIT_FAILED for ``error``."""
    return next(EXIT[kind] for kind in type(error).__mro__ if kind in EXIT)
