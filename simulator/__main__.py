"""``python -m simulator``: run the Coincall simulator as its own process.

Running it apart from the daemon is what makes restart tests honest: the daemon can be
killed and restarted while the exchange (orders, fills, positions) carries on. As soon
as the server listens, three ``KEY=value`` lines go to stdout so a script or a human
can paste them into ``.env``; printing the secret there is intended, logging it never.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Sequence

from simulator.config import RFQ_BODY_MODES, ServerConfig, SimulatorConfig
from simulator.faults import DEFAULT_GLOBAL_MODES, FAULT_MODES
from simulator.mutations import (
    DEFAULT_SCHEDULE_KINDS,
    MUTATION_KINDS,
    SPEC_SYNTAX,
    MutationSpec,
    MutationSpecError,
    parse_mutation_kinds,
    parse_mutation_spec,
)
from simulator.routes import ROUTES
from simulator.server import SimulatorHandle, start_simulator

logger = logging.getLogger("simulator")

AUTOSAVE_REAL_SECONDS = 60.0


def parse_start(text: str) -> float:
    """Epoch seconds from ``1772431200`` / ``1772431200000`` (ms) or an ISO 8601 instant."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value / 1000.0 if value > 1e11 else value
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant or epoch: {text!r}") from exc
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return instant.timestamp()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Coincall-compatible exchange simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--start", type=parse_start, default=None, help="ISO 8601 instant or epoch (s or ms)")
    parser.add_argument("--state", default=None, help="state file: restored at start, saved at stop")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--api-secret", default=None)
    parser.add_argument("--rfq-body", choices=RFQ_BODY_MODES, default="both")
    parser.add_argument("--no-rate-limits", action="store_true",
                        help="serve without the API.md 3.4 rate limits (load tests, benchmarks)")
    parser.add_argument("--fault-rate", type=float, default=0.0, metavar="P",
                        help="make this share (0-1) of requests fail, seeded by --seed (fault campaigns)")
    parser.add_argument("--fault-modes", type=_fault_modes, default=DEFAULT_GLOBAL_MODES, metavar="M,M",
                        help=f"modes for --fault-rate, comma separated, among {', '.join(sorted(FAULT_MODES))} "
                             f"(default {','.join(DEFAULT_GLOBAL_MODES)})")
    parser.add_argument("--mutate", type=_mutation_spec, action="append", default=[], metavar="SPEC",
                        help=f"answer code 0 but wrongly (repeatable): {SPEC_SYNTAX}; "
                             f"e.g. positions:empty_list:start=+300:duration=180 (docs/SIMULATOR.md)")
    parser.add_argument("--mutation-rate", type=float, default=0.0, metavar="R",
                        help="open R random mutation windows per simulated hour (seeded; campaigns)")
    parser.add_argument("--mutation-kinds", type=_mutation_kinds, default=DEFAULT_SCHEDULE_KINDS, metavar="K,K",
                        help=f"kinds for --mutation-rate among {', '.join(sorted(MUTATION_KINDS))} "
                             f"(default {','.join(DEFAULT_SCHEDULE_KINDS)})")
    parser.add_argument("--mutation-seed", type=int, default=None, metavar="N",
                        help="seed of the random mutation schedule (default: --seed)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def _mutation_spec(text: str) -> MutationSpec:
    try:
        return parse_mutation_spec(text, (route.handler for route in ROUTES))
    except MutationSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mutation_kinds(text: str) -> tuple[str, ...]:
    try:
        return parse_mutation_kinds(text)
    except MutationSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault_modes(text: str) -> tuple[str, ...]:
    modes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(modes) - FAULT_MODES)
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"unknown fault modes {unknown or text!r}; use {sorted(FAULT_MODES)}")
    return modes


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        seed=args.seed,
        start_time=args.start,
        speed=args.speed,
        server=ServerConfig(host=args.host, port=args.port, rfq_body_mode=args.rfq_body,
                            rate_limits_enabled=not args.no_rate_limits),
        api_key=args.api_key,
        api_secret=args.api_secret,
    )


def install_mutations(handle: SimulatorHandle, args: argparse.Namespace) -> None:
    """The ``--mutate`` windows (``+N`` counted from now, the simulator's start) and the schedule."""
    origin = handle.clock.now()
    for spec in args.mutate:
        mutation = handle.mutations.add(spec.to_mutation(origin))
        logger.warning("response mutation: %s", mutation.describe())
    if args.mutation_rate > 0:
        seed = args.seed if args.mutation_seed is None else args.mutation_seed
        handle.mutations.set_schedule(args.mutation_rate, args.mutation_kinds, seed=seed, origin=origin)
        logger.warning("random response mutations: %g windows per simulated hour (%s), seed %d",
                       args.mutation_rate, ", ".join(args.mutation_kinds), seed)


def announce(handle: SimulatorHandle) -> None:
    """The three lines a caller reads to find and authenticate against the simulator."""
    sys.stdout.write(f"COINCALL_BASE_URL={handle.base_url}\n")
    sys.stdout.write(f"COINCALL_API_KEY_SIM={handle.api_key}\n")
    sys.stdout.write(f"COINCALL_API_SECRET_SIM={handle.api_secret}\n")
    sys.stdout.flush()


def serve_until_signalled(handle: SimulatorHandle, stop: threading.Event) -> None:
    """Block until SIGINT/SIGTERM; autosave every minute of real time when a state file is set."""
    while not stop.wait(AUTOSAVE_REAL_SECONDS if handle.state_file else None):
        try:
            handle.save_state()
        except OSError:
            logger.exception("autosave of the simulator state failed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.api_key is None) != (args.api_secret is None):
        parser.error("--api-key and --api-secret go together")
    if not 0.0 <= args.fault_rate <= 1.0:
        parser.error("--fault-rate is a share of requests: 0 to 1")
    if not 0.0 <= args.mutation_rate < float("inf"):
        parser.error("--mutation-rate is a number of windows per simulated hour: 0 or more")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("signal %s received, stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    handle = start_simulator(config_from_args(args), state_file=args.state)
    if args.fault_rate > 0:
        handle.faults.set_global(rate=args.fault_rate, modes=args.fault_modes)
        logger.warning("fault injection: %.1f %% of requests fail (%s)", args.fault_rate * 100,
                       ", ".join(args.fault_modes))
    install_mutations(handle, args)
    try:
        announce(handle)
        serve_until_signalled(handle, stop)
    finally:
        handle.stop()
    logger.info("simulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
