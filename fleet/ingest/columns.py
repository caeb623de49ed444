"""What the database takes: a gateway's values converted for their columns, or refused.

A value the database would refuse (a string longer than its column, holding NUL or a lone
surrogate that UTF-8 cannot carry, a time out of range, a number beyond BIGINT) raises
:class:`~fleet.errors.Rejected` ("schema") naming it, before any statement is sent. A time
more than :data:`AHEAD_S` ahead of the fleet's clock (a gateway's clock glitch) is refused as
well: it would hold a latest value or the health report forever; so is one more than
:data:`BEHIND_S` behind it (both configurable: :class:`fleet.ingest.checks.Limits`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fleet.errors import Rejected
from gateway import wire

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)
#: Column widths of fleet.models that a gateway's strings must fit.
SHORT = 64  # device, point, version, model, interlock, cleared_by
KEY = 200  # alarm key
#: How far ahead of the fleet's clock a gateway's time may be (clocks differ a little).
AHEAD_S = 300.0
#: How far behind it (a Pi without a clock that never synchronised reads 1970).
BEHIND_S = 3650 * 86_400.0


def when(t: float, what: str) -> datetime:
    """A gateway's wall-clock time (s since the epoch) as an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):
        raise Rejected("time", f"{what}: {t!r} is not a time") from None


def happened(
    t: float, what: str, now: datetime, ahead_s: float = AHEAD_S, behind_s: float = BEHIND_S
) -> datetime:
    """A gateway's time of something that happened: not after the fleet received it at
    ``now`` (give or take ``ahead_s``), nor more than ``behind_s`` before it (a clock that
    was never set, or a glitch); ``time`` otherwise."""
    moment = when(t, what)
    ahead = (moment - now).total_seconds()
    if ahead > ahead_s:
        raise Rejected(
            "time",
            f"{what} {moment.isoformat()}: {ahead:.0f} s ahead of the fleet's clock "
            f"(at most {ahead_s:.0f} s)",
        )
    if -ahead > behind_s:
        raise Rejected(
            "time",
            f"{what} {moment.isoformat()}: {-ahead / 86_400:.0f} days behind the fleet's clock "
            f"(at most {behind_s / 86_400:.0f} days)",
        )
    return moment


def text(value: str, what: str, limit: int | None = SHORT) -> str:
    """A gateway's string that fits its column (PostgreSQL refuses NUL and overlong text;
    neither database takes a lone surrogate, which JSON's "\\ud800" escape can carry)."""
    if "\x00" in value:
        raise Rejected("schema", f"{what} {value[:40]!r}: contains a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise Rejected(
            "schema", f"{what} {value[:40]!r}: {exc.reason} at character {exc.start}"
        ) from None
    if limit is not None and len(value) > limit:
        raise Rejected(
            "schema", f"{what} {value[:40]!r}…: {len(value)} characters, at most {limit}"
        )
    return value


def sequence(seq: int, what: str) -> int:
    """A gateway's number that fits a BIGINT column."""
    if seq > BIGINT_MAX:
        raise Rejected("schema", f"{what} {seq}: above {BIGINT_MAX}")
    if seq < BIGINT_MIN:
        raise Rejected("schema", f"{what} {seq}: below {BIGINT_MIN}")
    return seq


def number(value: wire.Scalar) -> float | None:
    """A reading's value for plots: numbers and booleans as floats, anything else None."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is str or value is None:
        return None
    if isinstance(value, bool | int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    return None
