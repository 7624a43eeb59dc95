"""Run a kill campaign outside pytest and print its report.

    python tests/faults/run_kill_campaign.py --kills 200 --seed 7 [--workdir DIR] [--json] [--quiet]

Same harness as ``test_kill_campaign.py``, scaled up: the simulator in its own process, the
daemon killed with SIGKILL at seeded moments across every lifecycle state and restarted,
then drained with entries off and judged from the exchange's records. Exit code 0 when no
invariant is violated, 1 otherwise. The work directory (a new temporary one by default)
keeps the logs, the store and the simulator's state file for inspection.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SIGKILL campaign against the daemon and a simulator process")
    parser.add_argument("--kills", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (<= 60)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--no-rate-limits", action="store_true", help="run the simulator without rate limits")
    parser.add_argument("--fault-rate", type=float, default=0.0,
                        help="also fail this share (0-1) of requests: 5xx, 429, 10000, drops, lost responses")
    parser.add_argument("--mutation-rate", type=float, default=0.0,
                        help="also open this many code-0-but-wrong answer windows per simulated hour (empty "
                             "lists, dropped fields, zero or corrupt prices, frozen answers)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary after the report")
    parser.add_argument("--quiet", action="store_true", help="no line per kill")
    args = parser.parse_args(argv)
    if args.kills < 1 or not 0 < args.speed <= 60:
        parser.error("--kills must be >= 1 and --speed within (0, 60]")
    return args


def main(argv: list[str] | None = None) -> int:
    from tests.faults.kill_harness import CampaignConfig, report_as_json, run_campaign

    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    if workdir.exists() and any(workdir.iterdir()):
        print(f"{workdir} is not empty: give a new directory", file=sys.stderr)
        return 2
    config = CampaignConfig(workdir=workdir, kills=args.kills, seed=args.seed, speed=args.speed,
                            rate_limits=not args.no_rate_limits, http_fault_rate=args.fault_rate,
                            mutation_rate=args.mutation_rate)
    print(f"work directory: {workdir}", flush=True)
    report = run_campaign(config, progress=None if args.quiet else (lambda line: print(line, flush=True)))
    print(report.format())
    if args.json:
        print(json.dumps(report_as_json(report), indent=2, default=str))
    return 0 if not report.violations else 1


if __name__ == "__main__":
    if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: the repository's modules
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
