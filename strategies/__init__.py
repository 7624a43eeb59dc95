"""The strategies this daemon ships with: one factory per file, each returning a
``StrategyConfig`` (or a list of them). ``main.STRATEGIES`` lists the ones that run.

``SHIPPED_STRATEGIES`` is every shipped factory, configured to run or not: ``python main.py
backtest --strategy NAME`` and a sweep file's ``strategy = "NAME"`` may name any of them (the
configured ones win a name they share), while the daemon itself runs only ``STRATEGIES``. A
tuple, so no caller can add to it.

A factory builds a fresh, validated config every time it is called and reads nothing at
import time, so importing this package has no side effects.
"""
from typing import Any, Callable

from strategies.daily_short_strangle import daily_short_strangle
from strategies.hedged_strangle import hedged_strangle_btc, hedged_strangle_eth
from strategies.iron_condor import iron_condor
from strategies.micro_strangle import micro_strangle
from strategies.rfq_endurance import rfq_endurance
from strategies.smart_strangle import smart_strangle

SHIPPED_STRATEGIES: tuple[Callable[..., Any], ...] = (
    micro_strangle, daily_short_strangle, iron_condor, rfq_endurance, smart_strangle,
    hedged_strangle_btc, hedged_strangle_eth,
)

__all__ = ["micro_strangle", "daily_short_strangle", "iron_condor", "rfq_endurance", "smart_strangle",
           "hedged_strangle_btc", "hedged_strangle_eth", "SHIPPED_STRATEGIES"]
