"""The import graph follows the data flow and has no cycles (README, "How the code is organised").

Devices → buses → process image → control → uplink; flashing and the CLI on the side; the
fleet reaches gateways only through the wire contract and the shared MQTT module; nothing in
the product imports the rig or the tests. Read from the source with :mod:`ast`, so a new
import that runs back up the flow fails here with the module and the import named.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "fleet")

#: package prefix -> what it must never import (prefixes)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "gateway.devices": (
        "gateway.bus",
        "gateway.image",
        "gateway.control",
        "gateway.uplink",
        "gateway.flash",
        "gateway.cli",
        "gateway.site",
        "gateway.runtime",
        "gateway.mqtt",
        "gateway.wire",
    ),
    "gateway.bus": (
        "gateway.control",
        "gateway.uplink",
        "gateway.flash",
        "gateway.cli",
        "gateway.site",
        "gateway.runtime",
        "gateway.mqtt",
        "gateway.wire",
        "gateway.commands",
    ),
    "gateway.image": ("gateway.bus", "gateway.control", "gateway.uplink", "gateway.site"),
    "gateway.control": (
        "gateway.uplink",
        "gateway.flash",
        "gateway.cli",
        "gateway.site",
        "gateway.runtime",
        "gateway.mqtt",
        "gateway.wire",
    ),
    "gateway.uplink": ("gateway.flash", "gateway.cli", "gateway.site", "gateway.runtime"),
    "gateway.flash": (
        "gateway.control",
        "gateway.uplink",
        "gateway.cli",
        "gateway.site",
        "gateway.runtime",
        "gateway.mqtt",
    ),
    "gateway": ("hil_tests", "tests", "bench", "fleet"),
    "fleet": ("hil_tests", "tests", "bench"),
}
#: what the fleet may use of the gateway package: the contract, shared plumbing, and the
#: site-config validator and device profiles (a pushed configuration is checked with the
#: gateway's own rules; the UI labels points from the profiles)
FLEET_MAY_USE = (
    "gateway.wire",
    "gateway.mqtt",
    "gateway.backoff",
    "gateway.errors",
    "gateway.site",
    "gateway.devices",
    "gateway.validation",
    "gateway.trust",  # the fleet's CLI signs with the same module the gateway verifies with
    "gateway.ota.bundle",  # and builds and checks bundles in the format the gateway reads
)


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imports(name: str, path: Path) -> set[str]:
    """Absolute names a module imports at run time (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


GRAPH = {name: imports(name, path) for name, path in modules()}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_what_comes_after_it_in_the_flow(layer: str) -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _under(module, layer)
        for target in sorted(targets)
        if any(_under(target, f) for f in FORBIDDEN[layer])
    ]
    assert wrong == []


def test_the_fleet_reaches_gateways_only_through_the_wire_contract() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _under(module, "fleet")
        for target in sorted(targets)
        if _under(target, "gateway")
        and not any(_under(target, ok) for ok in FLEET_MAY_USE)
        and target != "gateway"
    ]
    assert wrong == []


def test_there_is_no_import_cycle() -> None:
    known = set(GRAPH)
    edges = {m: {t for t in targets if t in known and t != m} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    # a package's __init__ naming its own modules is not a cycle of code
    real = [c for c in cycles if not all(_under(m, c[0]) or _under(c[0], m) for m in c)]
    assert real == []
