"""The two wings meet only over HTTP (DESIGN.md): checked on the source, so a stray import fails here.

* the simulator imports nothing of the product but the shared pure helpers;
* the product imports the simulator only where it wires the embedded default.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_PURE_HELPERS = {"clock", "auth", "atomic_file"}
SIMULATOR_WIRING = {"exchange_connection.py"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _product_modules() -> set[str]:
    return {path.stem for path in ROOT.glob("*.py")} | {"strategies"}


def test_the_simulator_imports_only_the_shared_pure_helpers_of_the_product():
    product = _product_modules()
    for path in sorted((ROOT / "simulator").glob("*.py")):
        borrowed = (_imported_roots(path) & product) - SHARED_PURE_HELPERS
        assert not borrowed, f"{path.relative_to(ROOT)} imports product modules {sorted(borrowed)}"


def test_only_the_exchange_connection_imports_the_simulator():
    for path in sorted(ROOT.glob("*.py")):
        if path.name in SIMULATOR_WIRING:
            continue
        assert "simulator" not in _imported_roots(path), f"{path.name} imports the simulator"
    for path in sorted((ROOT / "strategies").glob("*.py")):
        assert "simulator" not in _imported_roots(path), f"strategies/{path.name} imports the simulator"


def test_the_shared_helpers_import_only_the_standard_library():
    for name in sorted(SHARED_PURE_HELPERS):
        outside = {root for root in _imported_roots(ROOT / f"{name}.py")
                   if root not in sys.stdlib_module_names and root != "__future__"}
        assert outside <= SHARED_PURE_HELPERS, f"{name}.py imports {sorted(outside)}"
