"""Numbers, times and durations as a language writes them (CLDR data through Babel)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from datetime import UTC, timedelta
from functools import cached_property, lru_cache

from babel import Locale
from babel.dates import format_datetime, format_time, format_timedelta
from babel.numbers import NumberPattern, parse_pattern

from fleet.i18n import babel_locale


@dataclass(frozen=True)
class Formats:
    """The formats of one language (a BCP 47 tag of :data:`fleet.i18n.LANGUAGES`)."""

    tag: str

    @cached_property
    def locale(self) -> Locale:
        """The Babel locale, parsed once (a page formats hundreds of values)."""
        return Locale.parse(babel_locale(self.tag))

    def number(self, value: float, digits: int | None = None) -> str:
        """``value`` with grouping; ``digits`` decimals, else as many as its size needs
        (integers none, below 10 two, otherwise one)."""
        if isinstance(value, bool) or not math.isfinite(value):
            return str(value)
        if digits is None:
            digits = 0 if float(value).is_integer() else 2 if abs(value) < 10 else 1
        return str(_pattern(digits).apply(value, self.locale))

    def datetime(self, at: dt.datetime) -> str:
        """Date and time (to the second) in the server's time zone."""
        return format_datetime(at.astimezone(), "medium", locale=self.locale)

    def time(self, at: dt.datetime) -> str:
        return format_time(at.astimezone(), "medium", locale=self.locale)

    def duration(self, span: timedelta, exact: bool = False) -> str:
        """A rounded span: '3 min', '90 min', '3分钟'; ``exact``: in the largest unit that
        divides it ('1 hr', '3 days', '8 hr')."""
        return format_timedelta(
            span, threshold=1 if exact else 1.5, format="long" if exact else "short",
            locale=self.locale,
        )  # fmt: skip

    def since(self, at: dt.datetime, now: dt.datetime | None = None) -> str:
        """How long ago ``at`` was, rounded as the pages' script rounds it: '43 sec. ago',
        '2 min. ago', '3秒前' (the script keeps it current in the browser)."""
        span = max(timedelta(0), (now or dt.datetime.now(UTC)) - at)
        return _ago(self.tag, round(span.total_seconds()))


@lru_cache(maxsize=8192)
def _ago(tag: str, seconds: int) -> str:
    """'3 sec. ago' for whole seconds (a page shows hundreds of ages, most of them alike)."""
    return format_timedelta(
        timedelta(seconds=-seconds), threshold=1.5, add_direction=True, format="short",
        locale=Locale.parse(babel_locale(tag)),
    )  # fmt: skip


@lru_cache(maxsize=16)
def _pattern(digits: int) -> NumberPattern:
    """The CLDR pattern of a grouped number with ``digits`` decimals, parsed once."""
    return parse_pattern("#,##0" + ("." + "0" * digits if digits else ""))
