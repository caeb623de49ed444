"""Strict data models and the one way validation errors are shown to users.

Profiles and site configs are data written by people; a mistake must name the exact key,
the value and what was expected (``devices[3].unit_id: 300 is outside 1..247``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Immutable, and unknown keys are errors rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("devices", 3, "unit_id")`` → ``devices[3].unit_id``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def validation_problems(exc: ValidationError) -> list[str]:
    """One line per problem, each starting with its key path."""
    lines = []
    for err in exc.errors():
        loc = key_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the schema; check the spelling)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def format_validation_error(exc: ValidationError) -> str:
    return "; ".join(validation_problems(exc))
