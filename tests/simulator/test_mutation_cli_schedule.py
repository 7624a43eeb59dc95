"""Response mutations from the command line, the seeded random schedule, and save/restore.

``python -m simulator --mutate SPEC`` and ``--mutation-rate/--mutation-kinds/--mutation-seed``
(docs/SIMULATOR.md "Response mutations"): good SPECs become exact windows, bad ones exit 2
before anything starts, and a schedule is a pure function of its seed.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from simulator import Mutation
from simulator.__main__ import build_parser, install_mutations, main as simulator_main
from simulator.mutations import (
    EVENT_KINDS,
    SCHEDULE_DURATIONS,
    SCHEDULE_TARGETS,
    MutationSpecError,
    RandomSchedule,
    parse_mutation_spec,
)
from simulator.routes import ROUTES

REPO = Path(__file__).resolve().parents[2]
HANDLERS = tuple(route.handler for route in ROUTES)
ORIGIN = 1_772_431_200.0
POSITIONS = "/open/option/position/get/v1"
SINGLE = "/open/option/order/singleQuery/v1"
TRADE_HISTORY = "/open/option/trade/history/v1"


def window(mutation: Mutation) -> tuple:
    return (mutation.kind, mutation.endpoint, mutation.start, mutation.end, mutation.fields,
            mutation.value, mutation.factor)


# --- SPEC parsing --------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("positions:empty_list:start=+300:duration=180",
     ("empty_list", "positions", ORIGIN + 300, ORIGIN + 480, None, None, None)),
    ("option_chain:drop_fields:fields=markPrice,delta",
     ("drop_fields", "option_chain", None, None, ("markPrice", "delta"), None, None)),
    ("option_*:zero_prices:start=1772431500:end=1772431600",
     ("zero_prices", "option_*", 1772431500.0, 1772431600.0, None, None, None)),
    ("futures_symbols:corrupt_prices:factor=-1:end=+60",
     ("corrupt_prices", "futures_symbols", None, ORIGIN + 60, None, None, -1.0)),
    ("positions:corrupt_prices:value=0.5:fields=markPrice",
     ("corrupt_prices", "positions", None, None, ("markPrice",), 0.5, None)),
    ("query_order:freeze:duration=90", ("freeze", "query_order", ORIGIN, ORIGIN + 90, None, None, None)),
    ("forget_orders:start=+600", ("forget_orders", "*", ORIGIN + 600, None, None, None, None)),
    ("*:forget_all", ("forget_all", "*", ORIGIN, None, None, None, None)),
])
def test_good_specs_become_exact_windows(text, expected):
    assert window(parse_mutation_spec(text, HANDLERS).to_mutation(ORIGIN)) == expected


BAD_SPECS = [
    "",
    "position:empty_list",                          # no such handler
    "positions:empty",                              # no such kind
    "positions",                                    # no kind at all
    "positions:drop_fields",                        # drop_fields needs fields
    "positions:drop_fields:fields=",
    "positions:empty_list:start=abc",
    "positions:empty_list:start=300",               # neither +N nor an epoch
    "positions:empty_list:start",                   # not KEY=VALUE
    "positions:empty_list:colour=red",
    "positions:empty_list:start=+1:start=+2",
    "positions:empty_list:duration=0",
    "positions:empty_list:duration=-5",
    "positions:empty_list:end=+10:duration=5",
    "positions:empty_list:start=+50:end=+10",
    "positions:empty_list:start=+10:end=1772431600",  # mixes relative and absolute
    "positions:zero_prices:value=3",
    "positions:corrupt_prices:value=1:factor=2",
    "positions:corrupt_prices:factor=inf",
    "positions:empty_list:fields=markPrice",
    "positions:forget_orders",                      # a restart is not per endpoint
    "forget_orders:duration=5",
    "forget_all:end=+60",
]


@pytest.mark.parametrize("text", BAD_SPECS)
def test_bad_specs_are_refused_with_the_spec_quoted(text):
    with pytest.raises(MutationSpecError) as error:
        parse_mutation_spec(text, HANDLERS)
    assert "spec" in str(error.value) or "kind" in str(error.value)


@pytest.mark.parametrize("argv", [
    ["--mutate", "position:empty_list"],
    ["--mutate", "positions:empty_list:duration=0"],
    ["--mutate", "positions:empty_list", "--mutate", "positions:drop_fields"],
    ["--mutation-rate", "-1"],
    ["--mutation-rate", "nan"],
    ["--mutation-rate", "5", "--mutation-kinds", "empty_list,nonsense"],
    ["--mutation-kinds", ""],
])
def test_the_command_line_exits_2_on_a_bad_mutation_option(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        simulator_main(argv)
    assert exit_info.value.code == 2
    assert "mutation" in capsys.readouterr().err


def test_install_mutations_counts_relative_times_from_the_simulator_start(sim_factory):
    handle = sim_factory()
    args = build_parser().parse_args([
        "--mutate", "positions:empty_list:start=+300:duration=180",
        "--mutate", "option_chain:drop_fields:fields=markPrice,delta",
        "--mutate", "forget_orders:start=+900",
    ])
    install_mutations(handle, args)
    now = handle.clock.now()
    assert [window(m) for m in handle.mutations.mutations] == [
        ("empty_list", "positions", now + 300, now + 480, None, None, None),
        ("drop_fields", "option_chain", None, None, ("markPrice", "delta"), None, None),
        ("forget_orders", "*", now + 900, None, None, None, None),
    ]


def test_install_mutations_starts_the_seeded_schedule(sim_factory):
    def drawn(seed_args: list[str]) -> list[tuple]:
        handle = sim_factory()
        args = build_parser().parse_args(["--mutation-rate", "20", "--mutation-kinds", "empty_list,freeze",
                                          *seed_args])
        install_mutations(handle, args)
        return [window(m) for m in handle.mutations.mutations]

    first = drawn(["--mutation-seed", "5"])
    assert first and {w[0] for w in first} <= {"empty_list", "freeze"}
    assert first == drawn(["--mutation-seed", "5"])
    assert first != drawn(["--mutation-seed", "6"])
    assert drawn([]) == drawn(["--mutation-seed", "7"])      # default: --seed (7)


def read_announcement(proc: subprocess.Popen, deadline_s: float = 30.0) -> dict[str, str]:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    try:
        while buffer.count(b"\n") < 3:
            if not selector.select(timeout=deadline_s):
                raise AssertionError("the simulator did not announce itself in time")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"the simulator exited early: {proc.stderr.read().decode()[-2000:]}")
            buffer += chunk
    finally:
        selector.close()
    return dict(line.split("=", 1) for line in buffer.decode().splitlines()[:3])


def test_the_simulator_process_serves_mutated_answers():
    command = [sys.executable, "-m", "simulator", "--port", "0", "--seed", "7", "--speed", "0",
               "--start", "2026-03-02T06:00:00Z", "--log-level", "WARNING",
               "--mutate", "option_chain:zero_prices:fields=markPrice",
               "--mutate", "futures_symbols:empty_list:start=+60"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = read_announcement(proc)["COINCALL_BASE_URL"]
        chain = requests.get(base + "/open/option/get/v1/BTCUSD", timeout=5).json()
        sides = [s for row in chain["data"] for s in (row["callOption"], row["putOption"]) if s]
        assert chain["code"] == 0 and sides
        assert all(s["markPrice"] == 0.0 for s in sides) and any(s["ask"] > 0 for s in sides)
        futures = requests.get(base + "/open/futures/market/symbol/v1", timeout=5).json()
        assert [f["symbol"] for f in futures["data"]] == ["BTCUSD", "ETHUSD"]   # its window opens 60 s later
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
    assert "response mutation: zero_prices on option_chain" in stderr


# --- the random schedule -------------------------------------------------------------------
ALL_KINDS = ("empty_list", "drop_fields", "zero_prices", "corrupt_prices", "freeze", "forget_orders", "forget_all")


def test_the_schedule_is_a_pure_function_of_its_seed():
    first = [window(m) for m in RandomSchedule(6.0, ALL_KINDS, seed=3, origin=ORIGIN).windows(100)]
    assert first == [window(m) for m in RandomSchedule(6.0, ALL_KINDS, seed=3, origin=ORIGIN).windows(100)]
    assert first != [window(m) for m in RandomSchedule(6.0, ALL_KINDS, seed=4, origin=ORIGIN).windows(100)]


def test_the_schedule_draws_documented_windows_at_the_rate_asked():
    windows = RandomSchedule(6.0, ALL_KINDS, seed=3, origin=ORIGIN).windows(300)
    starts = [m.start for m in windows]
    assert starts == sorted(starts) and starts[0] > ORIGIN
    hours = (starts[-1] - ORIGIN) / 3600
    assert 35 < hours < 65                                   # 300 windows at 6 an hour: about 50 h
    assert {m.kind for m in windows} == set(ALL_KINDS)
    for m in windows:
        assert (m.endpoint, m.fields) in SCHEDULE_TARGETS[m.kind]
        if m.kind in EVENT_KINDS:
            assert m.end is None
        else:
            low, high = SCHEDULE_DURATIONS[m.kind]
            assert low <= m.end - m.start <= high


@pytest.mark.parametrize("rate, kinds", [(0.0, ("empty_list",)), (-1.0, ("empty_list",)),
                                         (5.0, ()), (5.0, ("nonsense",))])
def test_a_bad_schedule_is_refused(rate, kinds):
    with pytest.raises(ValueError):
        RandomSchedule(rate, kinds, seed=1, origin=ORIGIN)


def test_two_simulators_with_one_seed_mutate_the_same_requests(sim_factory, signed_request_for):
    def labels() -> list[str | None]:
        handle = sim_factory(rate_limits_enabled=False)
        call = signed_request_for(handle)
        handle.mutations.set_schedule(30.0, ("empty_list", "zero_prices"), seed=5)
        for _ in range(120):
            handle.clock.advance(60)
            assert call("GET", POSITIONS)["code"] == 0
        return [r.mutation for r in handle.requests_for("positions")]

    first = labels()
    assert first == labels()
    assert "empty_list" in first and None in first


def test_a_scheduled_forget_orders_restarts_the_exchange(sim_factory, signed_request_for, resting_bid_for):
    handle = sim_factory(rate_limits_enabled=False)
    call = signed_request_for(handle)
    created = call("POST", "/open/option/order/create/v1", resting_bid_for(handle, 901))
    handle.mutations.set_schedule(12.0, ("forget_orders",), seed=2)
    handle.clock.advance(3600)
    assert call("GET", SINGLE, {"orderId": created["data"]})["code"] == 10584
    assert handle.mutations.counts["forget_orders"] >= 1


# --- save / restore ------------------------------------------------------------------------
def test_mutations_are_not_saved_but_what_a_restart_forgot_stays_forgotten(
        sim_factory, signed_request_for, resting_bid_for, tmp_path, sim_clock):
    state_file = str(tmp_path / "sim.json")
    handle = sim_factory(rate_limits_enabled=False)
    call = signed_request_for(handle)
    order_id = int(call("POST", "/open/option/order/create/v1", resting_bid_for(handle, 951))["data"])
    handle.exchange.force_fill(order_id, 0.1)
    handle.mutations.add(Mutation("forget_orders"))
    handle.mutations.add(Mutation("empty_list", endpoint="positions"))
    assert call("GET", SINGLE, {"orderId": order_id})["code"] == 10584
    handle.save_state(state_file)

    restored = sim_factory(rate_limits_enabled=False, state_file=state_file)
    again = signed_request_for(restored)
    assert restored.mutations.mutations == []
    assert len(again("GET", POSITIONS)["data"]) == 1
    assert again("GET", SINGLE, {"orderId": order_id})["code"] == 10584
    fills = again("GET", TRADE_HISTORY)["data"]["list"]
    assert [f["orderId"] for f in fills] == [order_id] and "clientOrderId" not in fills[0]   # API.md 8.6
    assert [o["clientOrderId"] for o in restored.exchange.forgotten_orders()] == [951]
