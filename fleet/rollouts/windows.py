"""A site's maintenance window: the daily hours, in the site's own time zone, in which a rollout
may send it an update.

Written ``HH:MM-HH:MM`` (``01:00-05:00``; a window may run over midnight: ``22:00-04:00``);
empty means any time. The time zone is an IANA name (``Asia/Shanghai``), so a fleet that
spans zones, or a server that runs in UTC, still updates each community at its own night.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleet.errors import WindowError

UTC = ZoneInfo("UTC")
_FORM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Window:
    start: time | None = None  # None: any time
    end: time | None = None
    zone: ZoneInfo = UTC

    @classmethod
    def parse(cls, text: str, zone: str = "UTC") -> Window:
        """``HH:MM-HH:MM`` (or empty) in the IANA zone ``zone``; WindowError says what was
        expected."""
        try:
            tz = ZoneInfo(zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise WindowError(
                f"time zone {zone!r}: expected an IANA name such as Asia/Shanghai"
            ) from None
        text = text.strip()
        if not text:
            return cls(zone=tz)
        match = _FORM.match(text)
        if match is None:
            raise WindowError(
                f"maintenance window {text!r}: expected HH:MM-HH:MM, e.g. 01:00-05:00"
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise WindowError(f"maintenance window {text!r}: start and end are the same")
        return cls(time(h1, m1), time(h2, m2), tz)

    def contains(self, moment: datetime) -> bool:
        """Whether the aware ``moment`` falls inside the window (start inclusive)."""
        if self.start is None or self.end is None:
            return True
        local = moment.astimezone(self.zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # over midnight

    def __str__(self) -> str:
        if self.start is None or self.end is None:
            return f"any time ({self.zone.key})"
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone.key}"
