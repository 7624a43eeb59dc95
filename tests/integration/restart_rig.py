"""A crash-and-restart rig for the reconciliation tests (docs/RECOVERY.md); it holds no test.

Why it exists: every row of the recovery decision table needs the same three moves - run a
daemon until the store holds the state the row is about, let it die without any shutdown
logic, change the exchange "behind its back", then start a new daemon on the same state
directory and the same simulator. ``DaemonLife`` wires one life exactly like
``app.run_locked`` (context, ``recover()``, runners, ``attach_runners``, runners on the
monitor) and drives it with ``PositionMonitor.run_once()`` on the simulator's speed-0 clock,
so every wait moves simulated time only. ``Outside`` is somebody else trading on the same
account over signed HTTP: orders without a clientOrderId, or with a chosen one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import requests

from app import build_context
from config import load_settings
from contracts import Contract
from option_selection import strangle
from order_ledger import Intent, LedgerOrder, OrderStatus, build_client_order_id, parse_client_order_id
from persistence import StateStore
from strategy import StrategyConfig, StrategyRunner, max_hold_hours
from trade_execution import ExecutionParams
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

PREFIX = 101
STRATEGY = "recon_strangle"
QUICK = ExecutionParams(fill_timeout_seconds=10.0, max_requote_rounds=5, grace_seconds=2.0,
                        price_wait_seconds=20.0)
BUY = 1
SELL = 2


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


# Tuesday 2026-03-03 09:00 UTC: the next daily expiry (4MAR26 08:00) is 23 hours away.
START = utc(2026, 3, 3, 9, 0)


def strangle_config(name: str = STRATEGY, qty: float = 0.01, *, hold_hours: float = 24.0,
                    cooldown_seconds: float = 0.0, max_concurrent_trades: int = 1,
                    execution_params: ExecutionParams = QUICK, execution_mode: str = "limit",
                    dte: Any = "next", **extra: Any) -> StrategyConfig:
    """A long strangle that opens at the first poll and holds until ``hold_hours``."""
    return StrategyConfig(
        name=name,
        legs=strangle(qty, call_delta=0.25, put_delta=-0.25, dte=dte, side=BUY),
        exit_conditions=[max_hold_hours(hold_hours)],
        execution_mode=execution_mode,
        max_concurrent_trades=max_concurrent_trades,
        cooldown_seconds=cooldown_seconds,
        check_interval_seconds=1.0,
        execution_params=execution_params,
        **extra,
    )


class Killed(BaseException):
    """Raised inside the daemon to stop it the hard way, in the middle of a step.

    A ``BaseException`` so that no ``except Exception`` of the product catches it: nothing
    after the raise runs, as with SIGKILL (follow it with ``DaemonLife.crash()``).
    """


# ---------------------------------------------------------------------------------------------
# One life of the daemon
# ---------------------------------------------------------------------------------------------


class DaemonLife:
    """One daemon process on ``root/state`` talking to ``sim``: built like ``app.run_locked``.

    ``crash()`` closes the store and the connection and nothing else: every write was
    already committed, so that is all a SIGKILL leaves behind.
    """

    def __init__(self, sim: Any, root: Path, configs: Sequence[StrategyConfig], *,
                 poll_interval: float = 10.0) -> None:
        self.sim = sim
        self.clock = sim.clock
        self.root = Path(root)
        env = {
            "TRADING_ENVIRONMENT": "sim",
            "COINCALL_BASE_URL": sim.base_url,
            "COINCALL_API_KEY_SIM": sim.api_key,
            "COINCALL_API_SECRET_SIM": sim.api_secret,
            "STATE_DIR": str(self.state_dir),
            "LOG_DIR": str(self.log_dir),
            "POLL_INTERVAL_SECONDS": str(int(poll_interval)),
        }
        settings = load_settings(env, dotenv_path=None)
        self.started_at = self.clock.now()
        self.ctx = build_context(settings, clock=self.clock, poll_interval=poll_interval,
                                 state_dir=self.state_dir, log_dir=self.log_dir)
        self.closed = False
        self.recovery = self.ctx.lifecycle_manager.recover()
        self.runners = [StrategyRunner(config, self.ctx) for config in configs]
        self.ctx.reconciler.attach_runners(self.runners)
        for runner in self.runners:
            self.ctx.position_monitor.register(runner)

    # ---- paths and services -----------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lifecycle(self) -> Any:
        return self.ctx.lifecycle_manager

    @property
    def ledger(self) -> Any:
        return self.ctx.ledger

    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def reconciler(self) -> Any:
        return self.ctx.reconciler

    def runner(self, name: str = STRATEGY) -> Any:
        return next(runner for runner in self.runners if runner.name == name)

    def trades(self, strategy: str | None = None) -> list[TradeLifecycle]:
        return self.lifecycle.trades(strategy)

    def only_trade(self) -> TradeLifecycle:
        trades = self.trades()
        assert len(trades) == 1, [t.id for t in trades]
        return trades[0]

    def alerts(self, kind: str | None = None, level: str | None = None) -> list[Any]:
        return [a for a in self.ctx.alerts.recent(1000)
                if (kind is None or a.kind == kind) and (level is None or a.level == level)]

    # ---- driving ------------------------------------------------------------------------------

    def wake(self, times: int = 1) -> None:
        """``times`` monitor iterations: tick, then wait (simulated) until the next wake."""
        for _ in range(times):
            self.ctx.position_monitor.run_once()

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Wake until ``seconds`` of simulated time passed or ``until()`` holds (checked after each wake)."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.ctx.position_monitor.run_once()
            if until is not None and until():
                return True
        return until() if until is not None else True

    def run_until_open(self, seconds: float = 300.0) -> TradeLifecycle:
        """Run until the strategy's first trade is OPEN (the usual first life)."""
        assert self.run(seconds, until=lambda: any(t.state is TradeState.OPEN for t in self.trades())), \
            [(t.id, t.state) for t in self.trades()]
        return next(t for t in self.trades() if t.state is TradeState.OPEN)

    def crash(self) -> None:
        """What SIGKILL leaves: committed state, nothing else (no shutdown report, no cancel)."""
        if not self.closed:
            self.closed = True
            self.ctx.close()


class Lives:
    """Every life a test started, so each is closed at teardown even when an assert fails."""

    def __init__(self, sim: Any, root: Path) -> None:
        self.sim = sim
        self.root = Path(root)
        self.started: list[DaemonLife] = []

    def start(self, configs: Sequence[StrategyConfig] = (), **kwargs: Any) -> DaemonLife:
        for life in self.started:
            assert life.closed, "a new life while the previous one still runs"
        life = DaemonLife(self.sim, self.root, list(configs), **kwargs)
        self.started.append(life)
        return life

    def close_all(self) -> None:
        for life in self.started:
            life.crash()

    def store(self) -> StateStore:
        """The state store opened directly (between lives): for seeding and reading records."""
        path = self.root / "state" / "trader.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return StateStore(path)


# ---------------------------------------------------------------------------------------------
# The exchange side: somebody else on the same account, and what the simulator says
# ---------------------------------------------------------------------------------------------


def snap_to_tick(price: float, tick: float, up: bool) -> float:
    steps = price / tick
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return round(max(1, steps) * tick, 8)


class Outside:
    """Orders on the daemon's account that the daemon did not send (signed HTTP, real endpoints)."""

    def __init__(self, sim: Any, call: Callable[..., Any]) -> None:
        self.sim = sim
        self._call = call

    def call(self, method: str, path: str, params: dict[str, Any]) -> dict:
        """One signed request; a throttled one (10000) is sent again one simulated second later."""
        for _ in range(5):
            body = self._call(method, path, params)
            if body.get("code") != 10000:
                return body
            self.sim.clock.advance(1.0)
        return body

    def _public(self, path: str) -> Any:
        body = requests.get(self.sim.base_url + path, timeout=10).json()
        assert body["code"] == 0, body
        return body["data"]

    def tick_size(self, symbol: str) -> float:
        for inst in self._public("/open/option/getInstruments/BTC"):
            if inst["symbolName"] == symbol:
                return float(inst["tickSize"])
        raise AssertionError(f"no instrument {symbol}")

    def book(self, symbol: str) -> dict:
        return self._public(f"/open/option/order/orderbook/v1/{symbol}")

    def mark(self, symbol: str) -> float:
        return float(self._public(f"/open/option/detail/v1/{symbol}")["markPrice"])

    def order(self, symbol: str, side: int, qty: float, price: float, *, client_order_id: int | None = None,
              reduce_only: bool = False) -> int:
        params: dict[str, Any] = {"symbol": symbol, "qty": qty, "tradeSide": side, "tradeType": 1,
                                  "price": price}
        if client_order_id is not None:
            params["clientOrderId"] = client_order_id
        if reduce_only:
            params["reduceOnly"] = 1
        body = self.call("POST", "/open/option/order/create/v1", params)
        assert body["code"] == 0, body
        return int(body["data"])  # a bare int64 (API.md 8.1)

    def crossing(self, symbol: str, side: int, qty: float, **kwargs: Any) -> int:
        """An order that fills at once against the book (buy above the ask, sell below the bid)."""
        book, tick = self.book(symbol), self.tick_size(symbol)
        if side == BUY:
            price = snap_to_tick(float(book["asks"][0]["price"]) * 1.2, tick, up=True)
        else:
            price = snap_to_tick(float(book["bids"][0]["price"]) * 0.8, tick, up=False)
        order_id = self.order(symbol, side, qty, price, **kwargs)
        view = self.query(order_id)
        assert int(view["state"]) == 1, view  # filled at once
        return order_id

    def resting(self, symbol: str, side: int, qty: float, **kwargs: Any) -> int:
        """An order far from the touch (a bid of one tick, an ask three times the mark): it rests."""
        tick = self.tick_size(symbol)
        price = tick if side == BUY else snap_to_tick(self.mark(symbol) * 3 + 200, tick, up=True)
        order_id = self.order(symbol, side, qty, price, **kwargs)
        assert int(self.query(order_id)["state"]) == 0
        return order_id

    def cancel(self, order_id: int) -> None:
        body = self.call("POST", "/open/option/order/cancel/v1", {"orderId": order_id})
        assert body["code"] == 0, body

    def query(self, order_id: int) -> dict:
        body = self.call("GET", "/open/option/order/singleQuery/v1", {"orderId": order_id})
        assert body["code"] == 0, body
        return body["data"]

    def position(self, symbol: str) -> float:
        return self.sim.exchange.position_of(None, symbol)

    def flatten(self, symbol: str) -> None:
        """The position disappears without any fill (a manual transfer, an exchange-side close)."""
        self.sim.exchange.set_position(None, symbol, 0.0, 0.0)


def order_view_state(sim: Any, order_id: int) -> int:
    return next(int(o["state"]) for o in sim.exchange.orders() if int(o["orderId"]) == order_id)


def creates_since(sim: Any, since: float) -> list[Any]:
    return [r for r in sim.requests_for("create_order") if r.time_ms >= since * 1000]


def cancels_since(sim: Any, since: float) -> list[Any]:
    return [r for r in sim.requests_for("cancel_order") if r.time_ms >= since * 1000]


def coid_of(record: Any) -> int:
    return int(record.params["clientOrderId"])


def intent_of(record: Any) -> int:
    return parse_client_order_id(coid_of(record)).intent


# ---------------------------------------------------------------------------------------------
# Writing records the way the daemon would have (for states a live run cannot stop in)
# ---------------------------------------------------------------------------------------------


@dataclass
class SeedLeg:
    """A leg to seed: its instrument (from the simulator's instrument list) and our side/qty."""

    index: int
    symbol: str
    option_type: str
    strike: float
    expiry_ms: int
    side: int
    qty: float

    @classmethod
    def of(cls, leg: TradeLeg) -> "SeedLeg":
        """The seed form of a leg the daemon already trades (to add orders for it)."""
        return cls(leg.index, leg.symbol, leg.option_type, leg.strike, leg.expiry_ms, leg.side, leg.qty)

    def to_leg(self) -> TradeLeg:
        contract = Contract(symbol=self.symbol, underlying="BTC", option_type=self.option_type, strike=self.strike,
                            expiry_ms=self.expiry_ms)
        return TradeLeg(index=self.index, contract=contract, side=self.side, qty=self.qty)


def pick_legs(sim: Any, qty: float = 0.01, side: int = BUY, count: int = 2) -> list[SeedLeg]:
    """Near-the-money legs of the second expiry with two-sided books: a call, then a put (``count`` of them).

    The second expiry, because the first may be close to its pre-expiry halt.
    """
    data = requests.get(sim.base_url + "/open/option/getInstruments/BTC", timeout=10).json()["data"]
    expiries = sorted({int(i["expirationTimestamp"]) for i in data})
    expiry = expiries[1]
    chosen: list[SeedLeg] = []
    for option_type in ("C", "P"):
        rows = sorted((i for i in data if int(i["expirationTimestamp"]) == expiry
                       and i["symbolName"].endswith("-" + option_type)), key=lambda i: float(i["strike"]))
        middle = len(rows) // 2
        for inst in rows[middle:] + rows[:middle]:
            book = requests.get(f"{sim.base_url}/open/option/order/orderbook/v1/{inst['symbolName']}",
                                timeout=10).json()["data"]
            if book["bids"] and book["asks"]:
                chosen.append(SeedLeg(len(chosen), inst["symbolName"], option_type, float(inst["strike"]),
                                      expiry, side, qty))
                break
        if len(chosen) >= count:
            break
    assert len(chosen) == count
    return chosen


def seed_trade(store: StateStore, seq: int, legs: Iterable[SeedLeg], state: TradeState, *,
               strategy: str = STRATEGY, created_at: float, opened_at: float | None = None,
               exit_reason: str | None = None, execution_mode: str = "limit", metadata: dict | None = None) -> str:
    """Write a trade record (and re-seed the trade sequence) as the lifecycle would have."""
    trade = TradeLifecycle(id=f"T{seq:09d}", seq=seq, strategy=strategy, state=state,
                           legs=[leg.to_leg() for leg in legs], execution_mode=execution_mode,
                           created_at=created_at, opened_at=opened_at, exit_reason=exit_reason,
                           exit_decided_at=created_at if exit_reason else None, metadata=dict(metadata or {}))
    store.save_trade(trade.to_record())
    store.raise_counter_to("trade_seq", seq)
    return trade.id


def seed_order(store: StateStore, *, trade_seq: int, leg: SeedLeg, intent: Intent, attempt: int, side: int,
               qty: float, price: float, order_id: int | None, sent_at: float,
               status: OrderStatus = OrderStatus.LIVE, view: dict | None = None) -> LedgerOrder:
    """Write a ledger order: by default LIVE with its orderId, as right after a send (never polled)."""
    coid = build_client_order_id(PREFIX, trade_seq, leg.index, intent, attempt)
    order = LedgerOrder(client_order_id=coid, trade_id=f"T{trade_seq:09d}", trade_seq=trade_seq,
                        leg_index=leg.index, intent=intent, attempt=attempt, supersedes=None, symbol=leg.symbol,
                        side=side, qty=qty, price=price, reduce_only=Intent(intent).reduce_only, status=status,
                        order_id=order_id, sent_at=sent_at, updated_at=sent_at)
    if view is not None:
        order.filled_qty = float(view.get("fillQty") or 0.0)
        order.avg_price = float(view.get("avgPrice") or 0.0)
        order.fee = float(view.get("fee") or 0.0)
        order.exchange_state = int(view["state"])
    store.save_order(order.to_record())
    return order


@dataclass
class Placed:
    """An order the test sent with one of our clientOrderIds (the daemon 'sent' it, then died)."""

    coid: int
    order_id: int
    leg: SeedLeg
    side: int
    qty: float
    price: float
    sent_at: float


def place_as_daemon(outside: Outside, *, trade_seq: int, leg: SeedLeg, intent: Intent, attempt: int,
                    side: int, qty: float, fill: bool) -> Placed:
    """Send an order with our clientOrderId, filled at once (``fill``) or resting far from the touch."""
    coid = build_client_order_id(PREFIX, trade_seq, leg.index, intent, attempt)
    reduce_only = Intent(intent).reduce_only
    if fill:
        order_id = outside.crossing(leg.symbol, side, qty, client_order_id=coid, reduce_only=reduce_only)
    else:
        order_id = outside.resting(leg.symbol, side, qty, client_order_id=coid, reduce_only=reduce_only)
    view = outside.query(order_id)
    return Placed(coid, order_id, leg, side, qty, float(view["price"]), outside.sim.clock.now())


def record_placed(store: StateStore, placed: Placed, *, trade_seq: int, intent: Intent, attempt: int,
                  status: OrderStatus = OrderStatus.LIVE, view: dict | None = None) -> LedgerOrder:
    return seed_order(store, trade_seq=trade_seq, leg=placed.leg, intent=intent, attempt=attempt,
                      side=placed.side, qty=placed.qty, price=placed.price, order_id=placed.order_id,
                      sent_at=placed.sent_at, status=status, view=view)
