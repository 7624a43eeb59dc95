"""The typed seams (seams.py): a collaborator missing a Protocol member fails at construction.

Why: before the seams, services probed their collaborators (``getattr(x, "is_blocked", None)``)
and a renamed method silently skipped a safety gate. Now every service checks what it receives
in its constructor; these tests prove, seam by seam and member by member, that a fake missing
one member is refused there with a ``TypeError`` naming the member, and that the real classes
the daemon wires (``app.build_context``) satisfy every Protocol they are used through.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

import seams
from account_manager import AccountManager, OutageAlerts
from app import StatusReporter, TradingContext, build_context
from clock import Clock, SimulatedClock
from coincall_client import ClientSettings, CoincallClient
from commands import CommandProcessor
from conditions import max_hold_hours
from config import load_settings
from market_data import MarketData
from multileg_orderbook import SmartOrderbookExecutor
from option_selection import strangle
from order_ledger import OrderLedger
from persistence import StoreWatch
from position_monitor import PositionMonitor
from reconciliation import Reconciler
from rfq import RFQExecutor
from seams import missing_members, protocol_members, require
from strategy import StrategyConfig, StrategyRunner
from trade_execution import LimitFillManager, TradeExecutor
from trade_lifecycle import LifecycleManager

START = 1_772_528_400.0  # 2026-03-03 09:00 UTC


def complete(protocol: type, *, without: str | None = None) -> Any:
    """An object with every member of ``protocol`` (methods do nothing), except ``without``."""
    methods, attributes = protocol_members(protocol)
    body: dict[str, Any] = {name: (lambda self, *args, **kwargs: None) for name in methods if name != without}
    body.update({name: None for name in attributes if name != without})
    return type(f"Fake{protocol.__name__}", (), body)()


def _answers_no_kept_blocks(store: Any) -> Any:
    """The ledger reads the kept blocks at construction (a dict): a complete fake answers none.
    One missing the member is left as it is, so the refusal names it."""
    if hasattr(type(store), "kept_symbol_blocks"):
        store.kept_symbol_blocks = lambda: {}
    return store


def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


def config() -> StrategyConfig:
    return StrategyConfig(name="seams", legs=strangle(0.1), exit_conditions=[max_hold_hours(1)])


# ---------------------------------------------------------------------------------------------
# Every service, every collaborator it receives, and the Protocol it checks that against.
# A builder takes {role: object} and constructs the service.
# ---------------------------------------------------------------------------------------------


def _runner_ctx(parts: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(clock=clock(), account_manager=None, position_monitor=None, condition_health=None,
                           **parts)


def _command_ctx(parts: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(clock=clock(), **parts)


SEAMS: list[tuple[str, dict[str, type], Callable[[dict[str, Any]], object]]] = [
    ("OrderLedger", {"client": seams.LedgerClient, "store": seams.LedgerStore},
     lambda p: OrderLedger(p["client"], clock(), store=_answers_no_kept_blocks(p["store"]))),
    ("MarketData", {"client": seams.MarketDataClient},
     lambda p: MarketData(p["client"], clock())),
    ("AccountManager", {"client": seams.AccountClient},
     lambda p: AccountManager(p["client"], clock())),
    ("OutageAlerts", {"alerts": seams.AlertSender},
     lambda p: OutageAlerts(p["alerts"])),
    ("PositionMonitor", {"account_manager": seams.AccountSource},
     lambda p: PositionMonitor(p["account_manager"], clock())),
    ("PositionMonitor.register", {"callback": seams.MonitorCallback},
     lambda p: PositionMonitor(complete(seams.AccountSource), clock()).register(p["callback"])),
    ("LimitFillManager", {"ledger": seams.Ledger, "market": seams.PriceSource},
     lambda p: LimitFillManager(p["ledger"], p["market"], clock())),
    ("SmartOrderbookExecutor", {"ledger": seams.Ledger, "market": seams.PriceSource},
     lambda p: SmartOrderbookExecutor(p["ledger"], p["market"], clock())),
    ("RFQExecutor", {"client": seams.RfqClient, "ledger": seams.Ledger, "market": seams.PriceSource,
                     "limit": seams.ExecutionEngine, "smart": seams.ExecutionEngine},
     lambda p: RFQExecutor(p["client"], p["ledger"], p["market"], clock(), limit=p["limit"], smart=p["smart"])),
    ("TradeExecutor", {"limit": seams.ExecutionEngine, "smart": seams.ExecutionEngine, "rfq": seams.ExecutionEngine},
     lambda p: TradeExecutor(p["limit"], smart=p["smart"], rfq=p["rfq"])),
    ("LifecycleManager", {"ledger": seams.LifecycleLedger, "executor": seams.JobStarter,
                          "market": seams.PriceSource, "client": seams.SettlementClient,
                          "store": seams.LifecycleStore, "alerts": seams.AlertSender},
     lambda p: LifecycleManager(clock=clock(), **p)),
    ("Reconciler", {"client": seams.ReconcilerClient, "ledger": seams.ReconcilerLedger,
                    "lifecycle": seams.ReconcilerLifecycle, "store": seams.ReconcilerStore,
                    "alerts": seams.AlertSender},
     lambda p: Reconciler(clock=clock(), **p)),
    ("Reconciler.attach_runners", {"runner": seams.RunnerControl},
     lambda p: Reconciler(clock=clock(), client=complete(seams.ReconcilerClient),
                          ledger=complete(seams.ReconcilerLedger), lifecycle=complete(seams.ReconcilerLifecycle),
                          store=complete(seams.ReconcilerStore)).attach_runners([p["runner"]])),
    ("CommandProcessor", {"store": seams.Store, "ledger": seams.LedgerOrders,
                          "lifecycle_manager": seams.CommandLifecycle, "account_manager": seams.AccountSource,
                          "alerts": seams.AlertSender, "runner": seams.RunnerControl},
     lambda p: CommandProcessor(_command_ctx({k: v for k, v in p.items() if k != "runner"}), [p["runner"]])),
    ("StrategyRunner", {"lifecycle_manager": seams.RunnerLifecycle, "market_data": seams.MarketDataSource,
                        "executor": seams.ModeRouter, "store": seams.Store, "alerts": seams.AlertSender,
                        "ledger": seams.SymbolBlocks},
     lambda p: StrategyRunner(config(), _runner_ctx(p))),
]

CASES = [pytest.param(service, protocols, build, role, member, id=f"{service}-{role}-{member}")
         for service, protocols, build in SEAMS
         for role, protocol in protocols.items()
         for member in sorted(set().union(*protocol_members(protocol)))]


@pytest.mark.parametrize("service, protocols, build, role, member", CASES)
def test_a_collaborator_missing_one_member_fails_at_construction_naming_it(service, protocols, build, role, member):
    parts = {name: complete(protocol, without=member if name == role else None)
             for name, protocol in protocols.items()}
    with pytest.raises(TypeError) as refused:
        build(parts)
    message = str(refused.value)
    assert message.endswith(f"missing {member}"), message
    assert role in message and service.split(".")[0] in message


@pytest.mark.parametrize("service, protocols, build", [pytest.param(*seam, id=seam[0]) for seam in SEAMS
                                                      if seam[0] not in ("StrategyRunner",)])
def test_complete_fakes_are_accepted(service, protocols, build):
    """The other side of the check: nothing but a missing member is refused."""
    build({name: complete(protocol) for name, protocol in protocols.items()})


def test_the_safety_gates_of_the_issue_fail_closed():
    """``is_blocked``, ``hold_reason``, ``write_errors`` and ``attach_strategy``, once probed with
    ``getattr(..., None)`` and skipped when missing, are now refused at start-up."""
    assert "is_blocked" in protocol_members(seams.LifecycleLedger)[0]
    assert "hold_reason" in protocol_members(seams.RunnerLifecycle)[1]
    assert "write_errors" in protocol_members(seams.Store)[1]
    assert "attach_strategy" in protocol_members(seams.RunnerLifecycle)[0]
    with pytest.raises(TypeError, match="missing attach_strategy"):
        StrategyRunner(config(), _runner_ctx({
            "lifecycle_manager": complete(seams.RunnerLifecycle, without="attach_strategy"),
            "market_data": complete(seams.MarketDataSource), "executor": complete(seams.ModeRouter),
            "store": complete(seams.Store), "alerts": complete(seams.AlertSender)}))


# ---------------------------------------------------------------------------------------------
# The Protocols themselves
# ---------------------------------------------------------------------------------------------


def test_members_come_from_the_protocol_and_its_protocol_bases():
    methods, attributes = protocol_members(seams.ExchangeClient)
    assert {"create_order", "orderbook", "rfq_accept", "all_pending_orders", "delivery_prices",
            "query_api_key"} <= methods
    assert attributes == {"reachability", "time_offset_seconds"}
    methods, attributes = protocol_members(seams.MonitorCallback)
    assert methods == {"__call__", "on_snapshot_error"} and attributes == {"callback_name"}


def test_the_refusal_names_the_role_the_type_and_every_missing_member():
    class HalfAClient:
        def create_order(self, *args: Any, **kwargs: Any) -> int:
            return 1

        cancel_order = None   # present but not callable: missing as a method

    with pytest.raises(TypeError) as refused:
        require("OrderLedger client", HalfAClient(), seams.LedgerClient)
    assert str(refused.value) == ("OrderLedger client: HalfAClient does not implement LedgerClient: missing "
                                  "cancel_order, order_history, query_order")


def test_checking_runs_no_property_of_the_object():
    class Touchy:
        @property
        def reachability(self) -> Any:
            raise AssertionError("a property was run by the check")

        def snapshot(self) -> None:
            return None

    assert missing_members(Touchy(), seams.AccountSource) == []


# ---------------------------------------------------------------------------------------------
# The real classes satisfy their Protocols (what app.build_context wires)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> TradingContext:
    settings = load_settings({"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": "http://127.0.0.1:9",
                              "COINCALL_API_KEY_SIM": "k" * 44, "COINCALL_API_SECRET_SIM": "s" * 32,
                              "STATE_DIR": str(tmp_path / "state")}, dotenv_path=None)
    sim_clock = clock()
    client = CoincallClient(ClientSettings(base_url="http://127.0.0.1:9", max_retries=0), None, sim_clock)
    context = build_context(settings, clock=sim_clock, client=client, state_dir=":memory:")
    yield context
    context.close()


def test_the_wired_services_satisfy_every_protocol_they_are_used_through(ctx: TradingContext):
    used_as: list[tuple[object, list[type]]] = [
        (ctx.http, [seams.ExchangeClient, seams.LedgerClient, seams.MarketDataClient, seams.AccountClient,
                    seams.RfqClient, seams.ReconcilerClient, seams.SettlementClient]),
        (ctx.account_manager, [seams.AccountSource]),
        (ctx.market_data, [seams.MarketDataSource, seams.PriceSource, seams.ChainSource]),
        (ctx.ledger, [seams.Ledger, seams.LedgerOrders, seams.LifecycleLedger, seams.ReconcilerLedger,
                      seams.SymbolBlocks]),
        (ctx.executor.limit, [seams.ExecutionEngine]),
        (ctx.executor.smart, [seams.ExecutionEngine]),
        (ctx.executor.rfq, [seams.ExecutionEngine]),
        (ctx.executor, [seams.ExecutionRouter, seams.ModeRouter, seams.JobStarter]),
        (ctx.lifecycle_manager, [seams.Lifecycle, seams.RunnerLifecycle, seams.CommandLifecycle,
                                 seams.ReconcilerLifecycle, seams.MonitorCallback]),
        (ctx.store, [seams.Store, seams.EventStore, seams.LedgerStore, seams.LifecycleStore,
                     seams.ReconcilerStore]),
        (ctx.alerts, [seams.AlertSender]),
        (ctx.clock, [Clock]),
        (ctx.reconciler, [seams.MonitorCallback, seams.BlockAcceptWatch]),
    ]
    for service, protocols in used_as:
        for protocol in protocols:
            assert missing_members(service, protocol) == [], (type(service).__name__, protocol.__name__)


def test_every_callback_the_daemon_registers_is_a_monitor_callback(ctx: TradingContext):
    runner = StrategyRunner(config(), ctx)
    callbacks = [ctx.reconciler, ctx.lifecycle_manager, StoreWatch(ctx.store, ctx.clock, lambda problem, copy: None),
                 CommandProcessor(ctx, [runner]), runner, StatusReporter(ctx, [runner])]
    assert [missing_members(callback, seams.MonitorCallback) for callback in callbacks] == [[]] * len(callbacks)
    assert missing_members(runner, seams.RunnerControl) == []
    assert [callback.callback_name for callback in callbacks] == [
        "Reconciler", "LifecycleManager", "StoreWatch", "CommandProcessor", "StrategyRunner[seams]", "StatusReporter"]
