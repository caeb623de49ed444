"""What the ``fleet … list`` commands print: aligned columns for a person, or with ``--json``
one JSON array for a script."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

#: how a missing time or value is shown in a column
NONE = "-"


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array (for scripts)")


def when(at: datetime | None) -> str:
    return NONE if at is None else f"{at:%Y-%m-%d %H:%M}"


def render(args: argparse.Namespace, columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    """``rows`` (each with a key per column) as JSON with ``--json``, else as a table whose
    headings are the columns in capitals; "(none)" when there are no rows."""
    if args.json:
        return json.dumps(rows, default=_json_value, ensure_ascii=False, indent=1)
    if not rows:
        return "(none)"
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    headings = [c.replace("_", " ").upper() for c in columns]
    widths = [max(len(line[i]) for line in [headings, *cells]) for i in range(len(columns))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in [headings, *cells]
    )


def _cell(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
