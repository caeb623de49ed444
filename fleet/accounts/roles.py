"""Roles by name, and the lower of two: what a token may do is bounded by its owner's role.

The roles themselves and their order are :class:`fleet.models.Role` and its ``rank``.
"""

from __future__ import annotations

from fleet.errors import UserError
from fleet.models import Role

#: every role's name, lowest first
ROLE_NAMES = tuple(r.value for r in Role)


def role_of(value: str | Role) -> Role:
    """A role by name; UserError naming the value and the roles there are."""
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(ROLE_NAMES)
        raise UserError(f"role {value!r}: expected one of {known}") from None


def lowest(first: Role, *others: Role) -> Role:
    """The role of lowest rank among those given."""
    return min((first, *others), key=lambda r: r.rank)
