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


_PLAIN: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


@dataclass
class Evaluation:
    """The result of one evaluation, with the inputs that were not GOOD (for alarms)."""

    truth: Truth
    untrusted: list[str] = field(default_factory=list)


class Node:
    def evaluate(self, image: ProcessImage, out: Evaluation) -> Truth:
        raise NotImplementedError


class CompareNode(Node):
    def __init__(self, cmp: Compare, profile: Profile) -> None:
        self.ref = cmp.point
        self.device, self.point = split_ref(cmp.point)
        self.op = cmp.operator
        self.operand = _resolve(cmp, profile)
        self.hysteresis = cmp.hysteresis
        self.held = False  # for hysteresis: the comparison was true last time

    def evaluate(self, image: ProcessImage, out: Evaluation) -> Truth:
        sample = image.find(self.device, self.point)
        if sample is None:
            out.untrusted.append(f"{self.ref} not read yet")
            return Truth.UNKNOWN
        if sample.quality is not Quality.GOOD or sample.value is None:
            out.untrusted.append(f"{self.ref} {sample.quality.value}")
            return Truth.UNKNOWN
        return Truth.of(self._test(sample.value))

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


class NotNode(Node):
    def __init__(self, part: Node) -> None:
        self.part = part

    def evaluate(self, image: ProcessImage, out: Evaluation) -> Truth:
        t = self.part.evaluate(image, out)
        return t if t is Truth.UNKNOWN else Truth.of(t is Truth.FALSE)


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
