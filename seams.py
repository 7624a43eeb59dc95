"""The seams between the services: one ``typing.Protocol`` per collaborator, and ``require``.

Why this module exists:

* A service receives its collaborators (client, market data, ledger, engines, lifecycle,
  store, alerts, clock) from ``app.build_context``; it never builds them. Each parameter is
  typed with the Protocol below that says what the service calls on it, so a reader, the
  type checker (``python -m mypy``) and a structure tool can follow a call across the seam,
  and a test fake knows exactly what it has to implement.
* A collaborator's Protocol holds exactly the members the product calls on it. Where
  services use clearly different parts of one collaborator, the part each one uses is a
  Protocol of its own (``LedgerClient`` is what ``OrderLedger`` calls on the exchange
  client), and the collaborator's Protocol is their union (``ExchangeClient``): a fake
  then implements the part its service uses, fully, and the real class satisfies all.
* ``require(role, obj, protocol)`` is called in the constructors of the services that
  receive collaborators: an object missing a member fails there, at start-up, with a
  ``TypeError`` naming the member, never later when a tick first reaches the call. That is
  what keeps the safety gates closed: a renamed ``is_blocked`` or ``hold_reason`` stops the
  daemon from starting instead of being skipped.

Only the standard library is imported at run time, so every service module may import this
one; the value types the signatures name are imported for the type checker only
(``TYPE_CHECKING``), which keeps the run-time import graph one-way.

The clock's Protocol is ``clock.Clock`` (the lowest module already defines it).
"""
from __future__ import annotations

import functools
import inspect
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Container, Iterable, Iterator, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from account_manager import AccountSnapshot
    from alerts import Alert
    from clock import Clock
    from coincall_client import Reachability
    from execution_job import ExecutionJob, LegTarget
    from coincall_payloads import (
        Instrument,
        OptionRow,
        OrderBook,
        PerpFill,
        PerpOrder,
        PerpPosition,
        PerpSpec,
        PerpTicker,
        FundingPayment,
    )
    from market_data import ChainSnapshot
    from order_ledger import ForeignOrder, Intent, LedgerOrder
    from trade_execution import ExecutionParams, Quantity
    from trade_lifecycle import TradeLifecycle


# =====================================================================================
# The exchange client (coincall_client.CoincallClient)
# =====================================================================================


class LedgerClient(Protocol):
    """The order endpoints ``order_ledger.OrderLedger`` sends through (the only sender of orders).

    Implementations: ``CoincallClient``; test fakes of the exchange (``ScriptedExchange`` in
    tests/unit/test_execution_job.py, ``FakeClient`` in tests/unit/test_rfq.py).
    """

    def create_order(self, symbol: str, qty: float | Decimal, side: int | str, price: float | Decimal,
                     client_order_id: int | str, *, reduce_only: bool = ..., time_in_force: str = ...,
                     trade_type: int = ...) -> int: ...

    def cancel_order(self, order_id: int | str | None = ..., client_order_id: int | str | None = ...) -> None: ...

    def query_order(self, order_id: int | str | None = ..., client_order_id: int | str | None = ...) -> dict: ...

    def order_history(self, **filters: Any) -> Any: ...


class PerpBooks(Protocol):
    """Our active trades' perpetual legs on one symbol, as our books hold them (signed, long > 0).

    Why: the account holds one net position per perpetual (one-way), so two of our trades
    with opposite perp legs show on the account as their difference, and a reduce-only close
    of either is capped at what the account holds on its side: with equal legs, nothing
    (docs/PERPETUALS.md, "Closes across trades that net"). ``OrderLedger`` asks this before it
    caps a reduce-only perp order. Implementation: ``trade_lifecycle.LifecycleManager``.
    """

    def perp_legs(self, symbol: str) -> Mapping[tuple[str, int], float]:
        """{(trade id, leg index): signed net quantity} of every active trade's leg on ``symbol``."""
        ...


class PerpLedgerClient(Protocol):
    """The perpetual-futures order endpoints ``OrderLedger`` sends perp orders through (API.md §14.5),
    and the positions it caps a reduce-only perp order with (docs/PERPETUALS.md).

    A part of its own, handed to the ledger beside its ``LedgerClient``, so the option fakes
    of the tests need not grow perp members. Implementation: ``CoincallClient``.
    """

    def perp_create_order(self, symbol: str, qty: float | Decimal, side: int | str, client_order_id: int | str, *,
                          order_type: Any = ..., price: float | Decimal | None = ..., time_in_force: str = ...,
                          reduce_only: bool = ...) -> int: ...

    def perp_cancel_order(self, *, order_id: int | str | None = ...,
                          client_order_id: int | str | None = ...) -> None: ...

    def perp_order(self, *, order_id: int | str | None = ...,
                   client_order_id: int | str | None = ...) -> PerpOrder: ...

    def perp_order_history(self, *, start_ms: int | None = ..., end_ms: int | None = ...,
                           page_size: int = ...) -> list[PerpOrder]: ...

    def perp_positions(self) -> list[PerpPosition]: ...


class PerpMarketClient(Protocol):
    """The perpetual market endpoints ``market_data.MarketData`` reads a perp's quote, book and
    specification from (API.md §14.3, §14.4). Implementation: ``CoincallClient``."""

    def perp_spec(self, underlying: str) -> PerpSpec: ...

    def perp_ticker(self, underlying: str, *, with_funding: bool = ...) -> PerpTicker: ...

    def perp_order_book(self, underlying: str) -> OrderBook: ...


class PerpAccountClient(Protocol):
    """The perp reads of the account snapshot, the reconciler and the funding attribution:
    positions and funding payments (API.md §14.7). Implementation: ``CoincallClient``."""

    def perp_positions(self) -> list[PerpPosition]: ...

    def perp_funding_records(self, symbol: str, *, start_ms: int | None = ...,
                             end_ms: int | None = ...) -> list[FundingPayment]: ...


class PerpReconcilerClient(Protocol):
    """The perp reads of the reconciler (docs/RECOVERY.md S3 and O2 for perpetuals): open perp
    orders, our perp fills (which carry no clientOrderId: joined to orders by ``orderId``) and
    the perp order history that joins them (API.md §14.5, §14.6).

    A part of its own, handed to ``reconciliation.Reconciler`` beside its ``ReconcilerClient``,
    so the option fakes of the tests need not grow perp members. Implementation:
    ``CoincallClient``.
    """

    def perp_pending_orders(self, symbol: str | None = ...) -> list[PerpOrder]: ...

    def perp_fills(self, *, start_ms: int | None = ..., end_ms: int | None = ...,
                   page_size: int = ...) -> list[PerpFill]: ...

    def perp_order_history(self, *, start_ms: int | None = ..., end_ms: int | None = ...,
                           page_size: int = ...) -> list[PerpOrder]: ...


class MarketDataClient(Protocol):
    """The public market endpoints ``market_data.MarketData`` caches.

    Implementations: ``CoincallClient``; ``FakeClient`` in tests/unit/test_market_data.py.
    """

    def instruments(self, base: str = ...) -> Any: ...

    def option_chain(self, end_time_ms: int | None = ..., index: str = ...) -> Any: ...

    def orderbook(self, symbol: str) -> Any: ...

    def index_price(self, underlying: str = ...) -> float: ...


class AccountClient(Protocol):
    """What ``account_manager.AccountManager`` reads: the account, the positions, reachability.

    Implementations: ``CoincallClient``; tests use the client against the simulator.
    """

    @property
    def reachability(self) -> Reachability: ...

    def account_summary(self) -> Any: ...

    def positions(self) -> Any: ...


class RfqClient(Protocol):
    """The RFQ (block trade) endpoints ``rfq.RFQExecutor``'s jobs call, and the order and position reads they need.

    Implementations: ``CoincallClient``; ``FakeClient`` in tests/unit/test_rfq.py.
    """

    def rfq_create(self, legs: Sequence[Mapping[str, Any]]) -> dict: ...

    def rfq_quotes(self, request_id: int | str) -> list: ...

    def rfq_accept(self, request_id: int | str, quote_id: int | str) -> dict: ...

    def rfq_cancel(self, request_id: int | str) -> Any: ...

    def query_order(self, order_id: int | str | None = ..., client_order_id: int | str | None = ...) -> dict: ...

    def trade_history(self, **filters: Any) -> Any: ...

    def blocktrade_orders(self, **filters: Any) -> Any: ...

    # A block trade carries no reduce-only flag: a reducing RFQ job reads the positions right
    # before it creates the RFQ and before each accept, and takes the RFQ only when they hold
    # what it closes (rfq.position_problem).
    def positions(self) -> Any: ...


class ReconcilerClient(Protocol):
    """The reads ``reconciliation.Reconciler`` compares our records with.

    Implementations: ``CoincallClient``; ``FakeClient`` in tests/unit/test_reconciliation.py.
    """

    def all_pending_orders(self, currency: str | None = ...) -> list[Any]: ...

    def order_history(self, **filters: Any) -> Any: ...

    def trade_history(self, **filters: Any) -> Any: ...

    def blocktrade_orders(self, **filters: Any) -> Any: ...


class SettlementClient(Protocol):
    """The settlement reads (delivery price, exercises) of ``settlement.Settler``, which the
    ``trade_lifecycle.LifecycleManager`` builds from the client it receives.

    Implementations: ``CoincallClient``; ``FakeClient`` in tests/unit/test_trade_lifecycle.py.
    """

    def delivery_prices(self, symbol: str = ...) -> Any: ...

    def estimated_expiration_price(self, end_time_ms: int, index: str = ...) -> Any: ...

    def exercise_history(self, **filters: Any) -> Any: ...


class ExchangeClient(LedgerClient, MarketDataClient, AccountClient, RfqClient, ReconcilerClient, SettlementClient,
                     PerpLedgerClient, PerpMarketClient, PerpAccountClient, PerpReconcilerClient, Protocol):
    """Everything the product calls on the exchange client: each service's part, plus start-up.

    ``app`` checks the key, reads the account id and logs the start-up summary through it;
    ``exchange_connection`` reads the server time and closes it. Implementation:
    ``coincall_client.CoincallClient`` (against Coincall or the simulator).
    """

    def query_api_key(self) -> Any: ...

    def user_info(self) -> Any: ...

    def sync_time(self) -> float: ...

    def sync_time_if_due(self) -> float | None: ...  # the loop's periodic re-sync (API.md 2.2)

    def server_time(self) -> int: ...

    @property
    def time_offset_seconds(self) -> float: ...  # the exchange's clock less ours (the ledger's "not ours" test)

    def close(self) -> None: ...


class EmbeddedSimulator(Protocol):
    """The simulator ``exchange_connection.ExchangeConnection`` runs in paper mode: its paper
    account is saved now and then (``checkpoint``) and at close, then it is stopped.

    Implementations: the simulator's ``SimulatorHandle``; ``FakeSimulator`` in
    tests/unit/test_exchange_connection_checkpoint.py.
    """

    def save_state(self) -> object: ...

    def stop(self) -> None: ...


# =====================================================================================
# The account (account_manager.AccountManager)
# =====================================================================================


class AccountSource(Protocol):
    """What ``position_monitor.PositionMonitor`` polls: one account snapshot, and reachability.

    Implementations: ``AccountManager``; ``ScriptedAccountManager`` in
    tests/unit/test_position_monitor.py.
    """

    @property
    def reachability(self) -> Reachability: ...

    def snapshot(self) -> AccountSnapshot: ...


# =====================================================================================
# Market data (market_data.MarketData)
# =====================================================================================


class PriceSource(Protocol):
    """Quotes, books and instruments: what the execution engines and the lifecycle price with.

    Called by the limit, smart and RFQ jobs and by ``LifecycleManager`` (exit valuation).
    Implementations: ``MarketData`` (and ``RecordingMarket`` subclasses in the integration
    tests); ``FakeMarket`` in tests/unit/test_trade_lifecycle.py and tests/unit/test_rfq.py.
    """

    def quote(self, symbol: str, *, max_age: float = ...) -> OptionRow: ...

    def order_book(self, symbol: str, *, max_age: float = ...) -> OrderBook: ...

    def instrument(self, symbol: str) -> Instrument: ...


class ChainSource(Protocol):
    """The option chain and its clock: what ``option_selection.resolve_legs`` picks strikes from.

    Implementations: ``MarketData``; ``FakeMarket`` in tests/unit/test_option_selection.py.
    """

    @property
    def clock(self) -> Clock: ...

    def instruments(self, base: str = ...) -> list[Instrument]: ...

    def chain_snapshot(self, expiries: Iterable[int], *, underlying: str | None = ...,
                       max_build_seconds: float = ...) -> ChainSnapshot: ...


class PerpChainSource(ChainSource, Protocol):
    """What ``option_selection.resolve_legs`` needs beyond the chain for a perpetual leg: the
    perp's specification, its quote and the underlying's index. Implementation: ``MarketData``."""

    def perp_spec(self, underlying: str) -> PerpSpec: ...

    def quote(self, symbol: str, *, max_age: float = ...) -> OptionRow: ...

    def index_price(self, underlying: str | None = ..., *, max_age: float | None = ...) -> float: ...


class MarketDataSource(PriceSource, ChainSource, Protocol):
    """All of market data: prices, the chain, and the index with its freshness.

    Called by ``strategy.StrategyRunner`` (the index gate, then selection) and by ``app``
    (status and health lines). Implementation: ``MarketData``; test fakes in
    tests/unit/test_runner_gates.py and tests/unit/test_config_refusals.py.
    """

    def index_price(self, underlying: str | None = ..., *, max_age: float | None = ...) -> float: ...

    def index_age(self, underlying: str | None = ...) -> float | None: ...

    @property
    def index_frozen(self) -> bool: ...

    def index_frozen_for(self, underlying: str | None = ...) -> bool: ...


# =====================================================================================
# The order ledger (order_ledger.OrderLedger)
# =====================================================================================


class LedgerOrders(Protocol):
    """The ledger's list of orders: what ``commands.CommandProcessor`` reads for a kill's summary.

    Implementations: ``OrderLedger``; a fake in tests/unit/test_commands.py.
    """

    def orders(self, trade_id: str | None = ..., leg_index: int | None = ...,
               family: Intent | None = ...) -> list[LedgerOrder]: ...


class SymbolBlocks(Protocol):
    """What ``StrategyRunner`` reads of the ledger before it creates a trade: the symbols no order
    may go to (``{symbol: why}``), so an entry never opens a structure one of whose legs the
    ledger would refuse after the others traded.

    Implementations: ``OrderLedger``; ``FakeBlocks`` in tests/unit/test_runner_gates.py.
    """

    def blocked_symbols(self) -> dict[str, str]: ...


class LifecycleLedger(Protocol):
    """What ``LifecycleManager`` reads and asks of the ledger: fills per leg, live orders, blocks.

    Implementations: ``OrderLedger``; ``FakeLedger`` in tests/unit/test_trade_lifecycle.py.
    """

    def restore(self, records: Iterable[dict], *, ended_trades: Container[str] = ...) -> None: ...

    def orders(self, trade_id: str | None = ..., leg_index: int | None = ...,
               family: Intent | None = ...) -> list[LedgerOrder]: ...

    def live_orders(self, trade_id: str | None = ...) -> list[LedgerOrder]: ...

    def leg_fill(self, trade_id: str, leg_index: int, family: Intent) -> tuple[float, float, float]: ...

    def poll(self, order: LedgerOrder) -> LedgerOrder: ...

    def cancel(self, order: LedgerOrder) -> LedgerOrder: ...

    def is_blocked(self, symbol: str) -> bool: ...

    def blocked_symbols(self) -> dict[str, str]: ...

    def unblock(self, symbols: Iterable[str] | None = ...) -> list[str]: ...

    def archive_trade(self, trade_id: str) -> bool: ...

    # The engines' late-fill grace (API.md 11.16) covers their own orders only: before the lifecycle
    # judges a job a restart interrupted, or ends a trade after cancelling its stray orders, each
    # final order that may still report a fill is polled once more.
    def late_fill_possible(self, order: LedgerOrder) -> bool: ...

    def recheck_final(self, order: LedgerOrder) -> float | None: ...


class ReconcilerLedger(Protocol):
    """What ``Reconciler`` checks against the exchange: our orders, their verification, blocks.

    Implementations: ``OrderLedger``; ``FakeLedger`` in tests/unit/test_reconciliation.py.
    """

    @property
    def prefix(self) -> int: ...

    def get(self, client_order_id: int) -> LedgerOrder | None: ...

    def is_ours(self, client_order_id: int) -> bool: ...

    def known_order_ids(self) -> set[int]: ...

    def known_client_order_ids(self) -> list[int]: ...

    def orders(self, trade_id: str | None = ..., leg_index: int | None = ...,
               family: Intent | None = ...) -> list[LedgerOrder]: ...

    def live_orders(self, trade_id: str | None = ...) -> list[LedgerOrder]: ...

    def vanished_orders(self) -> list[LedgerOrder]: ...

    def orders_updated_since(self, since: float) -> list[LedgerOrder]: ...

    def poll(self, order: LedgerOrder) -> LedgerOrder: ...

    def verify(self, order: LedgerOrder) -> str: ...

    def recheck_final(self, order: LedgerOrder) -> float | None: ...

    def block_symbol(self, symbol: str, reason: str) -> bool: ...

    def block_symbol_durably(self, symbol: str, reason: str) -> bool: ...

    def record_block_fill(self, *, trade_id: str, trade_seq: int, leg_index: int, intent: Intent, symbol: str,
                          side: int, qty: float, price: float, fee: float, order_id: int | None,
                          filled_at: float) -> LedgerOrder: ...

    def take_foreign_orders(self) -> list[ForeignOrder]: ...


class Ledger(LedgerOrders, LifecycleLedger, ReconcilerLedger, Protocol):
    """The whole ledger: the lifecycle's and the reconciler's parts, and what the engines place.

    The limit, smart and RFQ engines place, replace and cancel through it; ``app`` lists live
    orders and blocks and cancels at shutdown. Implementation: ``OrderLedger`` (the engines'
    tests use the real ledger over a fake or simulated exchange).
    """

    def place(self, *, trade_id: str, trade_seq: int, leg_index: int, intent: Intent, symbol: str, side: int,
              qty: float, price: float, tick_size: float, supersedes: int | None = ...,
              max_live_per_trade: int | None = ..., lot: float = ...) -> LedgerOrder: ...

    def settled_for_replacement(self, order: LedgerOrder | None, now: float, grace_seconds: float,
                                may_request: Callable[[], bool]) -> bool: ...

    def note_block_accept(self, *, trade_id: str, trade_seq: int, intent: Intent, request_id: str,
                          quote_id: str, legs: Sequence[tuple[int, str, int]],
                          rfq_created_at: float | None = ...) -> None: ...

    def note_block_accept_refused(self, *, trade_id: str, request_id: str, quote_id: str, why: str) -> None: ...

    def cancel_until_final(self, order: LedgerOrder, max_requests: int = ...) -> LedgerOrder: ...

    def blocked_symbols(self) -> dict[str, str]: ...


# =====================================================================================
# Execution engines (trade_execution, multileg_orderbook, rfq)
# =====================================================================================


class TradeRef(Protocol):
    """What an execution job reads of its trade: the id and sequence its client order ids carry.

    Implementations: ``trade_lifecycle.TradeLifecycle``; plain namespaces in the engine tests.
    """

    @property
    def id(self) -> str: ...

    @property
    def seq(self) -> int: ...


class ExecutionEngine(Protocol):
    """One engine: ``start`` returns a job that sends nothing until its first ``advance``.

    ``params`` is the engine's own configuration (``ExecutionParams``, ``SmartExecConfig``,
    ``RFQParams``). Called by ``TradeExecutor`` (routing) and by the RFQ job (its fallback).
    Implementations: ``LimitFillManager``, ``SmartOrderbookExecutor``, ``RFQExecutor``.
    """

    def start(self, trade: TradeRef, legs: list[LegTarget], intent: Intent, params: Any, *,
              best_effort: bool = ...) -> ExecutionJob: ...


class ModeRouter(Protocol):
    """Which engine a strategy's ``execution_mode`` means for one trade (``auto`` by notional).

    Called once per trade by ``strategy.route_trade`` (the runner, and ``main.py check``).
    Implementation: ``trade_execution.TradeExecutor``; ``FakeExecutor`` in
    tests/unit/test_runner_gates.py, ``RecordingExecutor`` in tests/unit/test_config_refusals.py.
    """

    def route(self, mode: str, legs: Sequence[Quantity], index_price: float) -> str: ...


class JobStarter(Protocol):
    """Starts the job of a routed mode: what ``LifecycleManager`` calls for every open, close,
    unwind and kill (it never routes again).

    Implementation: ``trade_execution.TradeExecutor``; ``FakeExecutor`` in
    tests/unit/test_trade_lifecycle.py.
    """

    def start(self, mode: str, trade: TradeRef, legs: list[LegTarget], intent: Intent, params: Any, *,
              best_effort: bool = ...) -> ExecutionJob: ...


class ExecutionRouter(ModeRouter, JobStarter, Protocol):
    """The router in front of the engines: the runner's part and the lifecycle's part.

    Implementation: ``trade_execution.TradeExecutor`` (``app.TradingContext.executor``).
    """


# =====================================================================================
# The lifecycle (trade_lifecycle.LifecycleManager)
# =====================================================================================


class RunnerLifecycle(Protocol):
    """What ``StrategyRunner`` asks of the lifecycle: attach its rules, open, list, force-close.

    Implementations: ``LifecycleManager``; ``FakeLifecycle`` in tests/unit/test_runner_gates.py,
    ``RecordingLifecycle`` in tests/unit/test_config_refusals.py.
    """

    @property
    def hold_reason(self) -> str | None: ...

    @property
    def entry_holds(self) -> dict[str, str]: ...

    @property
    def persistence_errors(self) -> int: ...

    def attach_strategy(self, strategy: str, *, exit_conditions: Iterable[Any] = ...,
                        execution_params: ExecutionParams | None = ...,
                        on_opened: Callable[[TradeLifecycle], Any] | None = ...,
                        on_closed: Callable[[TradeLifecycle], Any] | None = ..., smart_config: Any = ...,
                        rfq_params: Any = ...) -> None: ...

    def create(self, strategy: str, resolved_legs: Sequence[Any], *, execution_mode: str = ...,
               exit_conditions: Iterable[Any] = ..., execution_params: ExecutionParams | None = ...,
               metadata: dict | None = ..., on_opened: Callable[[TradeLifecycle], Any] | None = ...,
               on_closed: Callable[[TradeLifecycle], Any] | None = ..., smart_config: Any = ...,
               rfq_params: Any = ...) -> TradeLifecycle: ...

    def trades(self, strategy: str | None = ...) -> list[TradeLifecycle]: ...

    def active_trades(self, strategy: str | None = ...) -> list[TradeLifecycle]: ...

    def force_close(self, trade_id: str, reason: str = ...) -> bool: ...

    def release_blocks(self, strategy: str | None = ...) -> list[str]: ...


class CommandLifecycle(Protocol):
    """What ``commands.CommandProcessor`` asks of the lifecycle for a kill: the trades, force-close
    them, and (``--all-positions``) adopt and close what the account holds beyond them; for a
    resume, lift the symbol blocks.

    Implementations: ``LifecycleManager``; ``FakeLifecycle`` in tests/unit/test_commands.py.
    """

    @property
    def hold_reason(self) -> str | None: ...

    def get(self, trade_id: str) -> TradeLifecycle | None: ...

    def trades(self, strategy: str | None = ...) -> list[TradeLifecycle]: ...

    def active_trades(self, strategy: str | None = ...) -> list[TradeLifecycle]: ...

    def force_close(self, trade_id: str, reason: str = ...) -> bool: ...

    def adopt_external(self, snapshot: AccountSnapshot, *, skip: frozenset[str] = ...) -> str | None: ...

    def release_blocks(self, strategy: str | None = ...) -> list[str]: ...


class ReconcilerLifecycle(Protocol):
    """What ``Reconciler`` does to the lifecycle: hold it until the positions are known, hold
    entries on a mismatch, adopt late fills, book or reverse an external close.

    Implementations: ``LifecycleManager``; ``FakeLifecycle`` in tests/unit/test_reconciliation.py,
    ``OneTradeLifecycle`` in tests/integration/test_reconciliation_late_fills.py.
    """

    def hold(self, reason: str) -> None: ...

    def release(self) -> None: ...

    def hold_entries(self, key: str, reason: str) -> bool: ...

    def release_entries(self, key: str) -> bool: ...

    def get(self, trade_id: str) -> TradeLifecycle | None: ...

    def trades(self, strategy: str | None = ...) -> list[TradeLifecycle]: ...

    def active_trades(self, strategy: str | None = ...) -> list[TradeLifecycle]: ...

    def has_job(self, trade_id: str) -> bool: ...

    def refresh_fills(self, trade_id: str) -> None: ...

    def record_external_close(self, trade_id: str, leg_index: int, qty: float, price: float, *,
                              detail: str) -> TradeLifecycle | None: ...

    def reversible_external_closes(self) -> list[TradeLifecycle]: ...

    def reverse_external_close(self, trade_id: str, detail: str) -> TradeLifecycle | None: ...


class BlockAcceptWatch(Protocol):
    """Whether an RFQ accept of a trade, recorded before a restart, is still unresolved
    (docs/RECOVERY.md R1-R3): what ``LifecycleManager`` asks before it judges a trade that a
    restart interrupted, or ends one for good.

    True while the accept's block trade has been neither found (its fills then recorded,
    R1) nor given up after the look-up window (R3), and also before the start-up look-up
    has run at all: the lifecycle then waits, because a fill that lands on an ended trade
    is a position nobody manages. Implementation: ``reconciliation.Reconciler`` (answered by
    ``order_reconciliation.OrderReconciler`` from its pending accept markers), handed over
    with ``LifecycleManager.watch_block_accepts`` by ``app.build_context``; a fake in
    tests/unit/test_lifecycle_safety.py.
    """

    def accept_in_doubt(self, trade_id: str) -> bool: ...

    def block_trade_found(self, trade_id: str, request_id: str) -> bool:
        """The block trade of this trade's RFQ was found in the exchange's list since the
        restart (R1: every leg it shows was booked), so what is not booked of it is not ours
        to wait for (a leg the record shows on the other side, say)."""
        ...


class Lifecycle(RunnerLifecycle, CommandLifecycle, ReconcilerLifecycle, Protocol):
    """The whole lifecycle: the runner's, the command processor's and the reconciler's parts,
    plus what ``app`` calls at start-up, in the loop and at shutdown.

    Implementation: ``trade_lifecycle.LifecycleManager`` (also registered on the monitor,
    as a ``MonitorCallback``, by ``app.build_context``).
    """

    @property
    def breaker_trips(self) -> int: ...

    def recover(self) -> dict: ...

    def pin_hold(self, reason: str) -> None: ...

    def unmanaged_trades(self) -> list[TradeLifecycle]: ...

    def failing_trades(self) -> dict[str, float]: ...

    def trade_count(self) -> int: ...

    def has_active_jobs(self) -> bool: ...

    def act_only_on(self, strategies: Iterable[str]) -> None: ...


# =====================================================================================
# The state store (persistence.StateStore)
# =====================================================================================


class EventStore(Protocol):
    """The store's event table: where ``events.EventJournal`` (and the ledger and lifecycle) append.

    Implementations: ``StateStore``; the store fakes below.
    """

    def append_event(self, kind: str, payload: dict, ts: float) -> int: ...


class LedgerStore(EventStore, Protocol):
    """Where ``OrderLedger`` records each order before it is sent, and its events; and where it
    reads back the orders of a finished trade it no longer keeps in memory (``archive_trade``).

    Implementations: ``StateStore``; ``MemoryStore`` in tests/unit/test_rfq.py,
    ``RecordingStore`` in tests/integration/test_ledger_sim.py.
    """

    def save_order(self, record: dict) -> None: ...

    def load_orders(self, trade_id: str | None = ...) -> list[dict]: ...

    def load_order(self, client_order_id: int) -> dict | None: ...

    # clientOrderIds with our prefix seen on the exchange and never recorded: the attempts of
    # their leg continue above them (docs/RECOVERY.md O2, L3).
    def client_id_floor(self, trade_seq: int, leg_index: int, intent: int | None = ...) -> int: ...

    # Symbol blocks that outlive a restart until an operator lifts them (row L3).
    def keep_symbol_block(self, symbol: str, reason: str) -> None: ...

    def lift_symbol_blocks(self, symbols: Iterable[str]) -> None: ...

    def kept_symbol_blocks(self) -> dict[str, str]: ...


class LifecycleStore(EventStore, Protocol):
    """Where ``LifecycleManager`` writes each trade before its next request, and reloads them.

    Implementations: ``StateStore``; ``FakeStore`` in tests/unit/test_trade_lifecycle.py.
    """

    def next_trade_seq(self) -> int: ...

    def save_trade(self, record: dict) -> None: ...

    def load_trades(self, strategy: str | None = ...) -> list[dict]: ...

    def iter_orders(self) -> Iterator[dict]: ...

    # At a restart the lifecycle reads the RFQ accepts recorded before the crash
    # (``rfq_accept_sent``): a trade with one is not judged until the accept is resolved.
    def events(self, kind: str | Iterable[str] | None = ..., *, after_id: int = ...,
               limit: int | None = ...) -> list[dict]: ...


class ReconcilerStore(Protocol):
    """What ``Reconciler`` reads and writes in the store: counters, events, paused runner state.

    Implementations: ``StateStore``; ``FakeStore`` in tests/unit/test_reconciliation.py.
    """

    @property
    def path(self) -> str: ...

    def counter(self, name: str) -> int: ...

    def raise_counter_to(self, name: str, value: int) -> int: ...

    def events(self, kind: str | Iterable[str] | None = ..., *, after_id: int = ...,
               limit: int | None = ...) -> list[dict]: ...

    def holds_nothing(self) -> bool: ...

    def load_runner_state(self, name: str) -> dict | None: ...

    def save_runner_state(self, name: str, state: dict) -> None: ...

    def raise_client_id_floors(self, seen: Iterable[tuple[int, int, int, int]]) -> int: ...


class KnownPositionStore(Protocol):
    """Where ``PositionReconciler`` keeps its memory of what the latest positions read that was not
    short showed beyond our trades (docs/RECOVERY.md S2), so that a restart nets the outside flow
    against it as the running daemon did. Both raise ``TraderError`` (a store error) on failure.

    Implementations: ``StateStore``; ``CountingStore`` and ``BrokenStore`` in
    tests/unit/test_known_positions_persisted.py.
    """

    def save_known_positions(self, known: Mapping[str, tuple[float, float]]) -> None: ...

    def load_known_positions(self) -> dict[str, tuple[float, float]]: ...


class Store(LedgerStore, LifecycleStore, ReconcilerStore, Protocol):
    """The whole store: the ledger's, the lifecycle's and the reconciler's parts, plus the
    runner state, the operator command queue and the file checks ``app`` and its
    ``persistence.StoreWatch`` make.

    Called by ``StrategyRunner`` (its saved state), ``CommandProcessor`` (the queue), the
    event journal and ``app``. Implementation: ``persistence.StateStore`` (the runner and
    command tests use a real one in memory).
    """

    @property
    def created(self) -> bool: ...

    @property
    def write_errors(self) -> int: ...

    @property
    def relocated_from(self) -> str | None: ...

    def runner_names(self) -> list[str]: ...

    def add_command(self, kind: str, payload: dict) -> int: ...

    def commands(self, status: str | Iterable[str] | None = ...) -> list[dict]: ...

    def command(self, command_id: int) -> dict | None: ...

    def update_command(self, command_id: int, status: str, result: Any = ...) -> dict: ...

    @property
    def lost(self) -> str | None: ...

    def check_file(self) -> str | None: ...

    def relocate(self) -> Path | None: ...

    def close(self) -> None: ...


# =====================================================================================
# Alerts, runners and monitor callbacks
# =====================================================================================


class AlertSender(Protocol):
    """Anything that takes an alert for a human: ``alert(level, kind, message, **detail)``.

    (Named for what it does; ``alerts.AlertSink`` is the implementation, which also writes
    alerts.jsonl.) Called by the lifecycle, the reconciler, the runners, the command processor
    and the outage listener. Implementations: ``AlertSink``; ``FakeAlerts`` in the unit tests.
    """

    def alert(self, level: str, kind: str, message: str, **detail: Any) -> Alert | None: ...


class RunnerControl(Protocol):
    """What the reconciler and the command processor may do to a strategy's runner: pause it
    (a mismatch, a kill) and resume it.

    Implementations: ``strategy.StrategyRunner``; ``FakeRunner`` in tests/unit/test_commands.py
    and tests/unit/test_reconciliation.py.
    """

    @property
    def name(self) -> str: ...

    @property
    def is_paused(self) -> bool: ...

    @property
    def pause_reason(self) -> str: ...

    @property
    def paused_for_good(self) -> bool: ...

    def pause(self, reason: str, *, until: float | None = ...) -> None: ...

    def resume(self) -> None: ...


class MonitorCallback(Protocol):
    """What ``PositionMonitor`` runs on every wake, in registration order.

    ``callback(snapshot)`` with the latest good snapshot, or ``on_snapshot_error(error)``
    when the latest poll failed (a callback never gets a made-up snapshot);
    ``callback_name`` names it in the log and the health line's ``failing_callbacks``.
    Implementations: ``Reconciler``, ``LifecycleManager``, ``StoreWatch``,
    ``CommandProcessor``, ``StrategyRunner``, ``app.StatusReporter``; recorders in the tests.
    """

    @property
    def callback_name(self) -> str: ...

    def __call__(self, snapshot: AccountSnapshot, /) -> None: ...

    def on_snapshot_error(self, error: Exception, /) -> None: ...


# =====================================================================================
# Conformance at construction
# =====================================================================================


@functools.lru_cache(maxsize=None)
def protocol_members(protocol: type) -> tuple[frozenset[str], frozenset[str]]:
    """``(methods, attributes)`` a Protocol declares, its Protocol bases included.

    Read from the classes themselves (Python 3.11 has no ``typing.get_protocol_members``):
    functions defined in a Protocol's body are methods; annotations and properties are
    attributes. Private names are the Protocol machinery's, except ``__call__``.
    """
    methods: set[str] = set()
    attributes: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (object, Protocol) or not vars(klass).get("_is_protocol", False):
            continue
        attributes.update(name for name in vars(klass).get("__annotations__", {}) if not name.startswith("_"))
        for name, value in vars(klass).items():
            if name.startswith("_") and name != "__call__":
                continue
            if isinstance(value, property):
                attributes.add(name)
            elif inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
                methods.add(name)
    return frozenset(methods), frozenset(attributes)


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (a method must be callable), sorted.

    Looked up statically (``inspect.getattr_static``): checking runs no property of ``obj``.
    """
    methods, attributes = protocol_members(protocol)
    missing = []
    for name in sorted(methods | attributes):
        try:
            value = inspect.getattr_static(obj, name)
        except AttributeError:
            missing.append(name)
            continue
        if name in methods and not (callable(value) or isinstance(value, (property, staticmethod, classmethod))):
            missing.append(name)
    return missing


def require_optional(role: str, obj: object | None, protocol: type) -> None:
    """``require`` for a collaborator a service may run without (``None``: nothing to check)."""
    if obj is not None:
        require(role, obj, protocol)


def require(role: str, obj: object, protocol: type) -> None:
    """Refuse, with a ``TypeError`` naming what is missing, a collaborator that does not
    implement ``protocol``; called where a service receives it (its constructor)."""
    missing = missing_members(obj, protocol)
    if missing:
        raise TypeError(f"{role}: {type(obj).__name__} does not implement {protocol.__name__}: "
                        f"missing {', '.join(missing)}")
