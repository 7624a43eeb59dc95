"""Dependencies point one way: main → app → strategy → lifecycle → engines → ledger → client.

Every product module has a layer; a module may import only from layers below its own (or its
own layer, when the two are peers that do not import each other). Imports under
``if TYPE_CHECKING:`` are annotations only and are not counted. A new module must be given a
layer here, which is the point: its place in the house is decided once, on purpose.

The same scan refuses the back channel the start-up once used: no product module hands a
module object to another (``sys.modules[...]``, ``importlib.import_module``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS: list[set[str]] = [
    # 0: values and pure helpers that know nothing of the trading system
    {"errors", "api_values", "clock", "auth", "atomic_file", "json_lines", "json_body", "log_throttle", "stop_flag",
     "instance_lock", "display", "validation", "contracts", "seams",
     "leg_market", "dashboard_security", "dashboard_pages", "fees"},
    # 1: configuration, records and operator outputs
    {"config", "alerts", "events", "health", "persistence", "state_identity", "price_sanity",
     "backtest_report", "notifications", "capture", "exchange_assumptions", "hedging", "loop_guard"},
    # 2: the HTTP edge and its adapter
    {"coincall_client", "coincall_payloads"},
    # 3: market and account data, the connection
    {"market_data", "account_manager", "exchange_connection"},
    # 4: the order ledger
    {"order_ledger"},
    # 5: what every execution job shares
    {"execution_job"},
    # 6: the engines
    {"trade_execution"},
    {"multileg_orderbook", "rfq"},
    # 8: selection, conditions, the lifecycle and the scheduler
    {"option_selection", "conditions", "position_monitor"},
    # the lifecycle's parts, one job each (the manager owns them; none imports the lifecycle)
    {"trade_fills", "trade_recorder", "exit_evaluation", "close_rounds", "settlement", "external_closes",
     "lifecycle_holds"},
    {"trade_lifecycle"},
    # the reconciler's collaborators, one decision table each, and what they share
    {"reconciliation_report", "strategy_pauses", "prefix_ownership", "order_reconciliation", "close_evidence",
     "position_reconciliation"},
    # 10: what decides: reconciliation and the strategies
    {"reconciliation", "strategy"},
    # 11: building the strategies from their factories
    {"strategy_factories"},
    # 12: the operator's services inside the daemon
    {"commands", "operations", "operator_view"},
    # the web dashboard: reads the published view, writes only the command queue
    {"dashboard"},
    # 12: wiring and start-up
    {"app"},
    # 13: the command line and what it runs through app
    {"operator_cli", "backtest", "recorder", "doctor", "doctor_orders"},
    # 14: many backtests (a sweep): the sweep file, then its ranking and heat map, then the runs on local
    # processes or a Dask cluster
    {"sweep_spec"},
    {"sweep_report"},
    {"sweep"},
    {"main"},
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def product_modules() -> dict[str, Path]:
    return {path.stem: path for path in sorted(ROOT.glob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """Product modules ``path`` imports at run time (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if _type_checking_block(node):
            skipped |= {id(child) for child in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & known


def test_every_product_module_has_a_layer():
    missing = sorted(set(product_modules()) - set(LAYER_OF))
    assert missing == [], f"give these modules a layer in {__file__}: {missing}"


def test_imports_point_down_the_layers():
    modules = product_modules()
    upward = []
    for name, path in modules.items():
        for dep in sorted(runtime_imports(path, set(modules))):
            if dep != name and LAYER_OF.get(dep, -1) > LAYER_OF.get(name, -1):
                upward.append(f"{name} (layer {LAYER_OF.get(name)}) imports {dep} (layer {LAYER_OF.get(dep)})")
    assert upward == []


def test_peers_in_one_layer_do_not_import_each_other_both_ways():
    modules = product_modules()
    deps = {name: runtime_imports(path, set(modules)) for name, path in modules.items()}
    cycles = sorted(f"{a} <-> {b}" for a in deps for b in deps[a] if a < b and a in deps.get(b, set()))
    assert cycles == []


@pytest.mark.parametrize("needle", ["sys.modules[", "import_module("])
def test_no_module_is_handed_another_module_as_an_object(needle):
    offenders = [f"{path.name}:{number}" for path in product_modules().values()
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if needle in line and not line.lstrip().startswith("#")]
    assert offenders == []


def test_the_scan_sees_an_upward_import(tmp_path):
    """The check is real: a ledger that imported the lifecycle would be reported."""
    fake = tmp_path / "order_ledger.py"
    fake.write_text("from trade_lifecycle import LifecycleManager\n", encoding="utf-8")
    assert runtime_imports(fake, {"trade_lifecycle"}) == {"trade_lifecycle"}
    assert LAYER_OF["trade_lifecycle"] > LAYER_OF["order_ledger"]
    guarded = tmp_path / "guarded.py"
    guarded.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trade_lifecycle\n",
                       encoding="utf-8")
    assert runtime_imports(guarded, {"trade_lifecycle"}) == set()
