"""The simulator's route table: which Coincall endpoint maps to which exchange handler.

This table is the contract between the HTTP layer (``server.py``: auth, envelopes,
faults, rate limits) and the exchange model (``exchange.py``: matching, accounts, RFQ).
Each handler is a method of ``SimExchange`` named ``handler`` and called as
``handler(account, params)`` where ``params`` holds the query/body/form fields plus the
path parameters (named as in ``path``); it returns the envelope's ``data`` value or
raises ``SimError(code, msg)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PUBLIC = "public"      # works unsigned; a present signature is still verified
SIGNED = "signed"      # requires valid signature headers


@dataclass(frozen=True)
class Route:
    method: str
    path: str                  # template; "{name}" segments become params[name]
    handler: str               # SimExchange method name
    auth: str = SIGNED
    group: str | None = None   # rate-limit group (API.md 3.4), None = unlimited
    body: str = "json"         # "json", "form" (RFQ accept/cancel) or "query"
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        object.__setattr__(self, "pattern", re.compile(regex))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        m = self.pattern.match(path)
        return m.groupdict() if m else None


# Rate-limit groups: (requests, window seconds), API.md 3.4, enforced per user or IP.
RATE_LIMITS: dict[str, tuple[int, float]] = {
    "public_config": (10, 2.0),
    "positions": (5, 1.0),
    "pending": (5, 1.0),
    "history": (5, 1.0),
    "account": (2, 1.0),
    "orderbook": (30, 2.0),
    "place": (30, 2.0),
    "cancel": (30, 2.0),
    "funding": (10, 2.0),
}

ROUTES: tuple[Route, ...] = (
    # --- public: time, config, market data -------------------------------------------
    Route("GET", "/time", "server_time", PUBLIC),
    Route("GET", "/open/public/time/v1", "server_time", PUBLIC),
    Route("GET", "/open/public/config/v1", "public_config", PUBLIC, "public_config", "query"),
    Route("GET", "/open/option/getInstruments/{baseCurrency}", "instruments", PUBLIC, None, "query"),
    Route("GET", "/open/option/get/v1/{index}", "option_chain", PUBLIC, None, "query"),
    Route("GET", "/open/option/detail/v1/{symbol}", "option_detail", PUBLIC, None, "query"),
    Route("GET", "/open/option/order/orderbook/v1/{symbol}", "orderbook", PUBLIC, "orderbook", "query"),
    Route("GET", "/open/option/trade/lasttrade/v1/{symbol}", "last_trades", PUBLIC, None, "query"),
    Route("GET", "/open/futures/market/symbol/v1", "futures_symbols", PUBLIC, None, "query"),
    Route("GET", "/open/option/getEstimatedExpirationPrice/v1", "estimated_expiration_price", PUBLIC, None, "query"),
    Route("GET", "/open/option/get-delivery-prices/v1", "delivery_prices", PUBLIC, None, "query"),
    # --- user and account -------------------------------------------------------------
    Route("GET", "/open/auth/user/query-api", "query_api_key", SIGNED, None, "query"),
    Route("GET", "/open/user/info/v1", "user_info", SIGNED, None, "query"),
    Route("GET", "/open/account/summary/v1", "account_summary", SIGNED, "account", "query"),
    Route("GET", "/open/option/position/get/v1", "positions", SIGNED, "positions", "query"),
    # --- orders -----------------------------------------------------------------------
    Route("GET", "/open/option/order/pending/v1", "pending_orders", SIGNED, "pending", "query"),
    Route("POST", "/open/option/order/create/v1", "create_order", SIGNED, "place", "json"),
    Route("POST", "/open/option/order/batchCreate/v1", "batch_create_orders", SIGNED, "place", "json"),
    Route("POST", "/open/option/order/modify/v1", "modify_order", SIGNED, "place", "json"),
    Route("POST", "/open/option/order/cancel/v1", "cancel_order", SIGNED, "cancel", "json"),
    Route("POST", "/open/option/order/batchCancel/v1", "batch_cancel_orders", SIGNED, "cancel", "json"),
    Route("GET", "/open/option/order/cancelOpenOrders/v1/{index}", "cancel_open_orders", SIGNED, "cancel", "query"),
    Route("GET", "/open/option/order/batchCancelByOption/v1/{optionName}", "cancel_orders_by_option", SIGNED, "cancel", "query"),
    Route("GET", "/open/option/order/singleQuery/v1", "query_order", SIGNED, "pending", "query"),
    Route("GET", "/open/option/order/history/v1", "order_history", SIGNED, "history", "query"),
    Route("GET", "/open/option/trade/history/v1", "trade_history", SIGNED, "history", "query"),
    Route("GET", "/open/settle/exercise/history/v1", "exercise_history", SIGNED, "history", "query"),
    # --- RFQ, taker side ----------------------------------------------------------------
    Route("POST", "/open/option/blocktrade/request/create/v1", "rfq_create", SIGNED, "place", "json"),
    Route("GET", "/open/option/blocktrade/request/getQuotesReceived/v1", "rfq_quotes_received", SIGNED, None, "query"),
    Route("POST", "/open/option/blocktrade/request/accept/v1", "rfq_accept", SIGNED, "place", "form"),
    Route("POST", "/open/option/blocktrade/request/cancel/v1", "rfq_cancel", SIGNED, "cancel", "form"),
    Route("GET", "/open/option/blocktrade/rfqList/v1", "rfq_list", SIGNED, None, "query"),
    Route("GET", "/open/option/blocktrade/orderList/v1", "blocktrade_order_list", SIGNED, "history", "query"),
    Route("GET", "/open/option/blocktrade/trade-detail/private/v1", "blocktrade_trade_detail", SIGNED, "history", "query"),
    # --- perpetual futures (API.md §14.4-14.7): market data ---------------------------------
    Route("GET", "/open/futures/market/instruments/v1", "futures_instruments", PUBLIC, None, "query"),
    Route("GET", "/open/futures/market/orderbook", "futures_market_orderbook", PUBLIC, "orderbook", "query"),
    Route("GET", "/open/futures/order/orderbook/v1/{symbol}", "futures_orderbook", PUBLIC, "orderbook", "query"),
    Route("GET", "/open/futures/trade/lasttrade/v1/{symbol}", "futures_last_trades", PUBLIC, None, "query"),
    Route("GET", "/open/public/fundingRate/v1", "funding_rate", PUBLIC, "funding", "query"),
    # --- perpetual futures: orders, positions, leverage, funding records ----------------------
    Route("POST", "/open/futures/order/create/v1", "futures_create_order", SIGNED, "place", "json"),
    Route("POST", "/open/futures/order/modify/v1", "futures_modify_order", SIGNED, "place", "json"),
    Route("POST", "/open/futures/order/cancel/v1", "futures_cancel_order", SIGNED, "cancel", "json"),
    Route("POST", "/open/futures/order/batchCancel/v1", "futures_batch_cancel", SIGNED, "cancel", "json"),
    Route("GET", "/open/futures/order/cancelOpenOrders/v1/{symbol}", "futures_cancel_open_orders", SIGNED, "cancel", "query"),
    Route("GET", "/open/futures/order/singleQuery/v1", "futures_query_order", SIGNED, "pending", "query"),
    Route("GET", "/open/futures/order/pending/v1", "futures_pending_orders", SIGNED, "pending", "query"),
    Route("GET", "/open/futures/order/history/v1", "futures_order_history", SIGNED, "history", "query"),
    Route("GET", "/open/futures/trade/history/v1", "futures_trade_history", SIGNED, "history", "query"),
    Route("GET", "/open/futures/position/get/v1", "futures_positions", SIGNED, "positions", "query"),
    Route("GET", "/open/futures/leverage/current/v1", "futures_leverage", SIGNED, None, "query"),
    Route("POST", "/open/futures/leverage/set/v1", "futures_set_leverage", SIGNED, "place", "json"),
    Route("GET", "/open/settle/future/record/v1", "funding_records", SIGNED, "history", "query"),
    Route("GET", "/open/settle/future/latestRecord/v1", "funding_latest_records", SIGNED, "history", "query"),
)


def _static_routes(routes: tuple[Route, ...]) -> dict[tuple[str, str], Route]:
    """The routes without path parameters, by (method, path): found with one dict look-up.

    A static route is only listed when no route before it in the table also matches its
    path, so the look-up answers exactly what the scan in table order would.
    """
    static: dict[tuple[str, str], Route] = {}
    for index, route in enumerate(routes):
        if "{" in route.path or (route.method, route.path) in static:
            continue
        if any(earlier.match(route.method, route.path) is not None for earlier in routes[:index]):
            continue
        static[(route.method, route.path)] = route
    return static


_STATIC_ROUTES: dict[tuple[str, str], Route] = _static_routes(ROUTES)
_PARAMETERISED_ROUTES: tuple[Route, ...] = tuple(route for route in ROUTES if "{" in route.path)


def find_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route serving ``method path`` and its path parameters, or None (HTTP 404)."""
    route = _STATIC_ROUTES.get((method, path))
    if route is not None:
        return route, {}
    for route in _PARAMETERISED_ROUTES:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None
