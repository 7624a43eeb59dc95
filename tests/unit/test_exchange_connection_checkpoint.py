"""The embedded paper account is checkpointed periodically, not only at a clean stop."""
from __future__ import annotations

from exchange_connection import ExchangeConnection


class FakeSimulator:
    def __init__(self, fail: bool = False) -> None:
        self.saves = 0
        self.fail = fail

    def save_state(self) -> None:
        if self.fail:
            raise OSError("disk full")
        self.saves += 1

    def stop(self) -> None:
        pass


class FakeClient:
    def close(self) -> None:
        pass


def test_checkpoint_saves_once_per_interval():
    sim = FakeSimulator()
    conn = ExchangeConnection(client=FakeClient(), base_url="http://127.0.0.1:1", simulator=sim,
                              checkpoint_interval_seconds=60.0)
    assert conn.checkpoint(1000.0) is False  # first call only starts the interval
    assert conn.checkpoint(1059.9) is False
    assert conn.checkpoint(1060.0) is True
    assert conn.checkpoint(1100.0) is False
    assert conn.checkpoint(1120.0) is True
    assert sim.saves == 2


def test_checkpoint_without_embedded_simulator_does_nothing():
    conn = ExchangeConnection(client=FakeClient(), base_url="https://api.coincall.com")
    assert conn.checkpoint(0.0) is False
    assert conn.checkpoint(10_000.0) is False


def test_failed_checkpoint_is_logged_not_raised(caplog):
    conn = ExchangeConnection(client=FakeClient(), base_url="http://127.0.0.1:1",
                              simulator=FakeSimulator(fail=True))
    conn.checkpoint(0.0)
    assert conn.checkpoint(61.0) is False
    assert "could not save" in caplog.text
