"""The daemon of the kill campaign: ``python tests/faults/campaign_daemon.py [main.py run arguments]``.

It is ``python main.py run`` with the campaign strategies instead of ``STRATEGIES``, so the
process the campaign kills is the real daemon (lock, store, recovery, monitor loop, signal
handling), nothing mocked. The environment says where the simulator is
(``COINCALL_BASE_URL`` and the ``*_SIM`` key lines) and where state and logs go, exactly as
for ``main.py``; ``CAMPAIGN_ENTRIES=0`` turns entries off (the final drain run) while the
strategies keep their names and exit rules.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

ENTRIES_ENV = "CAMPAIGN_ENTRIES"


def entries_enabled(environ: dict[str, str]) -> bool:
    """Entries are on unless ``CAMPAIGN_ENTRIES`` is 0/false/no/off."""
    return environ.get(ENTRIES_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def run(argv: list[str], environ: dict[str, str]) -> int:
    import main
    from tests.faults.campaign_strategies import campaign_factories

    return main.main(argv, env=environ, dotenv_path=None, strategies=campaign_factories(entries_enabled(environ)))


if __name__ == "__main__":
    if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: the repository's modules
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(run(sys.argv[1:], dict(os.environ)))
