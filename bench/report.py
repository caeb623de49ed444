"""The one format every benchmark writes, ``bench/results/NAME.json`` (benchmark, command,
metrics, targets, units): numbers to read, not pass/fail."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_result(
    name: str,
    metrics: dict[str, float],
    *,
    targets: dict[str, str] | None = None,
    units: dict[str, str] | None = None,
) -> Path:
    """Write ``bench/results/NAME.json`` and print it."""
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, "-m", f"bench.{name}", *sys.argv[1:]]),
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
        "targets": targets or {},
        "units": units or {},
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return path
