"""Evaluating interlock conditions against the process image, in three-valued logic.

A comparison over a point whose sample is not GOOD (stale, bad, offline) is UNKNOWN, and
UNKNOWN propagates by Kleene's rules: ``all`` is FALSE as soon as one part is known FALSE,
``any`` is TRUE as soon as one part is known TRUE, ``not UNKNOWN`` is UNKNOWN. The interlock
treats an UNKNOWN condition as tripped — an input it cannot trust never lets it stand down —
while a part that is known false still settles an ``all``.

Comparisons with hysteresis keep their own state: ``gt = 80, hysteresis = 5`` becomes true
above 80 and stays true until the value is 75 or less.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from gateway.control.rules import AllOf, AnyOf, Compare, Condition, split_ref
from gateway.devices.profile import Profile
from gateway.image import ProcessImage, Quality


class Truth(Enum):
    FALSE = 0
    TRUE = 1
    UNKNOWN = 2

    @classmethod
    def of(cls, value: bool) -> Truth:
        return cls.TRUE if value else cls.FALSE


#: How a person reads each operator: ``expected 0``, ``expected above 60``.
_EXPECTED = {
    "eq": "{}",
    "ne": "anything but {}",
    "gt": "above {}",
    "ge": "{} or more",
    "lt": "below {}",
    "le": "{} or less",
    "has": "{} set",
}

_PLAIN: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


@dataclass(frozen=True)
class Untrusted:
    """An input whose sample could not be used: its quality (None: not read yet) and since when
    (the sample's monotonic time)."""

    device: str
    point: str
    quality: Quality | None
    since: float | None

    def __str__(self) -> str:
        state = "not read yet" if self.quality is None else self.quality.value
        return f"{self.device}.{self.point} {state}"


@dataclass
class Evaluation:
    """The result of one evaluation: the inputs that were not GOOD (for the "input not
    available" alarm), and what the comparisons found true say (``says``: which fault)."""

    truth: Truth
    untrusted: list[Untrusted] = field(default_factory=list)
    found: list[str] = field(default_factory=list)


class Node:
    def evaluate(self, image: ProcessImage, out: Evaluation) -> Truth:
        raise NotImplementedError

    def unmet(self, image: ProcessImage, want: Truth) -> list[str]:
        """What keeps the condition from being ``want`` (TRUE or FALSE), one line per input;
        empty when it is. For a person refused a reset: the exact part that is not met."""
        raise NotImplementedError


class CompareNode(Node):
    def __init__(self, cmp: Compare, profile: Profile) -> None:
        self.ref = cmp.point
        self.device, self.point = split_ref(cmp.point)
        self.op = cmp.operator
        self.operand = _resolve(cmp, profile)
        self.hysteresis = cmp.hysteresis
        self.says = cmp.says
        self.expected = _EXPECTED[cmp.operator].format(cmp.operand)
        self.labels = profile.point(self.point).enum or {}
        self.held = False  # for hysteresis: the comparison was true last time

    def evaluate(self, image: ProcessImage, out: Evaluation) -> Truth:
        sample = image.find(self.device, self.point)
        if sample is None:
            out.untrusted.append(Untrusted(self.device, self.point, None, None))
            return Truth.UNKNOWN
        if sample.quality is not Quality.GOOD or sample.value is None:
            out.untrusted.append(Untrusted(self.device, self.point, sample.quality, sample.at))
            return Truth.UNKNOWN
        truth = Truth.of(self._test(sample.value))
        if truth is Truth.TRUE and self.says:
            out.found.append(self.says)
        return truth

    def unmet(self, image: ProcessImage, want: Truth) -> list[str]:
        """Why this comparison is not ``want``: ``charger-1.lockout_latched is 1, expected
        eq 0`` (or that its input is not available)."""
        sample = image.find(self.device, self.point)
        if sample is None or sample.quality is not Quality.GOOD or sample.value is None:
            state = "not read yet" if sample is None else sample.quality.value
            return [f"{self.ref} is {state}, so it cannot be checked"]
        if Truth.of(self._test(sample.value)) is want:
            return []
        shown = (
            self.labels.get(sample.value, sample.value)
            if isinstance(sample.value, int)
            else sample.value
        )
        if want is Truth.TRUE:
            return [f"{self.ref} is {shown}, expected {self.expected}"]
        return [f"{self.ref} is {shown}" + (f" ({self.says})" if self.says else "")]

    def _test(self, value: object) -> bool:
        if self.op == "has":
            assert isinstance(value, int)
            return bool(value >> int(self.operand) & 1)
        if self.op == "eq":
            return value == self.operand
        if self.op == "ne":
            return value != self.operand
        assert isinstance(value, int | float)
        threshold = float(self.operand)
        if self.held and self.hysteresis:
            # released only once back past the threshold by the hysteresis band
            threshold += self.hysteresis if self.op in ("lt", "le") else -self.hysteresis
        self.held = _PLAIN[self.op](float(value), threshold)
        return self.held


class JunctionNode(Node):
    """``all`` (FALSE decides) or ``any`` (TRUE decides); otherwise UNKNOWN wins over the
    remaining value. Every part is evaluated so hysteresis state and the list of untrusted
    inputs stay whole."""

    def __init__(self, parts: list[Node], decisive: Truth) -> None:
        self.parts = parts
        self.decisive = decisive
        self.otherwise = Truth.TRUE if decisive is Truth.FALSE else Truth.FALSE

    def evaluate(self, image: ProcessImage, out: Evaluation) -> Truth:
        results = [p.evaluate(image, out) for p in self.parts]
        if self.decisive in results:
            return self.decisive
        return Truth.UNKNOWN if Truth.UNKNOWN in results else self.otherwise

    def unmet(self, image: ProcessImage, want: Truth) -> list[str]:
        reasons = [r for p in self.parts for r in p.unmet(image, want)]
        if want is self.decisive:  # one part would do: every part falls short
            return reasons if all(p.unmet(image, want) for p in self.parts) else []
        return reasons  # every part must be ``want``: each that is not says why


class NotNode(Node):
    def __init__(self, part: Node) -> None:
        self.part = part

    def evaluate(self, image: ProcessImage, out: Evaluation) -> Truth:
        t = self.part.evaluate(image, out)
        return t if t is Truth.UNKNOWN else Truth.of(t is Truth.FALSE)

    def unmet(self, image: ProcessImage, want: Truth) -> list[str]:
        return self.part.unmet(image, Truth.of(want is Truth.FALSE))


def compile_condition(condition: Condition, profiles: dict[str, Profile]) -> Node:
    """A validated condition (see :func:`gateway.control.rules.reference_problems`) as a
    node tree."""
    if isinstance(condition, Compare):
        return CompareNode(condition, profiles[split_ref(condition.point)[0]])
    if isinstance(condition, AllOf):
        return JunctionNode([compile_condition(c, profiles) for c in condition.all], Truth.FALSE)
    if isinstance(condition, AnyOf):
        return JunctionNode([compile_condition(c, profiles) for c in condition.any], Truth.TRUE)
    return NotNode(compile_condition(condition.not_, profiles))


def evaluate(node: Node, image: ProcessImage) -> Evaluation:
    out = Evaluation(Truth.FALSE)
    out.truth = node.evaluate(image, out)
    return out


def _resolve(cmp: Compare, profile: Profile) -> int | float | bool | str:
    """Enum labels and bit names as the integers the process image holds."""
    point = profile.point(split_ref(cmp.point)[1])
    operand = cmp.operand
    if cmp.operator == "has":
        assert point.bits is not None
        return next(bit for bit, name in point.bits.items() if name == operand)
    if isinstance(operand, str) and point.enum:
        return next(code for code, label in point.enum.items() if label == operand)
    return operand
