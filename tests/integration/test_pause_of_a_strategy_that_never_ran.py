"""A `pause NAME` given while no daemon runs, for a strategy of STRATEGIES without stored state yet.

Before, the command stayed queued, "the daemon's next start pauses it before any entry"; but a
next start that did not run that strategy (`run --strategy OTHER`) failed the command for good,
and the start after traded the strategy unpaused. Now the pause is written at once as the
strategy's stored runner state, so whichever start first runs it starts it paused.
"""
from __future__ import annotations

import main as main_module
from clock import SimulatedClock
from persistence import StateStore
from strategy import RunnerState

START = 1_772_528_400.0  # 2026-03-03 09:00 UTC


def env(tmp_path):
    return {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
            "POLL_INTERVAL_SECONDS": "10"}


def make(name):
    def factory():
        from option_selection import strangle
        from strategy import StrategyConfig
        return StrategyConfig(name=name, legs=strangle(0.01, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
                              hold_to_expiry=True)
    factory.__name__ = name
    return factory


def run(tmp_path, *argv, clock=None):
    return main_module.main(list(argv), clock=clock or SimulatedClock(start=START, speed=0), env=env(tmp_path),
                            dotenv_path=None, strategies=[make("alpha"), make("beta")])


def test_a_queued_pause_survives_a_start_that_does_not_run_the_strategy(tmp_path, capsys):
    # The daemon ran before with beta only: the store knows beta, not alpha (just added to STRATEGIES).
    (tmp_path / "state").mkdir()
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_runner_state("beta", RunnerState().to_dict())

    assert run(tmp_path, "pause", "alpha") == 0
    assert "paused alpha" in capsys.readouterr().out

    # Next start: beta only (for a minute).
    clock = SimulatedClock(start=START, speed=0)
    assert run(tmp_path, "run", "--strategy", "beta", "--run-for", "30", clock=clock) == 0
    capsys.readouterr()
    with StateStore(tmp_path / "state" / "trader.db") as store:
        commands = [(c["kind"], c["status"], (c["result"] or {}).get("error")) for c in store.commands()]
        alpha = store.load_runner_state("alpha")
    assert alpha is not None and alpha["paused"] and commands == [("pause", "done", None)]
    # The start after: every strategy. alpha was paused by its operator and must not enter.
    clock = SimulatedClock(start=START + 3600, speed=0)
    assert run(tmp_path, "run", "--run-for", "60", clock=clock) == 0
    with StateStore(tmp_path / "state" / "trader.db") as store:
        alpha_trades = [t["id"] for t in store.load_trades("alpha")]
    assert not alpha_trades, (
        f"the operator paused alpha (`pause alpha`: 'stays queued and the daemon's next start pauses it before any "
        f"entry'), a start without alpha failed the command ({commands}), and the start after opened alpha "
        f"trade(s) {alpha_trades}")
