"""Which of our languages a browser asks for, from its ``Accept-Language`` header."""

from __future__ import annotations

from fleet.i18n import DEFAULT, LANGUAGES


def _ranges(header: str) -> list[tuple[float, int, str]]:
    ranges: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranges.append((-q, i, tag.strip().lower()))
    return sorted(ranges)


def _ours(tag: str) -> str | None:
    """Our language for a requested tag: any Chinese → zh-Hans (the screens' only Chinese),
    en-* → en, '*' → the default."""
    if tag == "*":
        return DEFAULT
    primary = tag.split("-")[0]
    if primary == "zh":
        return "zh-Hans"
    return next((ours for ours in LANGUAGES if ours.lower() == primary), None)


def from_accept_language(header: str | None) -> str:
    """The best of LANGUAGES for ``header`` (by q-value, then order), else DEFAULT."""
    for _, _, tag in _ranges(header or ""):
        if (found := _ours(tag)) is not None:
            return found
    return DEFAULT


def language(tag: str | None) -> str | None:
    """``tag`` if it is one of LANGUAGES (a stored or chosen language), else None."""
    return tag if tag in LANGUAGES else None
