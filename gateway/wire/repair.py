"""Gap repair on the wire: the fleet's ``repair/request`` and the gateway's ``repair/report``.

The broker's acknowledgement is not the fleet's: a broker may drop what it queued (a queue
limit, a fail-over). The gateway keeps acknowledged batches for a while
(:mod:`gateway.uplink.outbox`), and the fleet asks for the numbers it is missing.

``repair/request`` (fleet → gateway, QoS 1, not retained): request ``id`` (increasing per
fleet) for ``kind`` (``telemetry`` or ``events``) and the ``ranges`` of batch numbers missing,
each ``[first, last]``, at most :data:`MAX_RANGES` of them and :data:`MAX_BATCHES` numbers
in all per request. The gateway re-publishes each batch it still keeps on its own topic,
unchanged (same number, same payload: the fleet stores it once).

``repair/report`` (gateway → fleet, QoS 1, not retained): for request ``request``, how many
batches were sent again (``resent``) and the ``lost`` ranges, those it no longer keeps: the
fleet reports them as lost, with their range.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from gateway.wire import Payload

MAX_RANGES = 100
MAX_BATCHES = 10_000
Number = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
BatchRange = tuple[Number, Number]


def _ordered(ranges: list[BatchRange]) -> None:
    for first, last in ranges:
        if first > last:
            raise ValueError(f"range [{first}, {last}]: first is after last")


class RepairRequest(Payload):
    """The fleet asks a gateway for batches it is missing."""

    id: Number
    kind: Literal["telemetry", "events"]
    ranges: list[BatchRange] = Field(min_length=1, max_length=MAX_RANGES)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        _ordered(self.ranges)
        total = sum(last - first + 1 for first, last in self.ranges)
        if total > MAX_BATCHES:
            raise ValueError(f"{total} batches asked for; at most {MAX_BATCHES} per request")
        return self


class RepairReport(Payload):
    """What a gateway did with a repair request."""

    request: Number
    kind: Literal["telemetry", "events"]
    resent: int = Field(ge=0, strict=True)
    lost: list[BatchRange] = Field(default_factory=list, max_length=MAX_RANGES)

    @model_validator(mode="after")
    def _ordered_ranges(self) -> Self:
        _ordered(self.lost)
        return self
